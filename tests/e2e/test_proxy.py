"""The foundation, end to end: the official `openai` SDK -> router -> simulator upstreams."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import openai
import pytest

from router.sim.behaviour import Behaviour, Fault
from tests.e2e.harness import Fleet, LoopThread, start_fleet, stop_fleet

FAST = Behaviour(ttft_s=0.02, itl_s=0.005, tokens=8)
JSON = {"content-type": "application/json"}
EXPECTED = [f"t{i} " for i in range(8)]
ROUTES = """
routes:
  - name: chat
    targets: [a, b]
    policy: {type: ordered}
"""
TIMEOUTS = "timeouts: {first_token_s: 1.0, total_s: 1.0}"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello there"}
]


@pytest.fixture
def fleet(loop_thread: LoopThread) -> Iterator[Fleet]:
    f = start_fleet(
        loop_thread,
        {"a": FAST, "b": FAST},
        ROUTES,
        target_extra={"a": TIMEOUTS, "b": TIMEOUTS},
        header="server: {max_body_bytes: 65536}",
    )
    yield f
    stop_fleet(f)


def client(fleet: Fleet) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.router.base_url, api_key="unused", max_retries=0)


def stream_text(c: openai.OpenAI, **kwargs: object) -> list[str]:
    stream = c.chat.completions.create(model="chat", messages=MESSAGES, stream=True, **kwargs)  # type: ignore[call-overload]
    return [
        ch.choices[0].delta.content for ch in stream if ch.choices and ch.choices[0].delta.content
    ]


def records(fleet: Fleet, name: str) -> list[object]:
    return fleet.loop.call(lambda: list(fleet.sim(name).records))


# -- the happy path ------------------------------------------------------------------------


def test_sync_sdk_streams_content_intact_and_in_order(fleet: Fleet) -> None:
    c = client(fleet)
    with c.chat.completions.with_streaming_response.create(
        model="chat", messages=MESSAGES, stream=True
    ) as response:
        assert response.headers["x-firsttoken-target"] == "a"
        assert response.headers["x-firsttoken-attempts"] == "1"
        assert response.headers["x-firsttoken-reason"].startswith("ordered")
        chunks = list(response.parse())
    text = [
        ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content
    ]
    assert text == EXPECTED
    # The usage chunk was asked for upstream but not by the client: it is not passed on.
    assert all(ch.usage is None for ch in chunks)
    upstream = fleet.sim("a").records[-1]
    assert upstream.body["model"] == "a-model"
    assert upstream.body["stream_options"] == {"include_usage": True}


def test_sync_sdk_non_streaming(fleet: Fleet) -> None:
    response = client(fleet).chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES
    )
    completion = response.parse()
    assert completion.choices[0].message.content == "".join(EXPECTED)
    assert response.headers["x-firsttoken-target"] == "a"
    assert completion.usage is not None and completion.usage.completion_tokens == 8


def test_usage_chunk_reaches_a_client_that_asked(fleet: Fleet) -> None:
    stream = client(fleet).chat.completions.create(
        model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].choices == []


def test_async_sdk_streaming_and_not(fleet: Fleet) -> None:
    async def run() -> tuple[list[str], str | None]:
        async with openai.AsyncOpenAI(
            base_url=fleet.router.base_url, api_key="unused", max_retries=0
        ) as c:
            stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
            text = [
                ch.choices[0].delta.content
                async for ch in stream
                if ch.choices and ch.choices[0].delta.content
            ]
            whole = await c.chat.completions.create(model="chat", messages=MESSAGES)
            return text, whole.choices[0].message.content

    text, whole = asyncio.run(run())
    assert text == EXPECTED
    assert whole == "".join(EXPECTED)


def test_legacy_completions_stream_and_not(fleet: Fleet) -> None:
    c = client(fleet)
    streamed = [
        ch.choices[0].text
        for ch in c.completions.create(model="chat", prompt="hi", stream=True)
        if ch.choices and ch.choices[0].text
    ]
    assert streamed == EXPECTED
    assert c.completions.create(model="chat", prompt="hi").choices[0].text == "".join(EXPECTED)


def test_models_and_health(fleet: Fleet) -> None:
    assert [m.id for m in client(fleet).models.list()] == ["chat"]
    # client.models.retrieve(), as frameworks call it to check a model before using it;
    # closed, not left to the collector (an error's traceback puts a client in a cycle)
    with client(fleet) as c:
        model = c.models.retrieve("chat")
        assert (model.id, model.object) == ("chat", "model")
        assert model.model_extra is not None and "chat" in model.model_extra["capabilities"]
        with pytest.raises(openai.NotFoundError) as missing:
            c.models.retrieve("gpt-5")
    assert missing.value.code == "model_not_found"
    assert "routes here: chat" in missing.value.message
    with httpx.Client(base_url=fleet.router.url) as h:
        assert h.get("/healthz").status_code == 200
        assert h.get("/readyz").status_code == 200
        # vLLM's /health, which load tools such as guidellm probe first: 200, no body.
        health = h.get("/health")
        assert (health.status_code, health.content) == (200, b"")
        assert "content-type" not in health.headers


# -- failures before the first token move the turn on, invisibly -------------------------

BEFORE_FIRST_TOKEN = [
    Fault("refuse"),
    Fault("status", status=500),
    Fault("status", status=503),
    Fault("rate_limited", retry_after_s=1),
    Fault("hang_before_headers"),
    Fault("hang_before_first_token"),
    Fault("malformed"),
    Fault("reset_after_headers"),
    Fault("die_after", after_tokens=0),
]


# A unary answer has no first-token phase: its stream-only faults are left out.
FAILOVER_CASES = [(True, f) for f in BEFORE_FIRST_TOKEN] + [
    (False, f)
    for f in BEFORE_FIRST_TOKEN
    if f.kind not in ("hang_before_first_token", "malformed", "die_after")
]


@pytest.mark.parametrize(
    ("stream", "fault"),
    FAILOVER_CASES,
    ids=[f"{'stream' if st else 'unary'}-{f.kind}{f.status}" for st, f in FAILOVER_CASES],
)
def test_failure_before_first_token_falls_back(fleet: Fleet, stream: bool, fault: Fault) -> None:
    fleet.set_behaviour("a", Behaviour(ttft_s=0.02, itl_s=0.005, tokens=8, fault=fault))
    c = client(fleet)
    if stream:
        with c.chat.completions.with_streaming_response.create(
            model="chat", messages=MESSAGES, stream=True
        ) as response:
            headers = response.headers
            text = [
                ch.choices[0].delta.content
                for ch in response.parse()
                if ch.choices and ch.choices[0].delta.content
            ]
    else:
        raw = c.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
        headers = raw.headers
        text = [raw.parse().choices[0].message.content or ""]
    assert (headers["x-firsttoken-target"], headers["x-firsttoken-attempts"]) == ("b", "2")
    assert "fell back" in headers["x-firsttoken-reason"]
    assert "".join(text) == "".join(EXPECTED)


# -- failures after the first token cannot be hidden -------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault("die_after", after_tokens=3), Fault("error_event_after", after_tokens=3)],
    ids=["die_after", "error_event_after"],
)
def test_failure_after_first_token_ends_with_an_error_event(fleet: Fleet, fault: Fault) -> None:
    fleet.set_behaviour("a", Behaviour(ttft_s=0.02, itl_s=0.005, tokens=8, fault=fault))
    got: list[str] = []
    with client(fleet) as c, pytest.raises(openai.APIError):
        for ch in c.chat.completions.create(model="chat", messages=MESSAGES, stream=True):
            if ch.choices and ch.choices[0].delta.content:
                got.append(ch.choices[0].delta.content)
    assert got == EXPECTED[:3]
    assert len(fleet.sim("b").records) == 0  # no silent switch mid-answer


# -- the client going away cancels the upstream -----------------------------------------


def test_client_disconnect_cancels_upstream(fleet: Fleet) -> None:
    fleet.set_behaviour("a", Behaviour(ttft_s=0.02, itl_s=0.05, tokens=200))
    c = client(fleet)
    stream = c.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
    for n, _ in enumerate(stream):
        if n == 3:
            break
    stream.close()
    assert fleet.wait_for(lambda: fleet.sim("a").records[-1].cancelled_at is not None, timeout=5)
    record = fleet.sim("a").records[-1]
    assert record.tokens_sent < 200


def test_client_disconnect_before_first_token_cancels_upstream(fleet: Fleet) -> None:
    fleet.set_behaviour("a", Behaviour(ttft_s=0.8, itl_s=0.01, tokens=5))
    with (
        httpx.Client(base_url=fleet.router.base_url, timeout=0.2) as h,
        pytest.raises(httpx.ReadTimeout),
    ):
        h.post("/chat/completions", json={"model": "chat", "messages": MESSAGES, "stream": True})
    assert fleet.wait_for(lambda: fleet.sim("a").records[-1].cancelled_at is not None, timeout=5)


# -- bad input: the right status and OpenAI's error shape, and nobody else hurt ----------


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    assert {"message", "type", "code"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        ("POST", "/v1/chat/completions", b"{not json", 400, "invalid_request"),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400, "invalid_request"),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}]}',
            400,
            "invalid_request",
        ),
        ("POST", "/v1/chat/completions", b'{"model": "chat"}', 400, "invalid_request"),
        (
            "POST",
            "/v1/chat/completions",
            b'{"model": "chat", "messages": [], "stream": "yes"}',
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model_not_found",
        ),
        ("PUT", "/v1/chat/completions", b"", 405, "method_not_allowed"),
        ("POST", "/v1/models", b"", 405, "method_not_allowed"),
        ("GET", "/v1/nowhere", b"", 404, "not_found"),
        (
            "POST",
            "/v1/chat/completions",
            b'{"model": "chat", "x": "' + b"a" * 70000 + b'"}',
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"model": "chat", "messages": ' + b"[" * 200 + b"]" * 200 + b"}",
            400,
            "invalid_request",
        ),
    ],
    ids=[
        "bad-json",
        "not-object",
        "no-model",
        "no-messages",
        "bad-stream",
        "unknown-model",
        "wrong-method",
        "wrong-method-models",
        "no-endpoint",
        "too-large",
        "too-deep",
    ],
)
def test_bad_input_gets_status_and_openai_error_shape(  # noqa: PLR0917
    fleet: Fleet, method: str, path: str, content: bytes, status: int, code: str
) -> None:
    with httpx.Client(base_url=fleet.router.url) as h:
        response = h.request(
            method, path, content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == status
    assert _error(response)["code"] == code


def test_all_targets_failing_is_502_and_all_timing_out_is_504(fleet: Fleet) -> None:
    for name in ("a", "b"):
        fleet.set_behaviour(name, Behaviour(fault=Fault("status", status=500)))
    with httpx.Client(base_url=fleet.router.base_url) as h:
        response = h.post(
            "/chat/completions", json={"model": "chat", "messages": MESSAGES, "stream": True}
        )
        assert response.status_code == 502
        assert _error(response)["code"] == "all_targets_failed"
        for name in ("a", "b"):
            fleet.set_behaviour(name, Behaviour(fault=Fault("hang_before_first_token")))
        response = h.post(
            "/chat/completions", json={"model": "chat", "messages": MESSAGES, "stream": True}
        )
        assert response.status_code == 504


def test_a_bad_request_upstream_is_not_retried_elsewhere(fleet: Fleet) -> None:
    fleet.set_behaviour(
        "a", Behaviour(fault=Fault("status", status=400, message="max_tokens is too large"))
    )
    with httpx.Client(base_url=fleet.router.base_url) as h:
        response = h.post("/chat/completions", json={"model": "chat", "messages": MESSAGES})
    assert response.status_code == 400
    assert "max_tokens is too large" in str(_error(response)["message"])
    assert len(fleet.sim("b").records) == 0


def test_bad_clients_do_not_disturb_a_stream_in_flight(fleet: Fleet) -> None:
    fleet.set_behaviour("a", Behaviour(ttft_s=0.02, itl_s=0.02, tokens=30))
    result: list[str] = []

    def long_stream() -> None:
        result.extend(stream_text(client(fleet)))

    worker = threading.Thread(target=long_stream)
    worker.start()
    with httpx.Client(base_url=fleet.router.url) as h:
        for _ in range(20):
            broken = h.post("/v1/chat/completions", content=b"{broken", headers=JSON)
            assert broken.status_code == 400
            assert h.put("/v1/chat/completions").status_code == 405
    worker.join(10)
    assert result == [f"t{i} " for i in range(30)]
