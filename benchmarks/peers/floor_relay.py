"""The floor: a minimal streaming relay, for benchmarks only (never the product).

uvicorn (uvloop, httptools) + raw ASGI + aiohttp's client, the bare relay measured
on this kind of machine before the first wave (0.9-1.2 CPU-ms per stream at 64): a POST
to /v1/chat/completions, /v1/completions, /v1/responses or /v1/embeddings is sent to
the same path of the upstreams in turn, the answer's status and headers go back, then
its bytes as they arrive; a task waiting for `http.disconnect` cancels the relay (and
closes the upstream) when the client leaves. No routing, metrics, SSE framing or
commit point (`--hold-head` holds a stream's head until its first token, as a commit
point does): what any Python relay pays. `benchmarks/turncost.py --floor` counts its
instructions per turn beside the router's; `benchmarks/overhead.py --peers floor`
measures its added latency beside the router's.

    .venv/bin/python benchmarks/peers/floor_relay.py --port 8100 --upstreams 8101,8102
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn

Scope = MutableMapping[str, Any]
#: a first token (`--hold-head`): a non-empty chat or completions delta, or a
#: Responses text delta
_TOKEN = re.compile(rb'"(?:content|text)": ?"[^"]|response\.output_text\.delta')
#: the paths relayed, each to the same path upstream
PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings"})
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Floor:
    def __init__(self, upstreams: list[str], hold_head: bool = False) -> None:
        self._bases = itertools.cycle(upstreams)
        self._hold_head = hold_head
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    connector = aiohttp.TCPConnector(limit=0)
                    self._session = aiohttp.ClientSession(
                        connector=connector, auto_decompress=False
                    )
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if self._session is not None:
                        await self._session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] not in PATHS:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})  # /healthz, /metrics
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        relay = asyncio.ensure_future(self._relay(scope["path"], body, send))
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(lambda _: relay.cancel())
        try:
            await relay
        except asyncio.CancelledError:
            pass
        finally:
            watcher.cancel()

    async def _relay(self, path: str, body: bytes, send: Send) -> None:
        assert self._session is not None
        headers = {"content-type": "application/json"}
        url = next(self._bases) + path
        async with self._session.post(url, data=body, headers=headers) as resp:
            ctype = resp.headers["content-type"]
            start = {
                "type": "http.response.start",
                "status": resp.status,
                "headers": [(b"content-type", ctype.encode())],
            }
            stream = ctype.startswith("text/event-stream")
            held: list[bytes] | None = [] if self._hold_head and stream else None
            if held is None:
                await send(start)
            async for chunk in resp.content.iter_any():
                data = chunk
                if held is not None:  # a commit point: nothing before the first token
                    held.append(chunk)
                    if not _TOKEN.search(chunk):
                        continue
                    data, held = b"".join(held), None
                    await send(start)
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstreams", required=True, help="comma-separated upstream ports")
    p.add_argument(
        "--hold-head",
        action="store_true",
        help="send the response head with the first body bytes (as a commit point does)",
    )
    a = p.parse_args()
    bases = [f"http://127.0.0.1:{port}" for port in a.upstreams.split(",")]
    uvicorn.run(
        Floor(bases, a.hold_head),
        host="127.0.0.1",
        port=a.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
