"""Hostile input and hostile pages against the live router (issue 15).

A web page must never drive the router (Host allow-list, JSON-only POSTs, Origin
refused unless CORS allows it), one large request must never stall everyone, and
every answer, even a refusal, is in the API's error shape.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from router.looplag import IDLE_INTERVAL_S, INTERVAL_S
from router.sim.behaviour import Behaviour
from tests.e2e.harness import Fleet, LoopThread, start_fleet, stop_fleet

APP = "https://app.example.com"
JSON = {"content-type": "application/json"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
TINY = b'{"role":"user","content":"a"},'


@pytest.fixture(scope="module")
def fleet(loop_thread: LoopThread) -> Iterator[Fleet]:
    f = start_fleet(
        loop_thread,
        {"a": Behaviour(ttft_s=0.005, itl_s=0.001, tokens=3)},
        "routes:\n  - name: chat\n    targets: [a]\n",
        header=f"server: {{cors: {{allow_origins: ['{APP}']}}, allowed_hosts: [router.test]}}",
    )
    yield f
    stop_fleet(f)


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


def test_a_rebound_name_reads_nothing_and_starts_nothing(fleet: Fleet) -> None:
    """DNS rebinding: the page's own name arrives as Host."""
    before = len(fleet.sim("a").records)
    evil = {"host": f"evil.example:{fleet.router.port}"}
    for path in ("/admin/targets", "/metrics", "/v1/models", "/healthz"):
        response = httpx.get(fleet.router.url + path, headers=evil)
        assert response.status_code == 403, path
        assert error_of(response)["code"] == "host_not_allowed"
    turn = httpx.post(f"{fleet.router.base_url}/chat/completions", json=CHAT, headers=evil)
    assert turn.status_code == 403
    assert len(fleet.sim("a").records) == before
    # The names the config lists, and loopback ones, are served.
    for host in ("router.test", "localhost:1", f"127.0.0.1:{fleet.router.port}"):
        assert httpx.get(f"{fleet.router.url}/healthz", headers={"host": host}).status_code == 200


def test_a_page_cannot_start_a_turn_without_a_preflight(fleet: Fleet) -> None:
    """What a page can send without a preflight: a text/plain (or typeless) body, from
    its own Origin. Both are refused before the body is read."""
    before = len(fleet.sim("a").records)
    url = f"{fleet.router.base_url}/chat/completions"
    body = json.dumps(CHAT).encode()
    plain = httpx.post(url, content=body, headers={"content-type": "text/plain"})
    assert plain.status_code == 415 and error_of(plain)["code"] == "unsupported_media_type"
    page = httpx.post(url, content=body, headers={**JSON, "origin": "https://evil.example"})
    assert page.status_code == 403 and error_of(page)["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in page.headers
    assert len(fleet.sim("a").records) == before


def test_an_allowed_origin_gets_proper_cors_answers(fleet: Fleet) -> None:
    url = f"{fleet.router.base_url}/chat/completions"
    preflight = httpx.options(
        url,
        headers={
            "origin": APP,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == APP
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"]
    assert "authorization" in allowed and "content-type" in allowed
    refused = httpx.options(url, headers={"origin": "https://evil.example"})
    assert refused.status_code == 403
    # The turn itself, streamed, and an error: both readable by the page.
    with httpx.stream(
        "POST", url, json={**CHAT, "stream": True}, headers={"origin": APP}
    ) as stream:
        assert stream.headers["access-control-allow-origin"] == APP
        assert "x-firsttoken-target" in stream.headers["access-control-expose-headers"]
        assert "".join(stream.iter_text()).endswith("data: [DONE]\n\n")
    missing = httpx.post(url, json={**CHAT, "model": "nope"}, headers={"origin": APP})
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == APP


def test_every_405_says_which_methods_the_endpoint_takes(fleet: Fleet) -> None:
    cases = {
        "/v1/chat/completions": ("PUT", "POST, GET, HEAD, OPTIONS"),  # GET: stored ones
        "/v1/completions": ("PUT", "POST, OPTIONS"),
        "/v1/models": ("POST", "GET, HEAD, OPTIONS"),
        "/healthz": ("DELETE", "GET, HEAD, OPTIONS"),
        "/metrics": ("PATCH", "GET, HEAD, OPTIONS"),
    }
    for path, (method, allow) in cases.items():
        response = httpx.request(method, fleet.router.url + path)
        assert response.status_code == 405, path
        assert response.headers["allow"] == allow, path
        assert error_of(response)["code"] == "method_not_allowed"
    plain = httpx.options(f"{fleet.router.url}/v1/models")
    assert (plain.status_code, plain.headers["allow"]) == (204, "GET, HEAD, OPTIONS")


@pytest.mark.parametrize(
    "number", [b"1e999", b"-1E400", b"NaN", b"Infinity", b"[1, 2.5e308]"], ids=str
)
def test_a_number_json_cannot_carry_is_a_400_and_never_reaches_a_target(
    fleet: Fleet, number: bytes
) -> None:
    before = len(fleet.sim("a").records)
    raw = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": '
    response = httpx.post(
        f"{fleet.router.base_url}/chat/completions", content=raw + number + b"}", headers=JSON
    )
    assert response.status_code == 400 and error_of(response)["type"] == "invalid_request_error"
    assert len(fleet.sim("a").records) == before


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        ("req-2f6c9e1d-7b3a", True),
        ("0123456789abcdef" * 8, True),  # 128 characters
        ("0123456789abcdef" * 8 + "x", False),
        ("has space", False),
        ("tab\tinside", False),
        ("é-not-ascii", False),
    ],
    ids=["uuid-like", "128", "129", "space", "tab", "non-ascii"],
)
def test_only_a_short_printable_request_id_goes_upstream(
    fleet: Fleet, sent: str, forwarded: bool
) -> None:
    response = httpx.post(
        f"{fleet.router.base_url}/chat/completions",
        json=CHAT,
        headers={b"x-request-id": sent.encode("utf-8")},
    )
    assert response.status_code == 200
    upstream = fleet.sim("a").records[-1].headers["x-request-id"]
    if forwarded:
        assert upstream == sent
    else:  # replaced by the router's own id
        assert upstream != sent and 0 < len(upstream) <= 64
        assert upstream.isascii() and " " not in upstream


def test_large_hostile_bodies_are_answered_and_streams_in_flight_finish(fleet: Fleet) -> None:
    """The issue's stall: 4 MiB of tiny messages, to an unknown model and to the route
    (over `max_messages`: both refused on the count), and 4 MiB of fewer, longer
    messages to an unknown model (refused on the model, at the end of the body)."""
    n = (4 * 2**20 - 64) // len(TINY)  # just under server.max_body_bytes
    messages = b"[" + TINY * n + TINY[:-1] + b"]"
    long = b'{"role":"user","content":"' + b"a" * 4000 + b'"},'
    few = b"[" + long * 1000 + long[:-1] + b"]"
    unknown = b'{"messages":' + few + b',"model":"nope"}'
    too_many = b'{"messages":' + messages + b',"model":"chat"}'
    fleet.set_behaviour("a", Behaviour(ttft_s=0.01, itl_s=0.01, tokens=40))
    c = openai.OpenAI(base_url=fleet.router.base_url, api_key="unused", max_retries=0)
    texts: list[str] = []

    def stream() -> None:
        chunks = c.chat.completions.create(
            model="chat", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
        texts.append("".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices))

    streams = [threading.Thread(target=stream) for _ in range(4)]
    for t in streams:
        t.start()
    url = f"{fleet.router.base_url}/chat/completions"
    with httpx.Client(timeout=30, headers=JSON) as h:
        missing = h.post(url, content=unknown)
        over = h.post(url, content=too_many)
        over_unknown = h.post(url, content=too_many.replace(b'"chat"', b'"nope"'))
    for t in streams:
        t.join(30)
    fleet.set_behaviour("a", Behaviour(ttft_s=0.005, itl_s=0.001, tokens=3))
    assert missing.status_code == 404 and "chat" in str(error_of(missing)["message"])
    assert over.status_code == 400 and "2048" in str(error_of(over)["message"])
    assert over_unknown.status_code == 400 and "2048" in str(error_of(over_unknown)["message"])
    assert texts == ["".join(f"t{i} " for i in range(40))] * 4
    state = fleet.loop.call(lambda: fleet.router.router.runtime.signals["a"].breaker.state)
    assert state == "closed"


def test_the_event_loop_lag_is_a_metric(fleet: Fleet) -> None:
    def lag_sum() -> float:
        text = httpx.get(f"{fleet.router.url}/metrics").text
        for family in text_string_to_metric_families(text):
            if family.name == "firsttoken_event_loop_lag_seconds":
                return next(s.value for s in family.samples if s.name.endswith("_sum"))
        raise AssertionError("no firsttoken_event_loop_lag_seconds")

    # a turn in flight: the sampler keeps its INTERVAL_S pace (idle, it samples every
    # IDLE_INTERVAL_S and may miss a short stall)
    fleet.set_behaviour("a", Behaviour(ttft_s=4.0, itl_s=0.001, tokens=3))
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3}
    slow = threading.Thread(
        target=lambda: httpx.post(
            f"{fleet.router.base_url}/chat/completions", json=body, timeout=30
        )
    )
    slow.start()
    try:
        assert fleet.wait_for(lambda: fleet.router.router.active_turns > 0)
        time.sleep(IDLE_INTERVAL_S + INTERVAL_S)  # the idle pace's last tick has run
        before = lag_sum()
        stall_s = 0.5
        fleet.loop.call(lambda: time.sleep(stall_s))  # the router's loop stalls
        # the sampler's timer was due somewhere in the stall's first INTERVAL_S, so the
        # lag it records is between stall_s - INTERVAL_S and stall_s
        shown = stall_s - INTERVAL_S - 0.05
        deadline = time.monotonic() + 5
        while lag_sum() - before < shown:
            assert time.monotonic() < deadline, "the stall did not show in the lag metric"
            time.sleep(0.05)
    finally:
        slow.join(30)
        fleet.set_behaviour("a", Behaviour(ttft_s=0.005, itl_s=0.001, tokens=3))


async def refusal(url: str, **options: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, **options):
            pass
    response = info.value.response
    return response.status_code, json.loads(response.body or b"{}")


@pytest.mark.anyio
async def test_a_page_on_another_site_cannot_open_a_realtime_session(fleet: Fleet) -> None:
    """Cross-site WebSocket hijacking: browsers send their page's Origin on an upgrade."""
    url = f"ws://127.0.0.1:{fleet.router.port}/v1/realtime?model=chat"
    status, body = await refusal(url, origin=Origin("https://evil.example"))
    assert (status, body["error"]["code"]) == (403, "origin_not_allowed")
    # Past the guard (no Origin, or an allowed one) the endpoint itself answers.
    for options in ({}, {"origin": Origin(APP)}):
        status, body = await refusal(url, **options)
        assert (status, body["error"]["code"]) == (404, "model_not_found")


def upload(
    total: int, head: bytes, sent: list[int], hold: threading.Event | None = None
) -> Iterator[bytes]:
    """A body of `total` bytes starting with `head`, then tiny messages, in 64 KiB
    chunks; counts what the client got to send, and pauses half-way while `hold`
    is clear."""
    body = head + TINY * ((total - len(head)) // len(TINY) + 1)
    for at in range(0, total, 65536):
        if hold is not None and at >= total // 2:
            assert hold.wait(10)
        chunk = body[at : min(at + 65536, total)]
        sent.append(len(chunk))
        yield chunk


def test_a_body_over_the_limit_by_its_length_is_refused_before_it_is_read(fleet: Fleet) -> None:
    declared = 256 * 2**20  # server.max_body_bytes is 4 MiB
    sent: list[int] = []
    with httpx.Client(timeout=30) as h:
        response = h.post(
            f"{fleet.router.base_url}/chat/completions",
            content=upload(declared, b'{"model":"chat","messages":[', sent),
            headers={**JSON, "content-length": str(declared)},
        )
    assert response.status_code == 413 and error_of(response)["code"] == "payload_too_large"
    assert response.headers["connection"] == "close"
    # Far less than the limit reached the router: it answered on the length alone.
    assert sum(sent) < 4 * 2**20


def test_an_unknown_model_at_the_start_of_a_large_body_is_refused_before_the_rest(
    fleet: Fleet,
) -> None:
    """Refused on its first few KiB: the answer closes the connection (which the
    router does only when it stops reading a body part-way)."""
    total = 4 * 2**20 - 64
    sent: list[int] = []
    with httpx.Client(timeout=30) as h:
        response = h.post(
            f"{fleet.router.base_url}/chat/completions",
            content=upload(total, b'{"model": "nope", "messages": [', sent),
            headers={**JSON, "content-length": str(total)},
        )
    assert response.status_code == 404
    assert "routes here: chat" in str(error_of(response)["message"])
    assert response.headers["connection"] == "close"
    # The same body with the model last is read whole: answered, the connection kept.
    long = b'{"role":"user","content":"' + b"a" * 4000 + b'"},'  # within max_messages
    body = b'{"messages": [' + long * 1000 + long[:-1] + b'], "model": "nope"}'
    with httpx.Client(timeout=30) as h:
        last = h.post(f"{fleet.router.base_url}/chat/completions", content=body, headers=JSON)
    assert last.status_code == 404 and "connection" not in last.headers


def test_too_many_messages_at_the_start_of_a_large_body_are_refused_before_the_rest(
    fleet: Fleet,
) -> None:
    """4 MiB of tiny messages with the model last (the SDKs' order): over
    `max_messages` in its first KiB, so refused there, not after 4 MiB arrived: the
    answer closes the connection. (A body whose messages are within the limit is read
    whole: `test_a_streams_first_token_does_not_wait_for_an_upload_in_flight`.)"""
    total = 4 * 2**20 - 64
    sent: list[int] = []
    with httpx.Client(timeout=30) as h:
        response = h.post(
            f"{fleet.router.base_url}/chat/completions",
            content=upload(total, b'{"messages": [', sent),
            headers={**JSON, "content-length": str(total)},
        )
    assert response.status_code == 400 and "2048" in str(error_of(response)["message"])
    # Said only when the router stops reading a body part-way (how much the client
    # got to write first depends on the kernel's socket buffers: up to megabytes).
    assert response.headers["connection"] == "close"


def test_a_streams_first_token_does_not_wait_for_an_upload_in_flight(fleet: Fleet) -> None:
    """A client uploading a large body, paused half-way: a stream that starts after
    it begins gets its first token, and its whole answer, before the upload ends."""
    total = 4 * 2**20 - 64
    sent: list[int] = []
    release = threading.Event()
    answers: list[httpx.Response] = []

    def slow_upload() -> None:
        with httpx.Client(timeout=30) as h:
            answers.append(
                h.post(
                    f"{fleet.router.base_url}/chat/completions",
                    content=upload(total, b'{"stream": true, "messages": [', sent, release),
                    headers={**JSON, "content-length": str(total)},
                )
            )

    uploader = threading.Thread(target=slow_upload)
    uploader.start()
    try:
        deadline = time.monotonic() + 10
        while sum(sent) < total // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        c = openai.OpenAI(base_url=fleet.router.base_url, api_key="unused", max_retries=0)
        events = []
        for chunk in c.chat.completions.create(
            model="chat", stream=True, messages=[{"role": "user", "content": "hi"}]
        ):
            events.append(("token", sum(sent), bool(answers)))
            assert chunk.choices is not None
    finally:
        release.set()
        uploader.join(30)
    assert events and all(offered < total and not done for _, offered, done in events)
    # The upload then completes and is answered (the body names no model: a 400).
    assert sum(sent) == total and answers[0].status_code == 400
