"""Realtime soak: N minutes of voice sessions through a real `firsttoken serve` process.

    .venv/bin/python benchmarks/realtime_soak.py --minutes 30            # the full soak
    .venv/bin/python benchmarks/realtime_soak.py --minutes 10 --rate 2   # as recorded
    .venv/bin/pytest -m soak tests/e2e/test_realtime_soak.py             # 40 s

Three processes: the Realtime simulators (`sims` subcommand: `rt-flaky`, `rt-a` and
`rt-b`, `router.sim.realtime.RealtimeSim`, in one process), the router (`firsttoken
serve`), and this driver, whose every session is the official `openai` SDK's
`client.realtime.connect`.

`rt-flaky` leads the route (`ordered`) and changes every `FAULT_PERIOD_S` to the next
of `FAULT_CYCLE`: upgrades refused (503) or too slow for `connect_s`, closes before
`session.created`, a death mid-response (1011), `server_error` mid-response, a stall
before the first audio (the router moves the response after `FIRST_OUTPUT_S`, its
`timeouts.first_token_s`, before the client's patience runs out), the provider's
`session_expired` for every open session, a drop of every open session (1011), and
plain service. `rt-a` and `rt-b` are healthy:
sessions fail over to them before they exist and migrate to them after.

Each session sends `session.update` (manual turns: no server VAD) and 2-6 turns, each
one of: a text turn (a user item carrying the session's marker, `response.create`),
an audio turn (200 ms of 24 kHz PCM appended in 20 ms frames, paced, a commit,
`response.create`), a barge-in (`response.cancel` at the first audio delta), an
out-of-band response (`conversation: "none"`). Every other text turn's item carries
the client's own id and is asked for back once answered (`conversation.item.retrieve`):
its `conversation.item.retrieved` must come, also when the upstream died before reading
the ask. A response that has no first delta after `PATIENCE_S` is cancelled, as a
voice agent's user would talk over it. One session in ten ends mid-response: half
close the socket (`conn.close()`), half vanish (the TCP connection aborted, no close
frame).

Every response asked for must end in `response.done` (completed, cancelled, or
failed when its upstream died under it; one that failed by a migration before any
output, out-of-band ones too, is asked again by the router, and that one is the turn's
answer) within
`RESPONSE_TIMEOUT_S`; a completed
text turn's transcript must carry the session's own marker (`crossed` otherwise: the
simulator answers "You said: <the last user text>", and a migrated session replays
its own conversation); the router must not close a socket under a client. Anything
else is lost. RSS and open descriptors of the router are sampled every 5 s; at the
end the router's `firsttoken_realtime_sessions` and every simulator's open sessions
must be back to zero (no upstream socket outlives its client). The last stdout line
is a JSON summary; the exit status is 1 if anything was lost, crossed or left open.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
from aiohttp import web
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families
from soak import Tally as TurnTally
from soak import fds, report, rss_mb, soak_parser, start_router, start_sims, stop, write_text

from router.sim.behaviour import Behaviour
from router.sim.openai_server import OpenAISim
from router.sim.ports import free_port
from router.sim.realtime import RealtimeSim
from router.sim.realtime_behaviour import RealtimeBehaviour, RealtimeFault
from router.sim.stt import SttSim
from router.sim.tts import TtsParams, TtsSim

ROOT = Path(__file__).resolve().parent.parent
ROUTE = "voice"
CLIENT_KEY = "sk-soak-client"
ADMIN_KEY = "sk-soak-admin"
#: what `rt-flaky` does, one entry per period; "expire" and "drop" act on its open
#: sessions when their period starts (and it serves normally through the period)
FAULT_CYCLE: list[RealtimeFault | str] = [
    RealtimeFault(),
    RealtimeFault("refuse", status=503),
    RealtimeFault("die_mid_response", code=1011, after_deltas=3),
    RealtimeFault(),
    "expire",
    RealtimeFault("close_before_created", code=1011),
    RealtimeFault("error_mid_response", after_deltas=2),
    RealtimeFault(),
    "drop",
    RealtimeFault("slow_upgrade", delay_s=3.0),
    RealtimeFault("stall_before_audio"),
]
FAULT_PERIOD_S = 3.0
#: a response with no first delta by then is cancelled (the user talks over it)
PATIENCE_S = 2.0
#: a response with no first output by then is moved by the router (`stalled`),
#: before the user talks over it
FIRST_OUTPUT_S = 1.0
#: a response asked for must be done by then
RESPONSE_TIMEOUT_S = 10.0
FRAME = base64.b64encode(bytes(960)).decode()  # 20 ms of 24 kHz PCM16 silence
KINDS = (("text", 0.4), ("audio", 0.3), ("barge_in", 0.15), ("out_of_band", 0.15))


# -- the simulators' process ---------------------------------------------------------


async def serve_sims(port_file: Path) -> None:
    behaviour = RealtimeBehaviour(ttfa_s=0.05, response_audio_ms=400, frame_interval_s=0.02)
    sims = {name: RealtimeSim(behaviour) for name in ("rt-flaky", "rt-a", "rt-b")}
    for sim in sims.values():
        await sim.start()
    # the cascade's stages (`--cascade`): speech-to-text, the LLM turn, text-to-speech
    stages = {
        "stt": SttSim(behaviour=Behaviour(ttft_s=0.05)),
        "llm": OpenAISim(Behaviour(ttft_s=0.05, itl_s=0.01, tokens=16)),
        "tts": TtsSim(TtsParams(sample_rate=24_000), behaviour=Behaviour(ttft_s=0.03, itl_s=0.02)),
    }
    for stage in stages.values():
        await stage.start()

    async def open_sessions(request: web.Request) -> web.Response:
        counts = {name: len(sim.open_sessions) for name, sim in sims.items()}
        seen = {name: len(sim.records) for name, sim in sims.items()}
        return web.json_response({"open": counts, "seen": seen})

    app = web.Application()
    app.router.add_get("/open", open_sessions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    control = int(runner.addresses[0][1])
    urls = {name: sim.base_url for name, sim in sims.items()}
    stage_urls = {name: stage.base_url for name, stage in stages.items()}
    write_text(port_file, json.dumps({"sims": urls, "stages": stage_urls, "control": control}))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    flaky = sims["rt-flaky"]
    i = 0
    while not stop.is_set():
        step = FAULT_CYCLE[i % len(FAULT_CYCLE)]
        i += 1
        flaky.set_fault(step if isinstance(step, RealtimeFault) else RealtimeFault())
        if step == "expire":
            await flaky.expire()
        elif step == "drop":
            await flaky.drop(1011)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FAULT_PERIOD_S)
    await runner.cleanup()
    for sim in sims.values():
        await sim.stop()
    for stage in stages.values():
        await stage.stop()


def policy(sims: dict[str, str], stages: dict[str, str], port: int, cascade: bool) -> str:
    targets = "".join(
        f"  - {{name: {name}, kind: realtime, base_url: '{url}', model: gpt-realtime,"
        f" timeouts: {{connect_s: 1.0, first_token_s: {FIRST_OUTPUT_S}}}}}\n"
        for name, url in sims.items()
    )
    voice = "[rt-flaky, rt-a, rt-b]"
    routes = ""
    if cascade:  # the open cascade second: sessions fail over and migrate to it
        targets += (
            f"  - {{name: stt, kind: stt, base_url: '{stages['stt']}', model: whisper-1}}\n"
            f"  - {{name: tts, kind: tts, base_url: '{stages['tts']}', model: kokoro,"
            " sample_rate: 24000}\n"
            f"  - {{name: llm, kind: openai, base_url: '{stages['llm']}', model: sim}}\n"
            "  - name: local-voice\n    kind: cascade\n"
            "    cascade: {stt: stt, llm: chat, tts: tts, voice: af_heart}\n"
        )
        voice = "[rt-flaky, local-voice, rt-a, rt-b]"
        routes = (
            "  - {name: stt, targets: [stt]}\n  - {name: tts, targets: [tts]}\n"
            "  - {name: chat, targets: [llm]}\n"
        )
    return (
        f"server: {{port: {port}, drain_s: 1}}\n"
        "signals: {breaker_failures: 3, breaker_base_s: 0.5, breaker_max_s: 2}\n"
        "auth:\n  admin_key_env: SOAK_ADMIN_KEY\n"
        "  keys:\n    - {name: soak, key_env: SOAK_CLIENT_KEY}\n"
        f"targets:\n{targets}"
        f"routes:\n  - name: {ROUTE}\n    targets: {voice}\n"
        f"    policy: {{type: ordered}}\n    session: {{idle_s: 30}}\n{routes}"
    )


# -- the driver ----------------------------------------------------------------------


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    fds: int
    #: the client's sessions open at that moment
    sessions: int


@dataclass
class Tally(TurnTally):
    """The chat soak's tally of turns, a stray `response.done` lost too; and how sessions ended,
    and the `error` events clients got."""

    LOST: ClassVar[tuple[str, ...]] = ("lost", "crossed", "stray")
    sessions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


def moved(response: Any) -> bool:
    """A response a migration ended (`failed`, code `upstream_migrated`)."""
    details = getattr(response, "status_details", None)
    error = getattr(details, "error", None)
    return response.status == "failed" and getattr(error, "code", None) == "upstream_migrated"


class Lost(Exception):
    """The router broke a promise to this session (a socket closed under it, say)."""


class Session:
    """One client session: reads every event into a queue, runs its turns in order."""

    def __init__(self, conn: Any, marker: str, tally: Tally) -> None:
        self.conn = conn
        self.marker = marker
        self.tally = tally
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        #: the last events seen, for the report of a lost session
        self.trail: deque[str] = deque(maxlen=12)

    async def read(self) -> None:
        try:
            async for event in self.conn:
                if event.type == "error":
                    self.tally.errors[str(event.error.code or event.error.type)] += 1
                rid = getattr(event, "response_id", None) or getattr(
                    getattr(event, "response", None), "id", None
                )
                self.trail.append(event.type + (f"({rid})" if rid else ""))
                await self.events.put(event)
        except Exception as exc:  # the socket closed under us: the waiter sees it
            await self.events.put(exc)
        await self.events.put(None)

    async def next_event(self, deadline: float) -> Any:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        event = await asyncio.wait_for(self.events.get(), left)
        if event is None or isinstance(event, Exception):
            raise Lost(f"the socket closed under the client: {event!r}")
        return event

    async def response(self, kind: str, *, barge_in: bool = False) -> tuple[str, str]:
        """Wait for the response just asked for: (its status, its text or transcript).

        It is the first `response.created` after the ask; its `response.done` ends
        it. A `response.done` for any other response (a second one for a response
        already done, seen by the next turn, or one never created) is a stray: the
        router broke the protocol, and it is counted as lost."""
        deadline = time.monotonic() + RESPONSE_TIMEOUT_S
        patience = time.monotonic() + PATIENCE_S
        text: list[str] = []
        mine: str | None = None
        delta = cancelled = False
        while True:
            timeout = deadline if delta or cancelled else min(deadline, patience)
            try:
                event = await self.next_event(timeout)
            except TimeoutError:
                if delta or cancelled or time.monotonic() >= deadline:
                    raise
                # no first delta yet: talk over it (by id: an out-of-band response is
                # not the conversation's in-progress one, which a bare cancel means)
                await self.cancel(mine)
                cancelled = True
                self.tally.endings["impatient_cancel"] += 1
                continue
            kind_of = event.type
            if kind_of == "response.created" and mine is None:
                mine = event.response.id
            elif kind_of == "response.done":
                if mine is not None and event.response.id == mine:
                    if not delta and not cancelled and moved(event.response):
                        # the user heard nothing of it: the router asks the new upstream
                        # for it again (an out-of-band one too), and that response is
                        # this turn's answer
                        self.tally.endings["asked_again"] += 1
                        mine, text = None, []
                        continue
                    return str(event.response.status), "".join(text)
                self.tally.end(kind, "stray", f"response.done for {event.response.id}, not {mine}")
            elif getattr(event, "response_id", None) == mine and mine is not None:
                if kind_of in (
                    "response.output_audio_transcript.delta",
                    "response.output_text.delta",
                ):
                    text.append(event.delta)
                if kind_of in ("response.output_audio.delta", "response.output_text.delta"):
                    if not delta and barge_in:
                        await self.cancel(mine)
                        cancelled = True
                    delta = True

    async def cancel(self, response_id: str | None) -> None:
        if response_id is None:
            await self.conn.response.cancel()
        else:
            await self.conn.response.cancel(response_id=response_id)

    async def turn(self, kind: str, index: int) -> None:
        conn = self.conn
        said = f"{self.marker} turn {index}"
        # every other text turn's item has the client's id, and is asked for back
        item_id = f"item_{self.marker[5:]}_{index}" if kind == "text" and index % 2 else None
        if kind == "text":
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": said}],
            }
            if item_id is not None:
                item["id"] = item_id
            await conn.conversation.item.create(item=item)
            await conn.response.create()
        elif kind == "audio":
            for _ in range(10):
                await conn.input_audio_buffer.append(audio=FRAME)
                await asyncio.sleep(0.02)
            await conn.input_audio_buffer.commit()
            await conn.response.create()
        elif kind == "barge_in":
            await conn.response.create()
        else:
            await conn.response.create(
                response={"conversation": "none", "metadata": {"marker": self.marker}}
            )
        status, text = await self.response(kind, barge_in=kind == "barge_in")
        # the Realtime simulator echoes the conversation's last user text; the
        # cascade's LLM simulator answers words of its own
        echoed = text.startswith("You said:")
        if kind == "text" and status == "completed" and echoed and said not in text:
            self.tally.end(kind, "crossed", f"{said!r} not in {text[:200]!r}")
            return
        self.tally.end(kind, status)
        if item_id is not None and status == "completed":
            await self.retrieve(item_id, index)

    async def retrieve(self, item_id: str, index: int) -> None:
        """Ask for the turn's item back: its `conversation.item.retrieved` must come,
        whatever upstream dies meanwhile (the router asks the next one again)."""
        event_id = f"event_{self.marker[5:]}_{index}"
        await self.conn.conversation.item.retrieve(item_id=item_id, event_id=event_id)
        deadline = time.monotonic() + RESPONSE_TIMEOUT_S
        while True:
            try:
                event = await self.next_event(deadline)
            except TimeoutError:
                self.tally.end("retrieve", "lost", f"no conversation.item.retrieved {item_id}")
                return
            if event.type == "conversation.item.retrieved" and event.item.id == item_id:
                self.tally.end("retrieve", "retrieved")
                return
            if event.type == "error" and event.error.event_id == event_id:
                self.tally.end("retrieve", "lost", f"{item_id}: {event.error.message}")
                return
            if event.type == "response.done":  # no response is in flight
                self.tally.end("retrieve", "stray", f"response.done {event.response.id}")


async def one_session(client: AsyncOpenAI, rng: random.Random, tally: Tally) -> None:
    marker = f"soak-{rng.getrandbits(48):012x}"
    turns = [pick(rng.random()) for _ in range(rng.randint(2, 6))]
    leave = rng.random() < 0.1  # end mid-response
    vanish = rng.random() < 0.5
    kind = "?"
    session: Session | None = None
    try:
        async with client.realtime.connect(model=ROUTE) as conn:
            session = Session(conn, marker, tally)
            reader = asyncio.create_task(session.read())
            try:
                created = await session.next_event(time.monotonic() + RESPONSE_TIMEOUT_S)
                if created.type != "session.created":
                    raise Lost(f"first event {created.type}")
                await conn.session.update(
                    session={
                        "type": "realtime",
                        "instructions": f"soak {marker}",
                        "audio": {"input": {"turn_detection": None}},
                    }
                )
                for i, kind in enumerate(turns):
                    if leave and i == len(turns) - 1:
                        await conn.response.create()
                        await asyncio.sleep(rng.uniform(0.05, 0.3))
                        if vanish:
                            conn._connection.transport.abort()  # gone, no close frame
                        tally.sessions["vanished" if vanish else "left"] += 1
                        return
                    await session.turn(kind, i)
                    await asyncio.sleep(rng.uniform(0.1, 0.8))
                tally.sessions["completed"] += 1
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
    except Exception as exc:  # Lost, a timeout, a refused upgrade, a socket error
        tally.sessions["lost"] += 1
        trail = list(session.trail) if session is not None else []
        tally.end(kind, "lost", f"{marker} {type(exc).__name__}: {exc} after {trail}")


def pick(roll: float) -> str:
    for kind, share in KINDS:
        if roll < share:
            return kind
        roll -= share
    return KINDS[-1][0]


def realtime_metrics(text: str) -> dict[str, Any]:
    """The router's realtime counters that tell a soak's story, summed over labels."""
    open_now = 0.0
    by: dict[str, Counter[str]] = {
        "migrations": Counter(),
        "ended": Counter(),
        "responses": Counter(),
        "attempt_failures": Counter(),
    }
    series = {
        "firsttoken_realtime_migrations_total": ("migrations", "reason"),
        "firsttoken_realtime_sessions_ended_total": ("ended", "end"),
        "firsttoken_realtime_responses_total": ("responses", "status"),
        "firsttoken_realtime_session_attempt_failures_total": ("attempt_failures", "status_class"),
    }
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "firsttoken_realtime_sessions":
                open_now += s.value
            elif s.name in series:
                key, label = series[s.name]
                by[key][s.labels[label]] += int(s.value)
    return {"sessions": open_now, **{k: dict(+v) for k, v in by.items()}}


async def drive(args: argparse.Namespace, pid: int, port: int, control: int) -> dict[str, Any]:
    rng = random.Random(args.seed)
    tally = Tally()
    base = f"http://127.0.0.1:{port}"
    client = AsyncOpenAI(base_url=f"{base}/v1", api_key=CLIENT_KEY, max_retries=0)
    duration = args.minutes * 60
    warmup = min(60.0, duration * 0.2)
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(timeout=10.0, headers=admin) as http:
        for _ in range(400):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{base}/readyz")).status_code == 200:
                    break
            await asyncio.sleep(0.05)
        started = time.monotonic()
        next_sample = 0.0
        opened = 0
        while (now := time.monotonic() - started) < duration:
            if now >= next_sample:
                samples.append(Sample(round(now, 1), rss_mb(pid), fds(pid), len(tasks)))
                next_sample += 5.0
            task = asyncio.create_task(one_session(client, rng, tally))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            opened += 1
            await asyncio.sleep(max(0.0, opened / args.rate - (time.monotonic() - started)))
        if tasks:
            await asyncio.wait(tasks, timeout=RESPONSE_TIMEOUT_S * 7)
        await asyncio.sleep(2.0)  # the router closes the last upstream sockets
        elapsed = round(time.monotonic() - started, 1)
        samples.append(Sample(elapsed, rss_mb(pid), fds(pid), len(tasks)))
        metrics = realtime_metrics((await http.get(f"{base}/metrics")).text)
        upstream = (await http.get(f"http://127.0.0.1:{control}/open")).json()
    warm = next((s for s in samples if s.t_s >= warmup), samples[0])
    end = samples[-1]
    return {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "minutes": args.minutes,
        "sessions_per_s": args.rate,
        "cascade": args.cascade,
        "sessions_opened": opened,
        "sessions": dict(tally.sessions),
        "turns": dict(tally.kinds),
        "endings": dict(tally.endings),
        "error_events": dict(tally.errors),
        "lost": len(tally.lost),
        "crossed": tally.endings.get("crossed", 0),
        "stray": tally.endings.get("stray", 0),
        "lost_examples": tally.lost[:10],
        "still_running": len(tasks),
        "router_sessions_open_at_end": metrics["sessions"],
        "router_counted": {k: v for k, v in metrics.items() if k != "sessions"},
        "upstream_open_at_end": upstream["open"],
        "upstream_sessions_seen": upstream["seen"],
        "warmup_s": warmup,
        "rss_mb": {"warm": warm.rss_mb, "end": end.rss_mb, "max": max(s.rss_mb for s in samples)},
        "fds": {"warm": warm.fds, "end": end.fds, "max": max(s.fds for s in samples)},
        "samples": [asdict(s) for s in samples],
    }


def soak(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="firsttoken-rtsoak-"))
    sims, started = start_sims(__file__, work)
    router: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        config = work / "policy.yaml"
        config.write_text(policy(started["sims"], started["stages"], port, args.cascade))
        keys = {"SOAK_CLIENT_KEY": CLIENT_KEY, "SOAK_ADMIN_KEY": ADMIN_KEY}
        router = start_router(work, config, args.log_level, keys)
        summary = asyncio.run(drive(args, router.pid, port, int(started["control"])))
        summary["router_log"] = str(work / "router.log")
        return summary
    finally:
        stop(router, sims)


def main() -> int:
    parser = soak_parser(__doc__.split("\n\n")[0], minutes=10.0, rate=2.0, per="sessions")
    parser.add_argument("--log-level", default="warning", help="the router's")
    parser.add_argument(
        "--cascade",
        action="store_true",
        help="an open cascade (STT, LLM, TTS simulators) second in the route",
    )
    args = parser.parse_args()
    if args.command == "sims":
        asyncio.run(serve_sims(args.port_file))
        return 0
    summary = soak(args)
    report(summary, args.json)
    left_open = summary["router_sessions_open_at_end"] or any(
        summary["upstream_open_at_end"].values()
    )
    return 1 if summary["lost"] or left_open or summary["still_running"] else 0


if __name__ == "__main__":
    sys.exit(main())
