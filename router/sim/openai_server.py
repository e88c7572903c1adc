"""The plain OpenAI-compatible simulator: fixed timing, no queueing.

The first token is ready `ttft_s` after the request arrived and every further
one `itl_s` later, measured from absolute deadlines so the stream does not
drift. Each request gets `min(max_tokens, behaviour.tokens)` tokens. The
`x-sim-ttft-ms` and `x-sim-itl-ms` request headers override the timing for one
request. This is the cheap upstream of the router's overhead benchmark.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from router.clock import Clock
from router.sim.backend import Generation, NoLifecycle
from router.sim.behaviour import ITL_HEADER, TTFT_HEADER, Behaviour
from router.sim.server import SimServer
from router.sim.wire import SimRequest


def output_tokens(request: SimRequest, behaviour: Behaviour) -> int:
    if request.max_tokens is None:
        return behaviour.tokens
    return min(request.max_tokens, behaviour.tokens)


def _ms_header(headers: Mapping[str, str], name: str, default: float) -> float:
    value = headers.get(name)
    if value is None:
        return default
    try:
        return max(0.0, float(value) / 1000.0)
    except ValueError:
        return default


class FixedGeneration:
    __slots__ = ("_deadline", "_itl", "_loop", "headers", "n_tokens")

    def __init__(
        self, n_tokens: int, ttft_s: float, itl_s: float, headers: Mapping[str, str] | None = None
    ) -> None:
        self.n_tokens = n_tokens
        self.headers: Mapping[str, str] = headers or {}
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + ttft_s
        self._itl = itl_s

    async def next_token(self) -> None:
        await self.next_tokens(1)

    async def next_tokens(self, k: int) -> int:
        """Wait for the next `k` tokens (one sleep, to the last one's deadline)."""
        delay = self._deadline + (k - 1) * self._itl - self._loop.time()
        self._deadline += k * self._itl
        if delay > 0:
            await asyncio.sleep(delay)
        return k

    def close(self) -> None:
        pass


class FixedBackend(NoLifecycle):
    def begin(
        self, request: SimRequest, behaviour: Behaviour, headers: Mapping[str, str]
    ) -> Generation:
        return FixedGeneration(
            output_tokens(request, behaviour),
            _ms_header(headers, TTFT_HEADER, behaviour.ttft_s),
            _ms_header(headers, ITL_HEADER, behaviour.itl_s),
        )


class OpenAISim(SimServer):
    """A fixed-timing OpenAI-compatible server.

    async with OpenAISim(Behaviour(ttft_s=0.05, itl_s=0.01, tokens=20)) as sim:
        client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="x")
    """

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        model: str = "sim-model",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = time.monotonic,
        max_records: int = 10_000,
    ) -> None:
        super().__init__(
            FixedBackend(),
            behaviour=behaviour,
            model=model,
            host=host,
            port=port,
            clock=clock,
            max_records=max_records,
        )
