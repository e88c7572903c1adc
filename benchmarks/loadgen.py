"""A cheap closed-loop load generator for streaming chat completions, streaming
Responses (`--endpoint responses`) and embeddings (`--endpoint embeddings`).

    python benchmarks/loadgen.py --url http://127.0.0.1:P/v1/chat/completions \
        --concurrency 64 --warmup 3 --duration 10 --model bench

C workers each send one streaming request, read it to the end, and send the next.
TTFT is the time from just before the request is sent to the arrival of the first
SSE event whose `delta.content` (or completion `text`) is non-empty. The bytes are
split into events and only events mentioning `"content"` or `"text"` are parsed
as JSON, and only until the first token; after it the body is drained by chunks
and only the tail is checked for `[DONE]`. One process, one aiohttp session,
uvloop: it must be cheap because on a small machine it competes with the proxy
and the upstream for the same cores.

With `--endpoint responses` the first token is the first non-empty
`response.output_text.delta` and a stream ends at `response.completed` (the
Responses API sends no `[DONE]`). With `--endpoint embeddings` each request is one
batch of `--batch` inputs, unary: its "TTFT" is the time to the whole answer, and
it counts when its body is a list of embeddings. With `--sessions` each worker is one
conversation (`x-session-id: w<index>`), so a router's affinity has keys to keep.

Stdout carries the protocol with the parent: `window-start` and `window-end` on
their own lines at the edges of the measured window (so the parent can sample
CPU counters of the proxy at the same instants), then one JSON line with the
results. A sample belongs to the window when its request was *sent* inside it;
a stream counts towards throughput when it *completed* inside it. That count moves
in steps: a closed loop of C workers whose requests all take the same time finishes
them in waves (the workers start together), and a 10 s window holds 39 or 40 waves of
a 250 ms request, 2.5 % apart (`--stagger` spreads the first sends over one request's
length, so the waves never form). So each worker's completions in the window also give
its own rate, (k - 1) / (last - first), which no phase moves; `rate_per_s` is their
sum, the throughput a ratio against direct should use. Each sample's
send time is in `sent_s` (perf_counter), and SIGUSR1 ends the window early: a
driver can run one load through many phases and cut it by time (`hostile.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

_CONTENT_KEYS = (b'"content"', b'"text"')
_RESPONSES_DELTA = b'"response.output_text.delta"'
#: what the end of a stream holds, per endpoint (searched as bytes after the first token)
END_OF = {"chat": b"[DONE]", "responses": b"response.completed"}


@dataclass
class Stats:
    ttft_s: list[float] = field(default_factory=list)
    #: when each sample's request was sent (perf_counter: CLOCK_MONOTONIC on Linux,
    #: the same clock in every process), so a driver can cut one run into phases
    sent_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    completed_in_window: int = 0
    #: the workers' own completion rates, summed: (k - 1) / (last - first) over each
    #: worker's k >= 2 completions in the window (see the module's docstring)
    rate_per_s: float = 0.0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text[:300])


def _has_content(event: bytes) -> bool:
    """True when one SSE event carries a non-empty content delta (or completion text)."""
    if not any(key in event for key in _CONTENT_KEYS):
        return False
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return False
        try:
            chunk = json.loads(payload)
        except ValueError:
            return False
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list):
            return False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and delta.get("content"):
                return True
            if choice.get("text"):
                return True
    return False


def _has_text_delta(event: bytes) -> bool:
    """True when one Responses event is a non-empty `response.output_text.delta`."""
    if _RESPONSES_DELTA not in event:
        return False
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        try:
            parsed = json.loads(line[5:])
        except ValueError:
            return False
        return isinstance(parsed, dict) and bool(parsed.get("delta"))
    return False


@dataclass
class Run:
    """What every worker shares."""

    session: aiohttp.ClientSession
    urls: Sequence[str]
    body: bytes
    headers: dict[str, str]
    stats: Stats
    #: the measured window, in perf_counter seconds
    window: tuple[float, float]
    #: each worker is one conversation (`x-session-id: w<index>`), for affinity
    sessions: bool = False
    #: chat, responses or embeddings
    endpoint: str = "chat"
    #: per worker, the completion times inside the window
    done_s: list[list[float]] = field(default_factory=list)
    #: the workers' first sends are spread evenly over this many seconds
    stagger_s: float = 0.0


def _count(run: Run, sent: float, first: float, done: float, worker: int) -> None:
    """A sample belongs to the window when its request was sent inside it; it counts
    towards throughput when it completed inside it."""
    start, end = run.window
    if start <= sent < end:
        run.stats.ttft_s.append(first - sent)
        run.stats.sent_s.append(sent)
        run.stats.total_s.append(done - sent)
    if start <= done < end:
        run.stats.completed_in_window += 1
        run.done_s[worker].append(done)


def worker_rates(done_s: Sequence[Sequence[float]]) -> float:
    """The sum of each worker's completion rate, (k - 1) / (last - first) over its k
    completions (a worker with fewer than two adds nothing)."""
    return sum((len(d) - 1) / (d[-1] - d[0]) for d in done_s if len(d) >= 2 and d[-1] > d[0])


async def _unary(run: Run, url: str, headers: dict[str, str], worker: int) -> None:
    """One embeddings request: its latency is the time to the whole body."""
    stats = run.stats
    sent = time.perf_counter()
    async with run.session.post(url, data=run.body, headers=headers) as response:
        key = str(response.status)
        stats.statuses[key] = stats.statuses.get(key, 0) + 1
        body = await response.read()
    done = time.perf_counter()
    if response.status != 200:
        stats.error(f"{response.status}: {body[:200]!r}")
        return
    if not body.startswith(b'{"object":"list","data":[{"object":"embedding"'):
        stats.error(f"not an embeddings list: {body[:200]!r}")
        return
    _count(run, sent, done, done, worker)


async def _one(run: Run, url: str, headers: dict[str, str], worker: int) -> None:
    stats = run.stats
    is_first = _has_text_delta if run.endpoint == "responses" else _has_content
    end_marker = END_OF[run.endpoint]
    sent = time.perf_counter()
    first: float | None = None
    ended = False
    tail = b""
    async with run.session.post(url, data=run.body, headers=headers) as response:
        key = str(response.status)
        stats.statuses[key] = stats.statuses.get(key, 0) + 1
        if response.status != 200:
            text = await response.read()
            stats.error(f"{response.status}: {text[:200]!r}")
            return
        buffer = b""
        async for chunk in response.content.iter_any():
            if first is None:
                buffer += chunk.replace(b"\r\n", b"\n")
                while first is None and (cut := buffer.find(b"\n\n")) >= 0:
                    event, buffer = buffer[: cut + 2], buffer[cut + 2 :]
                    if is_first(event):
                        first = time.perf_counter()
                if first is not None:
                    ended = end_marker in buffer
                    tail = buffer[-32:]
            else:
                seen = tail + chunk
                ended = ended or end_marker in seen
                tail = seen[-32:]
    done = time.perf_counter()
    if first is None:
        stats.error("stream ended without a content token")
        return
    if not ended:
        stats.error(f"stream ended without {end_marker.decode()}")
        return
    _count(run, sent, first, done, worker)


async def _worker(index: int, run: Run) -> None:
    n = index
    headers = dict(run.headers)
    if run.sessions:
        headers["x-session-id"] = f"w{index}"
    send = _unary if run.endpoint == "embeddings" else _one
    if run.stagger_s > 0:
        await asyncio.sleep(run.stagger_s * index / len(run.done_s))
    while time.perf_counter() < run.window[1]:
        url = run.urls[n % len(run.urls)]
        n += 1
        try:
            await send(run, url, headers, index)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            run.stats.error(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.05)  # do not spin on a refused port


def _say(line: str) -> None:
    """One line to the parent, whole: the event loop may have left stdout non-blocking,
    and a long line (the samples at 128 streams pass 128 KiB) must not be cut when the
    pipe is full, so it is written with os.write until every byte is out."""
    fd = sys.stdout.fileno()
    os.set_blocking(fd, True)
    data = memoryview((line + "\n").encode())
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """What every request sends, per endpoint."""
    if args.endpoint == "responses":
        return {
            "model": args.model,
            "input": "Say something short.",
            "stream": True,
            "max_output_tokens": args.max_tokens,
        }
    if args.endpoint == "embeddings":
        texts = [
            f"passage {i}: a short paragraph to embed for retrieval" for i in range(args.batch)
        ]
        return {"model": args.model, "input": texts, "encoding_format": "float"}
    return {
        "model": args.model,
        "messages": [{"role": "user", "content": "Say something short."}],
        "stream": True,
        "max_tokens": args.max_tokens,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    urls: list[str] = args.url
    body = json.dumps(request_body(args)).encode()
    headers = {"content-type": "application/json"}
    if args.api_key:
        headers["authorization"] = f"Bearer {args.api_key}"
    stats = Stats()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    # sock_read bounds silence in a stream; total bounds one request (a saturated
    # proxy can queue a request for seconds, so it is generous).
    timeout = aiohttp.ClientTimeout(total=args.request_timeout, sock_read=args.request_timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        t0 = time.perf_counter()
        window = (t0 + args.warmup, t0 + args.warmup + args.duration)
        shared = Run(session, urls, body, headers, stats, window, args.sessions, args.endpoint)
        shared.done_s = [[] for _ in range(args.concurrency)]
        shared.stagger_s = args.stagger
        workers = [asyncio.create_task(_worker(i, shared)) for i in range(args.concurrency)]

        async def markers() -> None:
            await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
            _say("window-start")
            await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
            _say("window-end")

        marker_task = asyncio.create_task(markers())

        def end_now() -> None:  # SIGUSR1: a driver's phases are done, the window ends
            shared.window = (shared.window[0], min(shared.window[1], time.perf_counter()))
            if marker_task.cancel():
                _say("window-end")

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, end_now)
        # Workers stop sending at the end of the window; in-flight streams finish
        # (bounded: a saturated proxy may hold them for a while).
        _, pending = await asyncio.wait(
            workers, timeout=args.warmup + args.duration + args.drain_timeout
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(marker_task, return_exceptions=True)
        for task in workers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                stats.error(f"worker crashed: {task.exception()!r}")
    stats.rate_per_s = worker_rates(shared.done_s)
    result: dict[str, Any] = asdict(stats)
    result["cancelled_at_end"] = len(pending)
    result["window_s"] = args.duration
    result["concurrency"] = args.concurrency
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", action="append", required=True, help="repeat: round robin")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--request-timeout", type=float, default=60.0)
    p.add_argument("--model", default="bench")
    p.add_argument("--max-tokens", type=int, default=20)
    p.add_argument("--endpoint", choices=("chat", "responses", "embeddings"), default="chat")
    p.add_argument("--batch", type=int, default=8, help="embeddings: inputs per request")
    p.add_argument(
        "--stagger",
        type=float,
        default=0.0,
        help="spread the workers' first requests evenly over this many seconds (default 0: "
        "all at once, and requests of a fixed length then stay in waves of C)",
    )
    p.add_argument("--api-key", default=None)
    p.add_argument(
        "--sessions", action="store_true", help="each worker sends x-session-id: w<index>"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a router dependency
        runner = asyncio.run
    result = runner(run(args))
    _say(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
