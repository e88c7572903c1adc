"""Bad input against the live router: generated bodies, the OpenAPI contract, abusive clients.

Whatever a client sends, the router answers in bounded time with a status from its
contract (no 5xx but 502/503/504, which name an upstream failure) and every error
in OpenAI's shape; and it keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionUserMessageParam
from openapi_spec_validator import validate

from router.config import Config, parse_config
from router.gateway.openapi import openapi_spec
from router.gateway.server import Server
from router.gateway.serving import _config as serving_config
from router.runtime import Router
from router.sim.behaviour import Behaviour
from tests.e2e.harness import LoopThread, wait_until
from tests.e2e.test_faults import Rig, start_rig, stop_rig

Task = asyncio.Task[None]
LIMIT = 65536
JSON = {"content-type": "application/json"}
UPSTREAM_STATUSES = {502, 503, 504}
SPEC = openapi_spec()
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def live(loop_thread: LoopThread) -> Iterator[Rig]:
    rig = start_rig(
        loop_thread,
        {"a": Behaviour(ttft_s=0.0, itl_s=0.0, tokens=3)},
        routes="routes:\n  - name: chat\n    targets: [a]\n",
        target_extra={"a": "timeouts: {first_token_s: 2.0, idle_s: 2.0}"},
        header=f"server: {{max_body_bytes: {LIMIT}}}",
    )
    yield rig
    stop_rig(rig)


@pytest.fixture(scope="module")
def client(live: Rig) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as h:
        yield h


def assert_error_shape(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "code"} <= set(err), body
    assert isinstance(err["message"], str) and isinstance(err["type"], str)
    return err  # type: ignore[no-any-return]


def assert_answered(response: httpx.Response) -> None:
    """The contract for any request: no 5xx but upstream ones, errors in OpenAI's shape,
    a stream that ends in [DONE] or an error event."""
    status = response.status_code
    assert status < 500 or status in UPSTREAM_STATUSES, (status, response.text[:300])
    if status >= 400:
        assert_error_shape(response)
    elif response.headers.get("content-type", "").startswith("text/event-stream"):
        text = response.text
        assert text.endswith("data: [DONE]\n\n") or '"error"' in text.rsplit("data:", 1)[-1]


# -- generated bodies ------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**320)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["chat", "", "\u0000", "\ud800", "🙂" * 5, "a" * 1000])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]) | json_values},
    optional={
        "content": st.text(max_size=50)
        | json_values
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}))
    },
)
near_valid = st.fixed_dictionaries(
    {"model": st.just("chat") | json_values},
    optional={
        "messages": st.lists(message, max_size=3) | json_values,
        "prompt": st.text(max_size=20) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": json_values})
        | json_values,
        "max_tokens": st.integers(min_value=-5, max_value=10**300) | json_values,
        "max_completion_tokens": json_values,
        "temperature": json_values,
        "user": json_values,
        "n": json_values,
    },
)
bodies = near_valid | json_values


def encode(body: object, ascii_only: bool) -> bytes:
    # Lone surrogates survive as \\ud800 escapes, or become invalid UTF-8 on purpose.
    return json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _content_parts(body: object) -> list[object]:
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return []
    return [
        part
        for m in body["messages"]
        if isinstance(m, dict) and isinstance(m.get("content"), list)
        for part in m["content"]
    ]


@SETTINGS
@given(
    body=bodies,
    path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
    ascii_only=st.booleans(),
)
def test_generated_bodies_get_a_contract_answer(
    client: httpx.Client, body: object, path: str, ascii_only: bool
) -> None:
    response = client.post(path, content=encode(body, ascii_only), headers=JSON)
    assert_answered(response)


def test_a_content_part_whose_text_is_not_a_string_is_a_400(client: httpx.Client) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": [{"text": 5}]}]}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert_error_shape(response)


def test_an_absurd_max_tokens_is_a_400(client: httpx.Client) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**400}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert_error_shape(response)


# -- the OpenAPI contract (router/gateway/openapi.py), driven by hypothesis --------------


def resolve(schema: Any, spec: dict[str, Any] = SPEC) -> Any:
    """Inline $refs, and turn OpenAPI's `nullable` into JSON Schema's null type."""
    if isinstance(schema, list):
        return [resolve(s, spec) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return resolve(spec["components"]["schemas"][name], spec)
    out = {k: resolve(v, spec) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid instances of the small JSON Schema subset the spec uses."""
    if "oneOf" in schema or "anyOf" in schema:
        options: list[dict[str, Any]] = schema.get("oneOf") or schema["anyOf"]
        return st.one_of([from_schema(s) for s in options])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in props.items() if k in required},
            optional={k: from_schema(v) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {})), min_size=schema.get("minItems", 0), max_size=3
        )
    if kind == "string":
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        return st.text(min_size=schema.get("minLength", 0), max_size=30)
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=10**6)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return json_values


def check_against_spec(path: str, method: str, response: httpx.Response) -> None:
    operation = SPEC["paths"][path].get(method.lower())
    documented = operation["responses"] if operation else {"405": {}}
    assert str(response.status_code) in documented, (path, method, response.status_code)
    assert_answered(response)
    content = documented[str(response.status_code)].get("content", {})
    ctype = response.headers.get("content-type", "").split(";")[0]
    schema = next((c["schema"] for t, c in content.items() if t.split(";")[0] == ctype), None)
    if ctype == "application/json" and schema is not None:
        jsonschema.validate(response.json(), resolve(schema))


TURNS = {
    "/v1/chat/completions": resolve(SPEC["components"]["schemas"]["ChatCompletionRequest"]),
    "/v1/completions": resolve(SPEC["components"]["schemas"]["CompletionRequest"]),
    "/v1/responses": resolve(SPEC["components"]["schemas"]["ResponsesRequest"]),
    "/v1/embeddings": resolve(SPEC["components"]["schemas"]["EmbeddingsRequest"]),
}


@st.composite
def spec_requests(draw: st.DrawFn, schemas: dict[str, Any] = TURNS) -> tuple[str, dict[str, Any]]:
    """A path of `schemas` and a body its schema allows, naming the route that exists
    half the time."""
    path = draw(st.sampled_from(sorted(schemas)))
    body = draw(from_schema(schemas[path]))
    if draw(st.booleans()):
        body["model"] = "chat"
    return path, body


@settings(SETTINGS, max_examples=50)
@given(request=spec_requests())
def test_spec_valid_turns_get_documented_answers(
    client: httpx.Client, request: tuple[str, dict[str, Any]]
) -> None:
    path, body = request
    check_against_spec(path, "POST", client.post(path, json=body))


#: the calls relayed to one target without a turn, and the schemas of their bodies
RELAYED = {
    "/v1/conversations": resolve(SPEC["components"]["schemas"]["ConversationCreate"]),
    "/v1/responses/input_tokens": resolve(SPEC["components"]["schemas"]["ResponsesCall"]),
    "/v1/responses/compact": resolve(SPEC["components"]["schemas"]["ResponsesCall"]),
    "/v1/moderations": resolve(SPEC["components"]["schemas"]["ModerationRequest"]),
    "/v1/realtime/client_secrets": resolve(SPEC["components"]["schemas"]["ClientSecretRequest"]),
}


@settings(SETTINGS, max_examples=50)
@given(request=spec_requests(RELAYED))
def test_spec_valid_relayed_calls_get_documented_answers(
    client: httpx.Client, request: tuple[str, dict[str, Any]]
) -> None:
    path, body = request
    content = json.dumps(body).encode()  # lone surrogates escaped, as JSON allows
    check_against_spec(path, "POST", client.post(path, content=content, headers=JSON))


def test_every_endpoint_and_method_answers_as_documented(client: httpx.Client) -> None:
    for path in SPEC["paths"]:
        if path == "/admin/reload":
            continue  # the fixture's router has no policy file to reload
        url = path.replace("{id}", "resp_nobody_stored").replace("{model}", "chat")
        url = url.replace("{item_id}", "msg_nobody_stored")
        url = url.replace("{call_id}", "rtc_nobody_placed")
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            check_against_spec(path, method, client.request(method, url))


def test_plain_http_at_the_realtime_endpoint_is_told_to_upgrade(client: httpx.Client) -> None:
    answer = client.get("/v1/realtime", params={"model": "chat"})
    assert answer.status_code == 426
    assert answer.headers["upgrade"] == "websocket"
    assert assert_error_shape(answer)["code"] == "websocket_required"
    wrong = client.post("/v1/realtime", json={})
    assert wrong.status_code == 405
    assert wrong.headers["allow"].startswith("GET")


def test_spec_is_openapi_3_and_every_error_is_the_error_shape() -> None:
    assert SPEC["openapi"].startswith("3.0")
    validate(SPEC)  # OpenAPI 3.0's own schema, $refs resolved (raises on any violation)
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method == "parameters":  # a path's own, shared by its operations
                continue
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path != "/readyz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}


# -- size, depth, content type -----------------------------------------------------------


def test_oversized_bodies_are_413_with_or_without_content_length(client: httpx.Client) -> None:
    big = b'{"model": "chat", "x": "' + b"a" * (LIMIT * 4) + b'"}'
    declared = client.post("/v1/chat/completions", content=big, headers=JSON)
    assert declared.status_code == 413
    assert assert_error_shape(declared)["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    chunked = client.post("/v1/chat/completions", content=chunks(), headers=JSON)
    assert chunked.status_code == 413
    # A huge declared length is refused before any of it is read.
    started = time.monotonic()
    with socket.create_connection(
        ("127.0.0.1", int(str(client.base_url).rsplit(":", 1)[1])), timeout=5
    ) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\ncontent-length: 10000000000\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    assert time.monotonic() - started < 2
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 30_000 + b"]" * 30_000,
        b'{"model": "chat", "messages": [{"role": "user", "content": '
        + b"[" * 70
        + b"]" * 70
        + b"}]}",
        b'{"a": ' * 9_000 + b"1" + b"}" * 9_000,
    ],
    ids=["deep-list", "past-64-levels", "deep-object"],
)
def test_deep_json_is_a_400(client: httpx.Client, content: bytes) -> None:
    response = client.post("/v1/chat/completions", content=content, headers=JSON)
    assert response.status_code == 400
    assert assert_error_shape(response)["code"] == "invalid_request"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/conversations",
        "/v1/conversations/conv_x/items",
        "/v1/responses/input_tokens",
        "/v1/responses/compact",
        "/v1/moderations",
        "/v1/realtime/client_secrets",
    ],
)
@pytest.mark.parametrize(
    "content",
    [b"[" * 30_000 + b"]" * 30_000, b'{"model": "chat", "input": NaN, "items": [Infinity]}'],
    ids=["deep", "not-a-number"],
)
def test_json_the_relayed_endpoints_cannot_pass_on_is_a_400(
    client: httpx.Client, path: str, content: bytes
) -> None:
    response = client.post(path, content=content, headers=JSON)
    assert response.status_code == 400, response.text
    assert assert_error_shape(response)["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("content_type", "content", "status"),
    [
        # What a web page can send without a CORS preflight is refused: text/plain,
        # a form, a multipart body, and a blob with no type at all.
        ("text/plain", b'{"model": "chat", "messages": [{"role": "user", "content": "x"}]}', 415),
        (None, b'{"model": "chat", "messages": [{"role": "user", "content": "x"}]}', 415),
        ("application/x-www-form-urlencoded", b"model=chat&messages=x", 415),
        ("multipart/form-data; boundary=x", b"--x\r\ncontent-disposition: form-data\r\n\r\n", 415),
        (
            "Application/JSON; charset=utf-8",
            b'{"model": "chat", "messages": [{"role": "user"}]}',
            200,
        ),
        ("application/json", b"\xff\xfe\x00garbage", 400),
        ("application/json", b"", 400),
    ],
    ids=["text-plain", "none", "form", "multipart", "json-with-charset", "binary", "empty"],
)
def test_wrong_content_types(
    client: httpx.Client, content_type: str | None, content: bytes, status: int
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/chat/completions", content=content, headers=headers)
    assert response.status_code == status
    assert_answered(response)


# -- abusive clients, against the production uvicorn settings (gateway/serving.py) --------


def start_served(loop_thread: LoopThread, config: Config) -> tuple[uvicorn.Server, Task]:
    """A router with `firsttoken serve`'s uvicorn settings (router/gateway/serving.py)."""
    server = uvicorn.Server(serving_config(Server(Router(config)), "127.0.0.1", 0, "warning", "on"))
    task = loop_thread.call(lambda: asyncio.get_running_loop().create_task(server.serve()))
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "the router did not start"
        time.sleep(0.01)
    return server, task


@pytest.fixture(scope="module")
def served(loop_thread: LoopThread, live: Rig) -> Iterator[int]:
    """The router with `firsttoken serve`'s uvicorn settings, in front of the live sim."""
    text = (
        "server: {max_body_bytes: 65536}\ntargets:\n"
        f"  - {{name: a, kind: openai, base_url: '{live.sims['a'].base_url}', model: m}}\n"
        "routes:\n  - {name: chat, targets: [a]}\n"
    )
    server, task = start_served(loop_thread, parse_config(text))
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    loop_thread.run(asyncio.wait_for(task, 10))


def serves_others(port: int) -> bool:
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.Client(timeout=5) as h:
        r = h.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
    return r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")


def raw_exchange(port: int, head: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            return sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            return b""


def test_a_client_leaving_cancels_the_upstream_on_the_served_router(
    served: int, live: Rig, loop_thread: LoopThread
) -> None:
    """With `firsttoken serve`'s own protocol the turn learns of a lost connection from
    the scope's `DisconnectWatch` (no task waits on `receive()`): mid-stream and before
    the first token alike, the target sees the cancel."""
    sim = live.sims["a"]
    cancelled = lambda: sim.records[-1].cancelled_at is not None  # noqa: E731
    messages: list[ChatCompletionUserMessageParam] = [{"role": "user", "content": "x"}]
    try:
        loop_thread.run(sim.set_behaviour(Behaviour(ttft_s=0.02, itl_s=0.05, tokens=200)))
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{served}/v1", api_key="unused", max_retries=0
        )
        stream = client.chat.completions.create(model="chat", messages=messages, stream=True)
        for n, _ in enumerate(stream):
            if n == 3:
                break
        stream.close()
        assert wait_until(loop_thread, cancelled, timeout=5)
        assert sim.records[-1].tokens_sent < 200

        loop_thread.run(sim.set_behaviour(Behaviour(ttft_s=0.8, itl_s=0.01, tokens=5)))
        body = {"model": "chat", "messages": messages, "stream": True}
        with httpx.Client(timeout=0.2) as h, pytest.raises(httpx.ReadTimeout):
            h.post(f"http://127.0.0.1:{served}/v1/chat/completions", json=body)
        assert wait_until(loop_thread, cancelled, timeout=5)
    finally:
        loop_thread.run(sim.set_behaviour(Behaviour(ttft_s=0.0, itl_s=0.0, tokens=3)))
    assert serves_others(served)


def test_hundreds_of_headers_are_served_and_others_unaffected(served: int) -> None:
    head = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n"
    head += b"".join(b"x-h%d: v\r\n" % i for i in range(500)) + b"\r\n"
    assert raw_exchange(served, head).startswith(b"HTTP/1.1 200")
    assert serves_others(served)


def test_a_huge_header_block_is_refused(served: int) -> None:
    head = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * 4_000_000 + b"\r\n\r\n"
    answer = raw_exchange(served, head)
    assert serves_others(served)
    assert not answer.startswith(b"HTTP/1.1 200")


def json_error_of(answer: bytes) -> tuple[int, dict[str, Any]]:
    """The status and error of a raw HTTP answer, which must be in the API's shape."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    error = json.loads(body)["error"]
    assert {"message", "type", "code"} <= set(error)
    return status, error


HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (HEAD + b"content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n{}", 400),
        (HEAD + b"content-length: 2\r\ncontent-length: 3\r\n\r\n{}", 400),
        (HEAD + b"x-a: b\rc\r\ncontent-length: 2\r\n\r\n{}", 400),
        (HEAD + b"x-a: b\x00c\r\ncontent-length: 2\r\n\r\n{}", 400),
        (HEAD + b"x-big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n" + b"x-h: v\r\n" * 9000 + b"\r\n", 431),
    ],
    ids=["cl-and-te", "two-cl", "cr-in-header", "nul-in-header", "big-header", "many-headers"],
)
def test_what_the_http_parser_refuses_is_answered_in_the_api_shape(
    served: int, request_bytes: bytes, status: int
) -> None:
    answer = b""
    with socket.create_connection(("127.0.0.1", served), timeout=5) as sock:
        sock.sendall(request_bytes)
        while chunk := sock.recv(65536):
            answer += chunk
    got, error = json_error_of(answer)
    assert got == status
    assert error["code"] in ("malformed_http_request", "request_header_fields_too_large")
    assert serves_others(served)


def test_slowloris_connections_do_not_stop_others(served: int) -> None:
    socks = []
    try:
        for _ in range(100):  # each sends a partial head, then a byte now and then
            s = socket.create_connection(("127.0.0.1", served), timeout=5)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
            socks.append(s)
        for _ in range(5):
            for s in socks:
                s.sendall(b"a")
            assert serves_others(served)
            time.sleep(0.05)
        # A slow body, too: headers complete, a byte of body now and then.
        body_sock = socket.create_connection(("127.0.0.1", served), timeout=5)
        socks.append(body_sock)
        body_sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"
        )
        for _ in range(5):
            body_sock.sendall(b" ")
            assert serves_others(served)
            time.sleep(0.05)
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("phase", ["head", "body", "second-head"])
def test_a_client_that_never_finishes_its_request_is_timed_out(
    loop_thread: LoopThread, live: Rig, phase: str
) -> None:
    text = (
        "server: {client_timeout_s: 0.5}\ntargets:\n"
        f"  - {{name: a, kind: openai, base_url: '{live.sims['a'].base_url}', model: m}}\n"
        "routes:\n  - {name: chat, targets: [a]}\n"
    )
    config = parse_config(text)
    server, task = start_served(loop_thread, config)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        head += (
            b"x-slow: a"
            if phase in ("head", "second-head")
            else b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            if phase == "second-head":  # a kept-alive connection's next head dribbles
                sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            sock.sendall(head)
            started = time.monotonic()
            answer = sock.recv(4096)  # a 408, or the connection closed
            assert math.isclose(time.monotonic() - started, 0.5, abs_tol=0.5)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
    finally:
        server.should_exit = True
        loop_thread.run(asyncio.wait_for(task, 10))
