"""Fault injection, end to end: real simulators on 127.0.0.1, the router, real clients.

For every fault, streaming and not: what the client sees (a status, an SSE error
event, or a complete stream), what `/metrics` counts, and that a healthy stream on
another route (the canary) is untouched while the fault happens. The invariant
under all of it: no turn is lost silently. Every turn ends as a complete stream
(`data: [DONE]`), an SSE error event, or an HTTP error in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from router.sim.behaviour import Behaviour, Fault
from router.sim.openai_server import OpenAISim
from tests.e2e.harness import LoopThread, RunningRouter, start_router, stop_router

FAST = Behaviour(ttft_s=0.01, itl_s=0.002, tokens=6)
TEXT = "".join(f"t{i} " for i in range(6))
#: short deadlines keep the suite fast; the canary's target has the defaults
TIMEOUTS = "timeouts: {connect_s: 0.5, first_token_s: 0.4, idle_s: 0.4, total_s: 0.8}"
#: the canary checks integrity, not latency: a loaded CI machine must not fail it
CANARY_TIMEOUTS = "timeouts: {first_token_s: 10.0}"
ROUTES = """
routes:
  - name: chat
    targets: [a, b]
    policy: {type: ordered}
    exploration: 0
  - name: other
    targets: [c]
"""
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello there"}
]
BODY = {"model": "chat", "messages": MESSAGES}

# -- metrics ------------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """The change of the sum of every series of `name` whose labels include `labels`."""
    want = set(labels.items())

    def total(samples: Samples) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)

    return total(after) - total(before)


# -- the rig: simulators by name, a router in front, a canary on another route ------------


@dataclass
class Rig:
    loop: LoopThread
    sims: dict[str, OpenAISim]
    running: RunningRouter
    extra: list[web.AppRunner] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.running.url

    def set(self, name: str, behaviour: Behaviour) -> None:
        self.loop.run(self.sims[name].set_behaviour(behaviour))

    def scrape(self) -> Samples:
        return parse_metrics(httpx.get(f"{self.url}/metrics", timeout=5).text)

    def client(self, timeout: float = 10.0) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.running.base_url, api_key="unused", max_retries=0, timeout=timeout
        )

    def records(self, name: str) -> int:
        return self.loop.call(lambda: len(self.sims[name].records))


def target_entry(name: str, base_url: str, extra: str = TIMEOUTS) -> str:
    return (
        f"  - name: {name}\n    kind: openai\n    base_url: {base_url}\n"
        f"    model: {name}-model\n    {extra}\n"
    )


def start_rig(
    loop: LoopThread,
    behaviours: Mapping[str, Behaviour],
    *,
    routes: str = ROUTES,
    base_urls: Mapping[str, str] | None = None,
    target_extra: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    header: str = "",
) -> Rig:
    """Start one OpenAISim per name (a `base_urls` entry replaces that target's URL)."""

    async def up() -> Rig:
        sims = {}
        for name, behaviour in behaviours.items():
            sim = OpenAISim(behaviour, model=f"{name}-model")
            await sim.start()
            sims[name] = sim
        urls = {n: s.base_url for n, s in sims.items()} | dict(base_urls or {})
        extra = target_extra or {}
        text = (
            header
            + "\ntargets:\n"
            + "".join(
                target_entry(n, u, extra.get(n, CANARY_TIMEOUTS if n == "c" else TIMEOUTS))
                for n, u in urls.items()
            )
        )
        text += routes
        if config_path is not None:
            write_text(config_path, text)
        running = await start_router(
            text, config_path=str(config_path) if config_path is not None else None
        )
        return Rig(loop, sims, running)

    return loop.run(up())


def write_text(path: Path, text: str) -> None:
    path.write_text(text)


def stop_rig(rig: Rig) -> None:
    async def down() -> None:
        await stop_router(rig.running)
        for sim in rig.sims.values():
            await sim.stop()
        for runner in rig.extra:
            await runner.cleanup()

    rig.loop.run(down())


class Canary:
    """Healthy streams on route `other`, one after another, until stopped."""

    def __init__(self, rig: Rig) -> None:
        self._client = rig.client()
        self._stop = threading.Event()
        self.results: list[str] = []
        self._streaming = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stream = self._client.chat.completions.create(
                    model="other", messages=MESSAGES, stream=True
                )
                text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
            except openai.OpenAIError as exc:
                text = f"error: {exc!r}"
            self.results.append(text)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 5
        while not self.results and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        self._client.close()
        return self.results


#: the canary's target: 20 tokens 5 ms apart, so one of its streams spans most faults
CANARY = Behaviour(ttft_s=0.005, itl_s=0.005, tokens=20)
CANARY_TEXT = "".join(f"t{i} " for i in range(20))


@pytest.fixture
def rig(loop_thread: LoopThread) -> Iterator[Rig]:
    r = start_rig(loop_thread, {"a": FAST, "b": FAST, "c": CANARY})
    canary = Canary(r)
    canary.start()
    yield r
    results = canary.stop()
    stop_rig(r)
    assert results, "the canary never streamed"
    assert all(t == CANARY_TEXT for t in results), f"a healthy stream was disturbed: {results}"


# -- what a client sees, in raw SSE -------------------------------------------------------


@dataclass
class Seen:
    status: int
    headers: httpx.Headers
    #: the data payloads of every SSE event, in order (streams), or the JSON body
    events: list[bytes]
    body: bytes

    @property
    def ending(self) -> str:
        """done, error, or truncated (the one that must never happen)."""
        if self.status != 200:
            return "http_error"
        if any(e.startswith(b'{"error"') for e in self.events):
            return "error"
        if self.events and self.events[-1] == b"[DONE]":
            return "done"
        return "truncated"

    @property
    def text(self) -> str:
        out = []
        for e in self.events:
            if e.startswith(b"{") and b'"content"' in e:
                try:
                    chunk = json.loads(e)
                except ValueError:
                    continue
                for choice in chunk.get("choices", []):
                    out.append(choice.get("delta", {}).get("content") or "")
        return "".join(out)

    def error(self) -> dict[str, object]:
        """The OpenAI-shaped error: the body of an HTTP error, or the SSE error event."""
        if self.status != 200:
            parsed = json.loads(self.body)
        else:
            parsed = json.loads(next(e for e in self.events if e.startswith(b'{"error"')))
        assert set(parsed) == {"error"}
        err = parsed["error"]
        assert isinstance(err, dict)
        assert {"message", "type", "code"} <= set(err)
        return err


def post(url: str, body: Mapping[str, object], *, stream: bool, timeout: float = 10.0) -> Seen:
    payload = {**body, "stream": stream}
    with (
        httpx.Client(timeout=timeout) as h,
        h.stream("POST", f"{url}/v1/chat/completions", json=payload) as r,
    ):
        raw = r.read()
    events = []
    if r.status_code == 200 and stream:
        for block in raw.split(b"\n\n"):
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    events.append(line[5:].strip())
    return Seen(r.status_code, r.headers, events, raw)


def ok_turn(seen: Seen, stream: bool) -> str:
    """Assert a complete answer and return its text."""
    assert seen.status == 200, seen.body[:300]
    if stream:
        assert seen.ending == "done", seen.events[-3:]
        return seen.text
    message = json.loads(seen.body)["choices"][0]["message"]["content"]
    assert isinstance(message, str)
    return message


# -- before the first token: invisible fallback, counted ----------------------------------

STREAM, UNARY, BOTH = (True,), (False,), (True, False)
# (name, fault, what it is counted as: status_class of upstream_errors and cause of
# fallbacks, and the modes to try: two failures per target stay under the breaker's 3)
BEFORE = [
    ("refused", Fault("refuse"), "connect", "connect", BOTH),
    ("reset_after_headers", Fault("reset_after_headers"), "connect", "connect", BOTH),
    ("500", Fault("status", status=500), "5xx", "status", BOTH),
    ("502", Fault("status", status=502), "5xx", "status", BOTH),
    ("503", Fault("status", status=503), "5xx", "status", BOTH),
    # A 429 with Retry-After also keeps the target off for that long (see below), so
    # its two modes need a fresh target each.
    ("429_retry_after", Fault("rate_limited", retry_after_s=1), "4xx", "status", STREAM),
    ("429_retry_after", Fault("rate_limited", retry_after_s=1), "4xx", "status", UNARY),
    ("429_bare", Fault("status", status=429), "4xx", "status", BOTH),
    ("hang_before_headers", Fault("hang_before_headers"), "timeout", "timeout", BOTH),
    ("hang_before_first_token", Fault("hang_before_first_token"), "timeout", "timeout", BOTH),
    ("malformed_first_frame", Fault("malformed"), "protocol", "protocol", BOTH),
    ("die_before_first_token", Fault("die_after", after_tokens=0), "connect", "connect", BOTH),
]
# A unary answer has no first-token phase; the sim's stream-only faults map onto
# other phases there (hang: no headers; malformed: a body that is not JSON; die: a
# connection cut before the body), and are counted the same way.


@pytest.mark.parametrize(
    ("name", "fault", "klass", "cause", "modes"),
    BEFORE,
    ids=[b[0] + ("" if len(b[4]) == 2 else "-stream" if b[4][0] else "-unary") for b in BEFORE],
)
def test_fault_before_first_token_falls_back_and_is_counted(
    rig: Rig, *, name: str, fault: Fault, klass: str, cause: str, modes: tuple[bool, ...]
) -> None:
    rig.set("a", Behaviour(ttft_s=0.01, itl_s=0.002, tokens=6, fault=fault))
    for stream in modes:
        before = rig.scrape()
        seen = post(rig.url, BODY, stream=stream)
        after = rig.scrape()

        assert ok_turn(seen, stream) == TEXT
        assert seen.headers["x-firsttoken-target"] == "b"
        assert seen.headers["x-firsttoken-attempts"] == "2"
        assert "fell back" in seen.headers["x-firsttoken-reason"]
        c = "firsttoken_upstream_errors_total"
        assert delta(before, after, c, target="a", status_class=klass) == 1
        assert delta(before, after, c) == 1
        f = "firsttoken_fallbacks_total"
        assert delta(before, after, f, from_target="a", to_target="b", cause=cause) == 1
        r = "firsttoken_requests_total"
        assert delta(before, after, r, route="chat", target="b", outcome="fell_back") == 1
        assert delta(before, after, r, route="chat") == 1


def test_429_with_retry_after_keeps_the_target_off_until_then(rig: Rig) -> None:
    # 3 s: the second turn must be routed before a's Retry-After ends, and on a loaded
    # machine the fallback turn alone can take over a second.
    rig.set("a", Behaviour(fault=Fault("rate_limited", retry_after_s=3)))
    assert post(rig.url, BODY, stream=True).headers["x-firsttoken-target"] == "b"
    answered = time.monotonic()  # after the 429, so a is off until before answered + 3
    seen_by_a = rig.records("a")
    second = post(rig.url, BODY, stream=True)
    assert second.headers["x-firsttoken-attempts"] == "1"  # a was not even tried
    assert second.headers["x-firsttoken-target"] == "b"
    assert rig.records("a") == seen_by_a
    rig.set("a", FAST)
    time.sleep(max(0.0, answered + 3.05 - time.monotonic()))
    assert post(rig.url, BODY, stream=True).headers["x-firsttoken-target"] == "a"


def test_429_without_retry_after_is_tried_again_next_turn(rig: Rig) -> None:
    rig.set("a", Behaviour(fault=Fault("status", status=429)))
    post(rig.url, BODY, stream=True)
    seen_by_a = rig.records("a")
    assert post(rig.url, BODY, stream=True).headers["x-firsttoken-attempts"] == "2"
    assert rig.records("a") == seen_by_a + 1


def test_dns_failure_of_a_hosted_name_falls_back(loop_thread: LoopThread) -> None:
    # .invalid never resolves (RFC 6761): a DNS error, with no network needed.
    rig = start_rig(
        loop_thread,
        {"b": FAST, "c": CANARY},
        base_urls={"a": "http://does-not-exist.invalid/v1"},
    )
    try:
        before = rig.scrape()
        for stream in (True, False):
            seen = post(rig.url, BODY, stream=stream)
            assert ok_turn(seen, stream) == TEXT
            assert seen.headers["x-firsttoken-target"] == "b"
        after = rig.scrape()
        assert delta(before, after, "firsttoken_upstream_errors_total", target="a") == 2
        assert (
            delta(before, after, "firsttoken_fallbacks_total", from_target="a", cause="connect")
            == 2
        )
    finally:
        stop_rig(rig)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])
@pytest.mark.parametrize(
    ("faults", "status", "code"),
    [
        ((Fault("status", status=503), Fault("refuse")), 502, "all_targets_failed"),
        ((Fault("hang_before_headers"), Fault("hang_before_headers")), 504, "upstream_timeout"),
    ],
    ids=["502", "504"],
)
def test_every_target_failing_is_an_explicit_error(
    rig: Rig, stream: bool, faults: tuple[Fault, Fault], status: int, code: str
) -> None:
    rig.set("a", Behaviour(fault=faults[0]))
    rig.set("b", Behaviour(fault=faults[1]))
    before = rig.scrape()
    seen = post(rig.url, BODY, stream=stream)
    after = rig.scrape()
    assert seen.status == status
    assert seen.error()["code"] == code
    assert delta(before, after, "firsttoken_upstream_errors_total") == 2
    r = "firsttoken_requests_total"
    assert delta(before, after, r, route="chat", target="none", outcome="error") == 1
    assert delta(before, after, r, route="chat") == 1


# -- after the first token: an SSE error event, never a silent truncation -------------------


@pytest.mark.parametrize(
    ("fault", "klass"),
    [
        (Fault("die_after", after_tokens=3), "connect"),
        (Fault("trickle", trickle_s=1.0), "timeout"),  # idle_s = 0.4 s passes after t0
    ],
    ids=["die_after_3", "idle_timeout"],
)
def test_failure_after_first_token_is_an_error_event_and_counted(
    rig: Rig, fault: Fault, klass: str
) -> None:
    rig.set("a", Behaviour(ttft_s=0.01, itl_s=0.002, tokens=6, fault=fault))
    before = rig.scrape()
    seen = post(rig.url, BODY, stream=True)
    after = rig.scrape()
    assert seen.status == 200
    assert seen.ending == "error"
    assert seen.error()["code"] == "stream_interrupted"
    assert seen.text and TEXT.startswith(seen.text) and seen.text != TEXT
    assert rig.records("b") == 0  # no silent switch mid-answer
    assert delta(before, after, "firsttoken_upstream_errors_total", target="a", status_class=klass)
    r = "firsttoken_requests_total"
    assert delta(before, after, r, route="chat", target="a", outcome="error") == 1
    assert delta(before, after, "firsttoken_fallbacks_total") == 0
    # The official SDK raises on it, with the text so far already delivered. b fails
    # the same way here: in one CI run (not reproduced alone or beside CPU burners) the
    # SDK's stream ended cleanly, most likely because a's first token came after its
    # 0.4 s deadline in a stall of the test process and the turn fell back, before any
    # token and as it should, to a healthy b: then the SDK had nothing to raise on.
    rig.set("a", Behaviour(ttft_s=0.01, itl_s=0.002, tokens=6, fault=fault))
    rig.set("b", Behaviour(ttft_s=0.01, itl_s=0.002, tokens=6, fault=fault))
    got = []
    with rig.client() as c, pytest.raises(openai.APIError):
        for ch in c.chat.completions.create(model="chat", messages=MESSAGES, stream=True):
            got.append(ch.choices[0].delta.content or "" if ch.choices else "")
    assert TEXT.startswith("".join(got))


def test_upstream_error_event_mid_stream_reaches_the_client(rig: Rig) -> None:
    rig.set("a", Behaviour(fault=Fault("error_event_after", after_tokens=3)))
    before = rig.scrape()
    seen = post(rig.url, BODY, stream=True)
    after = rig.scrape()
    assert seen.ending == "error"
    assert seen.text == "t0 t1 t2 "
    r = "firsttoken_requests_total"
    assert delta(before, after, r, route="chat", target="a", outcome="error") == 1


def test_upstream_error_event_mid_stream_is_counted_as_an_upstream_error(rig: Rig) -> None:
    rig.set("a", Behaviour(fault=Fault("error_event_after", after_tokens=3)))
    before = rig.scrape()
    post(rig.url, BODY, stream=True)
    after = rig.scrape()
    assert delta(before, after, "firsttoken_upstream_errors_total", target="a") == 1


# -- invalid JSON in a chunk after the first token ---------------------------------------


async def scripted_upstream(script: list[bytes | float]) -> tuple[web.AppRunner, str]:
    """An upstream that answers every stream with `script`: bytes to write, floats to
    sleep. Returns its runner and base URL."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for step in script:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                await response.write(step)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/v1"


def chunk(content: str) -> bytes:
    delta_ = {"content": content}
    body = {
        "id": "x",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta_}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def test_invalid_json_mid_stream_is_relayed_verbatim_and_the_sdk_raises(
    loop_thread: LoopThread,
) -> None:
    """After the commit point the router does a bytes search, never a JSON parse: a
    corrupt chunk is passed on unchanged (the router does not rewrite an upstream's
    bytes), the stream still ends explicitly, and the client's own parser refuses it.
    The router cannot know, so it counts the turn as ok: a documented limit."""
    script: list[bytes | float] = [
        chunk("t0 "),
        chunk("t1 "),
        b'data: {"id": "x", "choices": [{"delta": {"content": "t2\n\n',  # cut mid-object
        chunk("t3 "),
        b"data: [DONE]\n\n",
    ]
    runner, url = loop_thread.run(scripted_upstream(script))
    rig = start_rig(loop_thread, {"b": FAST, "c": CANARY}, base_urls={"a": url})
    rig.extra.append(runner)
    try:
        before = rig.scrape()
        seen = post(rig.url, BODY, stream=True)
        after = rig.scrape()
        assert seen.status == 200 and seen.headers["x-firsttoken-target"] == "a"
        assert seen.events[-1] == b"[DONE]"
        assert b'"content": "t2' in seen.body  # verbatim, not hidden
        r = "firsttoken_requests_total"
        assert delta(before, after, r, route="chat", target="a", outcome="ok") == 1
        with pytest.raises(ValueError, match=r"Expecting|Unterminated|Invalid"):
            list(rig.client().chat.completions.create(model="chat", messages=MESSAGES, stream=True))
    finally:
        stop_rig(rig)


# -- limits on a stream that will not end, or slows down ---------------------------------


def test_total_limit_ends_an_endless_stream_with_an_error_event(loop_thread: LoopThread) -> None:
    endless = Behaviour(ttft_s=0.01, itl_s=0.01, tokens=10**9)
    rig = start_rig(
        loop_thread,
        {"a": endless, "b": FAST},
        routes=ROUTES.replace("  - name: other\n    targets: [c]\n", ""),
        target_extra={"a": "timeouts: {first_token_s: 0.4, idle_s: 0.4, total_s: 0.5}"},
    )
    try:
        with (
            httpx.Client(timeout=5) as h,
            h.stream("POST", f"{rig.url}/v1/chat/completions", json={**BODY, "stream": True}) as r,
        ):
            started = time.monotonic()
            tail = b""
            for piece in r.iter_bytes():
                tail = (tail + piece)[-4096:]
                if time.monotonic() - started > 1.5:  # 3x total_s: give up, it is unbounded
                    break
        assert b'"code": "stream_interrupted"' in tail
    finally:
        stop_rig(rig)


def test_a_target_that_slows_mid_stream_is_marked_degraded(loop_thread: LoopThread) -> None:
    # The slow stream is 5 gaps of 0.15 s: 0.75 s of sleeps alone, so the rig's total_s
    # (0.8 s) would leave a loaded machine 50 ms; this target's stream limits are wide
    # (idle_s stays well above a gap), so only the pace can mark it.
    relaxed = "timeouts: {first_token_s: 5.0, idle_s: 2.0, total_s: 10.0}"
    rig = start_rig(loop_thread, {"a": FAST, "b": FAST, "c": CANARY}, target_extra={"a": relaxed})
    canary = Canary(rig)
    canary.start()
    try:
        # First a normal turn, so the router knows a's pace (about 2 ms per token) ...
        assert post(rig.url, BODY, stream=True).headers["x-firsttoken-target"] == "a"
        # ... then 0.15 s per token: under idle_s but 75x slower than its norm.
        before = rig.scrape()
        trickle = Fault("trickle", trickle_s=0.15)
        rig.set("a", Behaviour(ttft_s=0.01, itl_s=0.002, tokens=6, fault=trickle))
        seen = post(rig.url, BODY, stream=True)
        assert ok_turn(seen, True) == TEXT  # slow, but whole
        after = rig.scrape()
        assert delta(before, after, "firsttoken_slow_streams_total", target="a") == 1
        rig.set("a", FAST)
        assert post(rig.url, BODY, stream=True).headers["x-firsttoken-target"] == "b"
    finally:
        results = canary.stop()
        stop_rig(rig)
    assert results and all(t == CANARY_TEXT for t in results), results


def test_min_tokens_per_s_marks_a_target_degraded_without_history(
    loop_thread: LoopThread,
) -> None:
    rig = start_rig(
        loop_thread,
        {
            "a": Behaviour(ttft_s=0.01, tokens=6, fault=Fault("trickle", trickle_s=0.15)),
            "b": FAST,
            "c": CANARY,
        },
        target_extra={"a": "timeouts: {first_token_s: 0.4, idle_s: 0.4, min_tokens_per_s: 10}"},
    )
    try:
        assert ok_turn(post(rig.url, BODY, stream=True), True) == TEXT
        assert post(rig.url, BODY, stream=True).headers["x-firsttoken-target"] == "b"
    finally:
        stop_rig(rig)


# -- a reload while streams are in flight ----------------------------------------------


def test_reload_during_traffic(loop_thread: LoopThread, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    slow = Behaviour(ttft_s=0.01, itl_s=0.02, tokens=20)
    # This test is about the reload, not timeouts: generous ones, so that a loaded
    # machine's pause between two tokens is not mistaken for a dead upstream.
    relaxed = "timeouts: {first_token_s: 5.0, idle_s: 5.0}"
    rig = start_rig(
        loop_thread,
        {"a": slow, "b": FAST, "c": CANARY},
        config_path=path,
        target_extra={"a": relaxed, "b": relaxed},
    )
    canary = Canary(rig)
    canary.start()
    try:
        before = rig.scrape()
        results: list[Seen] = []
        workers = [
            threading.Thread(target=lambda: results.append(post(rig.url, BODY, stream=True)))
            for _ in range(4)
        ]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 5
        while rig.loop.call(lambda: sum(1 for r in rig.sims["a"].records if r.tokens_sent)) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # The new policy drops target a altogether, while four streams are on it.
        text = path.read_text()
        new = text.replace("targets: [a, b]", "targets: [b]")
        new = new[: new.index("  - name: a")] + new[new.index("  - name: b") :]
        path.write_text(new)
        unfinished = rig.loop.call(
            lambda: sum(1 for r in rig.sims["a"].records if r.finished_at is None)
        )
        assert httpx.post(f"{rig.url}/admin/reload", json={}, timeout=5).status_code == 200
        assert unfinished >= 1  # the reload really landed while streams were on a
        after_reload = post(rig.url, BODY, stream=True)
        for w in workers:
            w.join(10)
        assert len(results) == 4
        full = "".join(f"t{i} " for i in range(20))
        assert all(ok_turn(s, True) == full for s in results)  # finished on the old plan
        assert all(s.headers["x-firsttoken-target"] == "a" for s in results)
        assert after_reload.headers["x-firsttoken-target"] == "b"
        admin = httpx.get(f"{rig.url}/admin/targets", timeout=5).json()
        assert sorted(t["name"] for t in admin["targets"]) == ["b", "c"]

        # A broken file is refused in OpenAI's shape and the running config keeps serving.
        path.write_text("targets: [\n")
        bad = httpx.post(f"{rig.url}/admin/reload", json={}, timeout=5)
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_config"
        assert post(rig.url, BODY, stream=True).headers["x-firsttoken-target"] == "b"
        after = rig.scrape()
        rl = "firsttoken_config_reloads_total"
        assert delta(before, after, rl, outcome="ok") == 1
        assert delta(before, after, rl, outcome="invalid") == 1
        r = "firsttoken_requests_total"
        assert delta(before, after, r, route="chat", target="a", outcome="ok") == 4
    finally:
        results_c = canary.stop()
        stop_rig(rig)
    assert results_c and all(t == CANARY_TEXT for t in results_c)


# -- a client that reads slowly: bounded buffering, others unaffected ---------------------


def rss_bytes() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_slow_reader_is_backpressured_not_buffered(rig: Rig) -> None:
    """uvicorn's flow control pauses `send` when the client's socket is full, the relay
    stops pulling, aiohttp stops reading the upstream, and TCP pushes back on the sim:
    the router holds a bounded amount, whatever the stream's length."""
    total = 2_000_000  # ~300 MB of SSE if nothing pushed back
    rig.set("a", Behaviour(ttft_s=0.0, itl_s=0.0, tokens=total))
    request = json.dumps({**BODY, "stream": True}).encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", rig.running.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        + b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(request)
        + request
    )
    rss_start = rss_bytes()
    read = 0
    try:
        for _ in range(60):  # 1.2 s, 1 KiB every 20 ms
            read += len(sock.recv(1024))
            time.sleep(0.02)
        sent_mid = rig.loop.call(lambda: rig.sims["a"].records[-1].tokens_sent)
        time.sleep(0.3)
        sent_end = rig.loop.call(lambda: rig.sims["a"].records[-1].tokens_sent)
        growth = rss_bytes() - rss_start
    finally:
        sock.close()
    # Each token is ~150 bytes: the whole pipeline holds a few MB of socket buffers.
    assert sent_end < total // 20, f"{sent_end} tokens generated for {read} bytes read"
    assert sent_end - sent_mid < 20_000, "the upstream keeps producing: nothing pushes back"
    assert growth < 64 * 1024 * 1024, f"RSS grew {growth / 1e6:.0f} MB"
    # Closing the socket cancels the upstream.
    assert wait_until(lambda: rig.loop.call(lambda: rig.sims["a"].records[-1].cancelled_at))


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
