"""The floor of a Realtime relay on the router's stack: what any relay pays per frame.

    .venv/bin/python benchmarks/realtime_floor.py --upstream ws://127.0.0.1:PORT/v1/realtime \\
        --port 8090

`benchmarks/realtime.py --peers floor` starts it as a party of its own. It is the
router's stack with nothing of the router: uvicorn (`websockets-sansio`, uvloop,
per-message deflate off, 16 MiB frames) as the server and an aiohttp client upstream
(no deflate, no heartbeat), raw ASGI, two pumps per session passing text frames
unchanged both ways with the event type looked for in the first 60 characters (as the
router's sniff does), and nothing else: no auth, routing, signals, limits, usage,
conversation or migration. The router's CPU per frame less this one's, in the same run,
is the router's own work; this one's alone is what the stack costs on the machine
(at one session mostly a loop wake-up per frame).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aiohttp
import uvicorn


class FloorRelay:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.http: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                self.http = aiohttp.ClientSession()
                await send({"type": "lifespan.startup.complete"})
            if self.http is not None:
                await self.http.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "http":  # a health check
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await receive()  # websocket.connect
        assert self.http is not None
        query = scope.get("query_string", b"").decode()
        up = await self.http.ws_connect(
            f"{self.upstream}?{query}", compress=0, autoping=False, max_msg_size=16 << 20
        )
        await send({"type": "websocket.accept"})

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive" or message.get("text") is None:
                    return
                text = message["text"]
                text.find('"type"', 0, 60)
                await up.send_str(text)

        async def upstream_to_client() -> None:
            async for msg in up:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                msg.data.find('"type"', 0, 60)
                await send({"type": "websocket.send", "text": msg.data})

        pumps = [
            asyncio.ensure_future(client_to_upstream()),
            asyncio.ensure_future(upstream_to_client()),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await up.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="ws://HOST:PORT/v1/realtime")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    uvicorn.run(
        FloorRelay(a.upstream),
        host="127.0.0.1",
        port=a.port,
        loop="uvloop",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=16 << 20,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
