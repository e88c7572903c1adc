"""Active probes: a one-token request now and then, off any turn's path.

A target no turn goes to is never measured, so a policy cannot learn that it is
(or has become) the better one: a new local engine, a provider that recovered. A
probe is a streamed chat completion of `max_tokens` (1) tokens to the target, timed
to its first token through the same `Attempt` a turn uses, so its TTFT, a failure
(breaker) or a timeout (a censored sample) feed the target's signals like any other
answer. One is sent when the router starts, then every `interval_s`, skipped while
real turns have measured the target within the interval. Probes are on by default
for local engines (`kind: vllm`: they cost nothing to ask) and off for the rest,
priced APIs (`probe:` on a target or a route; `probe_for`). A target that serves no
chat completions (an embedding model: `capabilities: [embeddings]`) is never probed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import anyio

from router.clock import Clock
from router.config import Config, Probe, TargetConfig
from router.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout
from router.signals.target import TargetSignals
from router.turn import sse
from router.upstream.base import Upstream, UpstreamRequest, UpstreamResponse

log = logging.getLogger(__name__)

PROMPT = "ping"
#: the longest SSE event a probe reads (a one-token answer is far below it)
MAX_EVENT_BYTES = 64 * 1024


def probe_for(config: Config, target: TargetConfig) -> Probe | None:
    """The target's own `probe:`, else the first of its routes' that sets one, else
    the default: on for local engines (`kind: vllm`), off for the rest. None for a
    target that serves no chat completions: the probe is one."""
    if "chat" not in target.serves:
        return None
    setting = target.probe
    if setting is None:
        setting = next(
            (r.probe for r in config.routes if target.name in r.targets and r.probe is not None),
            None,
        )
    if setting is None:
        setting = target.kind == "vllm"
    if isinstance(setting, bool):
        return Probe() if setting else None
    return setting


def probe_body(config: TargetConfig, probe: Probe) -> dict[str, object]:
    return {
        "model": config.model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": probe.max_tokens,
        "stream": True,
    }


async def _first_token(response: UpstreamResponse, name: str) -> None:
    """Read until the first content (or a finished empty answer); raise on anything else."""
    framer = sse.Framer(MAX_EVENT_BYTES)
    async for chunk in response.aiter_bytes():
        try:
            events = sse.split_events(framer.feed(chunk))
        except sse.EventTooLarge as too_large:  # one name per exception type: mypyc
            raise UpstreamProtocolError(f"{name}: probe: {too_large}", target=name) from too_large
        for event in events:
            try:
                frame, _, _ = sse.classify(event)
            except sse.MalformedFrame as malformed:
                raise UpstreamProtocolError(
                    f"{name}: probe: {malformed}", target=name
                ) from malformed
            if frame in (sse.Frame.TOKEN, sse.Frame.FINISH):
                return
            if frame in (sse.Frame.ERROR, sse.Frame.DONE):
                raise UpstreamProtocolError(f"{name}: probe answered no token", target=name)
    raise UpstreamProtocolError(f"{name}: probe stream closed before a token", target=name)


async def probe_once(
    upstream: Upstream, signals: TargetSignals, config: TargetConfig, probe: Probe
) -> float | None:
    """Send one probe; its TTFT in seconds, or None (failed, or the breaker said no)."""
    attempt = signals.begin(prompt_tokens=1, representative=False)
    response: UpstreamResponse | None = None
    try:
        if not attempt.admitted:
            return None
        request = UpstreamRequest("chat", probe_body(config, probe), True, {})
        with anyio.fail_after(config.timeouts.first_token_s):
            response = await upstream.send(request)
            attempt.headers(response.headers)
            await _first_token(response, config.name)
        attempt.first_token()
        attempt.finished()
        return attempt.ttft_s
    except TimeoutError:
        limit = config.timeouts.first_token_s
        attempt.failed(UpstreamTimeout(f"{config.name}: probe: no token in {limit:g}s"))
    except UpstreamError as err:
        attempt.failed(err)
    finally:
        attempt.release()
        if response is not None:
            with anyio.CancelScope(shield=True):
                await response.aclose()
    return None


async def run(
    upstream: Upstream,
    signals: TargetSignals,
    config: TargetConfig,
    probe: Probe,
    *,
    clock: Clock,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> NoReturn:
    """Probe at once, then every `interval_s` unless turns measured the target since."""
    while True:
        last = signals.measured_at
        if last is None or clock() - last >= probe.interval_s:
            try:
                await probe_once(upstream, signals, config, probe)
            except Exception:
                # An upstream's surprise must not end the prober; it is a bug to see.
                log.warning("probe of %s failed unexpectedly", config.name, exc_info=True)
        await sleep(probe.interval_s)
