"""The load generator of benchmarks/realtime.py: Realtime sessions in real time.

    python benchmarks/realtime_load.py --url ws://127.0.0.1:P/v1/realtime?model=M \
        --sessions 64 --warmup 3 --duration 10 [--api-key K] [--migrate-url URL]

Each session appends 20 ms of 24 kHz PCM16 every 20 ms (absolute deadlines, so
it does not drift), asks for a response every `--response-every` seconds (phases
spread over the sessions) and reads everything the server sends. Time to first
audio (TTFA) is from sending `response.create` to the first
`response.output_audio.delta`. Frames are counted both ways in the measured
window. aiohttp's client, per-message deflate off, uvloop; prints one JSON line.

With `--migrate-url`, after the warm-up it runs `--rounds` rounds: POST the URL
(the upstream process then closes every session with 1011), send `response.create`
on every session at once, and time the first audio delta after the POST:
"migration time, next response answered".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvloop

APPEND_MS = 20
_TYPE = re.compile(r'\s*\{\s*"type"\s*:\s*"([^"]+)"')
CREATE = '{"type":"response.create"}'


@dataclass
class Counts:
    sent: int = 0
    received: int = 0
    ttfa_s: list[float] = field(default_factory=list)
    errors: int = 0
    failed_responses: int = 0
    closed_early: int = 0


class Window:
    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end

    def inside(self, t: float) -> bool:
        return self.start <= t < self.end


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, counts: Counts, window: Window) -> None:
        self.ws = ws
        self.counts = counts
        self.window = window
        self.asked_at: float | None = None
        self.first_audio = asyncio.Event()
        self.first_audio_at = 0.0
        #: the last events received (time, type): what a stuck migration round prints
        self.recent: deque[tuple[float, str]] = deque(maxlen=12)
        self.closed_at: float | None = None

    async def read(self) -> None:
        counts, window = self.counts, self.window
        async for msg in self.ws:
            now = time.perf_counter()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            if window.inside(now):
                counts.received += 1
            m = _TYPE.match(msg.data)
            kind = m.group(1) if m else ""
            self.recent.append((now, kind))
            if kind == "response.output_audio.delta":
                if self.asked_at is not None:
                    if window.inside(self.asked_at):
                        counts.ttfa_s.append(now - self.asked_at)
                    self.asked_at = None
                    self.first_audio_at = now
                    self.first_audio.set()
            elif kind == "error":
                counts.errors += 1
            elif kind == "response.done" and '"status":"failed"' in msg.data:
                counts.failed_responses += 1
        self.closed_at = time.perf_counter()
        if self.closed_at < self.window.end:
            counts.closed_early += 1

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)
        if self.window.inside(time.perf_counter()):
            self.counts.sent += 1

    async def append_forever(self, frame: str, phase_s: float = 0.0) -> None:
        await asyncio.sleep(phase_s)
        due = time.perf_counter()
        while True:
            await self.send(frame)
            due += APPEND_MS / 1000
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

    async def ask(self) -> None:
        self.asked_at = time.perf_counter()
        self.first_audio.clear()
        await self.send(CREATE)

    async def ask_forever(self, phase_s: float, every_s: float) -> None:
        await asyncio.sleep(phase_s)
        due = time.perf_counter()
        while True:
            await self.ask()
            due += every_s
            await asyncio.sleep(max(due - time.perf_counter(), 0.0))


def stuck_round(clients: list[Client], dropped_at: float) -> str:
    """What each session that got no audio after a drop saw last (ms after the drop)."""
    lines = []
    for i, c in enumerate(clients):
        if c.first_audio.is_set():
            continue
        seen = ", ".join(f"{(t - dropped_at) * 1000:.0f} {kind}" for t, kind in c.recent)
        closed = (
            "open" if c.closed_at is None else f"closed at {(c.closed_at - dropped_at) * 1000:.0f}"
        )
        lines.append(f"session {i} ({closed}): {seen}")
    return f"{len(lines)} of {len(clients)} sessions got no audio after the drop:\n" + "\n".join(
        lines
    )


async def open_client(
    http: aiohttp.ClientSession, args: argparse.Namespace, counts: Counts, window: Window
) -> Client:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    ws = await http.ws_connect(args.url, headers=headers, compress=0, max_msg_size=16 * 2**20)
    first = await ws.receive()
    if first.type is not aiohttp.WSMsgType.TEXT or '"session.created"' not in first.data:
        raise RuntimeError(f"no session.created: {first.type} {str(first.data)[:200]}")
    return Client(ws, counts, window)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    counts = Counts()
    frame = json.dumps(
        {
            "type": "input_audio_buffer.append",
            "audio": base64.b64encode(bytes(APPEND_MS * 48)).decode(),
        },
        separators=(",", ":"),
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        far = time.perf_counter() + 1e9
        window = Window(far, far)
        clients = await asyncio.gather(
            *(open_client(http, args, counts, window) for _ in range(args.sessions))
        )
        tasks = [asyncio.ensure_future(c.read()) for c in clients]
        # Real callers' microphones are not in step: each session's 20 ms clock starts at its
        # own phase (spread evenly) unless --lockstep-appends asks for every session at once.
        step = 0.0 if args.lockstep_appends else APPEND_MS / 1000 / len(clients)
        tasks += [
            asyncio.ensure_future(c.append_forever(frame, i * step)) for i, c in enumerate(clients)
        ]
        migrations: list[float] = []
        if args.migrate_url:
            await asyncio.sleep(args.warmup)
            for _ in range(args.rounds):
                async with http.post(args.migrate_url) as r:
                    dropped_at = time.perf_counter()
                    r.raise_for_status()
                for c in clients:
                    await c.ask()
                try:
                    await asyncio.wait_for(
                        asyncio.gather(*(c.first_audio.wait() for c in clients)),
                        args.round_timeout,
                    )
                except TimeoutError:
                    raise RuntimeError(stuck_round(clients, dropped_at)) from None
                migrations += [c.first_audio_at - dropped_at for c in clients]
                await asyncio.sleep(args.response_every)
        else:
            n = len(clients)
            tasks += [
                asyncio.ensure_future(
                    c.ask_forever(i * args.response_every / n, args.response_every)
                )
                for i, c in enumerate(clients)
            ]
            await asyncio.sleep(args.warmup)
            window.start = time.perf_counter()
            window.end = window.start + args.duration
            print(json.dumps({"window_start": time.time()}), flush=True)
            await asyncio.sleep(args.duration)
            print(json.dumps({"window_end": time.time()}), flush=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
    return {
        "sessions": args.sessions,
        "frames_sent": counts.sent,
        "frames_received": counts.received,
        "ttfa_s": counts.ttfa_s,
        "migration_s": migrations,
        "errors": counts.errors,
        "failed_responses": counts.failed_responses,
        "closed_early": counts.closed_early,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--api-key", default="")
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--response-every", type=float, default=2.0)
    p.add_argument("--migrate-url", default="")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--round-timeout", type=float, default=10.0)
    p.add_argument("--lockstep-appends", action="store_true")
    return p


if __name__ == "__main__":
    result = uvloop.run(main(build_parser().parse_args()))
    print(json.dumps({"result": result}), flush=True)
    sys.exit(0)
