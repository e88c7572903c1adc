"""The Responses dialect: the commit point, the end, the usage, and the events a broken
stream ends with, checked against openai-python's own types."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import anyio
import pytest
from openai.types.responses import (
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseStreamEvent,
)
from pydantic import TypeAdapter

from router import jsontext
from router.build import is_compiled
from router.turn.responses_wire import RESPONSES, created_response, failure_events, sniffed_type
from router.turn.sse import Frame, MalformedFrame, split_events
from tests.turn.fakes import CONFIG, FakeUpstream, RecordingSink, Reply, Rig

#: a compiled build's callers (make compile) call module functions without looking them
#: up, so a spy on one sees nothing: what these tests watch is the same code, tested in
#: the source build (make test)
SPIES_SEE_NOTHING = pytest.mark.skipif(
    is_compiled("router.turn.responses_wire"), reason="compiled: module functions are bound"
)

RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "status": "in_progress",
    "model": "gpt-x",
    "output": [],
    "usage": None,
    "error": None,
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
}
STREAM_EVENTS = TypeAdapter(ResponseStreamEvent)


def event(kind: str, seq: int = 0, *, framed: bool = True, **fields: Any) -> bytes:
    data = json.dumps({"type": kind, **fields, "sequence_number": seq}).encode()
    head = b"event: " + kind.encode() + b"\n" if framed else b""
    return head + b"data: " + data + b"\n\n"


def delta(kind: str, text: str, seq: int = 4) -> bytes:
    return event(kind, seq, item_id="msg_1", output_index=0, content_index=0, delta=text)


CREATED = event("response.created", 0, response=RESPONSE)
IN_PROGRESS = event("response.in_progress", 1, response=RESPONSE)
USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 8},
    "output_tokens": 30,
    "output_tokens_details": {"reasoning_tokens": 20},
    "total_tokens": 42,
}
COMPLETED = event(
    "response.completed", 9, response={**RESPONSE, "status": "completed", "usage": USAGE}
)


@pytest.mark.parametrize("framed", [True, False])
def test_created_and_in_progress_do_not_commit_but_name_the_response(framed: bool) -> None:
    for raw in (event("response.created", 0, framed=framed, response=RESPONSE), IN_PROGRESS):
        frame, kind, parsed = RESPONSES.classify(raw)
        assert (frame, kind) == (Frame.OTHER, None)
        assert parsed is not None
    _, _, parsed = RESPONSES.classify(CREATED)
    assert parsed is not None and RESPONSES.response_id(parsed) == "resp_1"
    _, _, parsed = RESPONSES.classify(IN_PROGRESS)
    assert parsed is not None and RESPONSES.response_id(parsed) is None


@pytest.mark.parametrize(
    ("kind", "first"),
    [
        ("response.output_text.delta", "answer"),
        ("response.function_call_arguments.delta", "answer"),
        ("response.reasoning_summary_text.delta", "reasoning"),
        ("response.reasoning_text.delta", "reasoning"),  # vLLM's reasoning parser
        ("response.refusal.delta", "refusal"),
    ],
)
def test_the_first_non_empty_delta_commits(kind: str, first: str) -> None:
    assert RESPONSES.classify(delta(kind, ""))[:2] == (Frame.OTHER, None)
    assert RESPONSES.classify(delta(kind, "Hi"))[:2] == (Frame.TOKEN, first)


def test_an_empty_answer_commits_at_its_end_and_failures_before_a_token_are_errors() -> None:
    assert RESPONSES.classify(COMPLETED)[:2] == (Frame.FINISH, "finish")
    failed = event("response.failed", 3, response={**RESPONSE, "status": "failed"})
    assert RESPONSES.classify(failed)[0] is Frame.ERROR
    error = event("error", 2, code="server_error", message="boom", param=None)
    assert RESPONSES.classify(error)[0] is Frame.ERROR


@pytest.mark.parametrize("raw", [b"data: {nope\n\n", b"data: [1]\n\n", b'data: {"a": 1}\n\n'])
def test_a_malformed_event_fails_over(raw: bytes) -> None:
    with pytest.raises(MalformedFrame):
        RESPONSES.classify(raw)


def test_after_the_commit_point_markers_are_found_and_text_that_mentions_them_is_not() -> None:
    plain = delta("response.output_text.delta", "the response.completed event has usage")
    found = RESPONSES.scan(plain + delta("response.output_text.delta", '"type":"error"'))
    assert (found.has_usage, found.has_error, found.has_done) == (False, False, False)
    found = RESPONSES.scan(plain + COMPLETED)
    assert (found.has_usage, found.has_error, found.has_done) == (True, False, True)
    error = event("error", 5, code="x", message="y", param=None)
    found = RESPONSES.scan(error)
    assert (found.has_error, found.has_done) == (True, False)  # response.failed may follow
    found = RESPONSES.scan(event("response.failed", 6, response=RESPONSE))
    assert (found.has_error, found.has_done) == (True, True)


def compact(kind: str, seq: int, *, type_last: bool = False, **fields: Any) -> bytes:
    """An event as OpenAI writes it (`type` first, no spaces) or as vLLM's pydantic
    models do (fields in alphabetical order: `type` last)."""
    payload = {**fields, "sequence_number": seq}
    payload = {**payload, "type": kind} if type_last else {"type": kind, **payload}
    data = json.dumps(payload, separators=(",", ":")).encode()
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


@pytest.mark.parametrize("type_last", [False, True])
def test_compact_events_are_typed_from_their_bytes_as_the_parser_would(type_last: bool) -> None:
    tricky = '","type":"response.completed"} "usage":{ error failed [DONE] \\'
    events = [
        compact("response.created", 0, type_last=type_last, response=RESPONSE),
        compact("response.output_text.delta", 4, type_last=type_last, delta=tricky),
        compact("error", 5, type_last=type_last, code="x", message="y", param=None),
        compact(
            "response.completed", 9, type_last=type_last, response={**RESPONSE, "usage": USAGE}
        ),
    ]
    for raw in events:
        data = raw.split(b"data: ", 1)[1].rstrip(b"\n")
        assert sniffed_type(data) == json.loads(data)["type"]  # read, never guessed
    # what cannot be read from the bytes is parsed instead, never misread
    for data in (
        b'{"a":{"type":"response.completed"}}',
        b'{"a\\"type":"x"}',
        b'{"b":1,"a\\",\\"type":"x"}',
        b'{"type":"x\\"y","a":1}',
        b'{"type": "error"}',
    ):
        assert sniffed_type(data) in (None, json.loads(data).get("type")), data
    # after the commit point: the delta that mentions every marker is just relayed
    found = RESPONSES.scan(events[1])
    assert (found.has_usage, found.has_error, found.has_done) == (False, False, False)
    found = RESPONSES.scan(events[1] + events[3])
    assert (found.has_usage, found.has_error, found.has_done) == (True, False, True)
    assert RESPONSES.scan(events[2]).has_error
    assert RESPONSES.usage_of(events[3]) == (USAGE, False)
    # before it: in_progress commits nothing and is not parsed; created names the response
    in_progress = compact("response.in_progress", 1, type_last=type_last, response=RESPONSE)
    assert RESPONSES.classify(in_progress) == (Frame.OTHER, None, None)
    _, _, parsed = RESPONSES.classify(events[0])
    assert parsed is not None and RESPONSES.response_id(parsed) == "resp_1"


@pytest.mark.parametrize("type_last", [False, True])
@SPIES_SEE_NOTHING
def test_the_usage_of_a_large_final_event_is_read_alone_and_right(
    type_last: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import router.turn.responses_wire as wire
    from router.turn.sse import parsed_event

    parsed: list[bytes] = []

    def counted(event: bytes) -> Any:
        parsed.append(event)
        return parsed_event(event)

    monkeypatch.setattr(wire, "parsed_event", counted)
    schema = {"type": "object", "properties": {"usage": {"type": "object"}}}
    tool = {"type": "function", "name": "report", "parameters": schema}
    # OpenAI's order (vLLM's alphabetical one too): the usage after output and tools
    big = {k: v for k, v in RESPONSE.items() if k not in ("usage", "tools")}
    big |= {
        "status": "completed",
        "instructions": 'say "usage": {"input_tokens": 1} ' * 500,
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "x" * 20000}]}],
        "tools": [tool],
        "usage": USAGE,
        "user": None,
        "metadata": {"k": "v"},
    }
    if type_last:
        big = dict(sorted(big.items()))
    final = compact("response.completed", 9, type_last=type_last, response=big)
    assert RESPONSES.usage_of(final) == (USAGE, False)
    assert parsed == []  # typed from its bytes, its usage parsed alone: not the 40 KB
    # a target that writes its tools after the usage: that tail is no usage, so the
    # event is parsed whole, and the usage is still the response's
    reordered = {**{k: v for k, v in big.items() if k != "tools"}, "tools": [tool]}
    assert list(reordered).index("usage") < list(reordered).index("tools")
    final = compact("response.completed", 9, response=reordered)
    assert RESPONSES.usage_of(final) == (USAGE, False) and len(parsed) == 1


@SPIES_SEE_NOTHING
@pytest.mark.parametrize(
    "data",
    [
        # OpenAI today, OpenAI before sequence numbers, vLLM (alphabetical fields)
        b'{"type":"response.created","sequence_number":0,"response":{"id":"resp_9","tools":[]}}',
        b'{"type":"response.created","response":{"id":"resp_9","tools":[]},"sequence_number":0}',
        b'{"response":{"id":"resp_9","tools":[]},"sequence_number":0,"type":"response.created"}',
    ],
)
def test_response_created_gives_its_id_without_parsing_what_it_repeats(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Any] = []
    real = jsontext.loads

    def counted(text: bytes) -> Any:
        loads.append(text)
        return real(text)

    monkeypatch.setattr(jsontext, "loads", counted)
    frame, kind, parsed = RESPONSES.classify(b"event: response.created\ndata: " + data + b"\n\n")
    assert (frame, kind) == (Frame.OTHER, None) and loads == []
    assert parsed is not None and RESPONSES.response_id(parsed) == "resp_9"
    # any other layout is parsed, and gives the same id
    spaced = json.dumps(json.loads(data)).encode()
    _, _, parsed = RESPONSES.classify(b"data: " + spaced + b"\n\n")
    assert parsed is not None and RESPONSES.response_id(parsed) == "resp_9" and loads


def test_a_chat_style_error_event_after_the_commit_point_is_an_error() -> None:
    # what an OpenAI-compatible proxy may send on a Responses stream: no `type`
    found = RESPONSES.scan(b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n')
    assert found.has_error and not found.has_done


def test_usage_comes_from_the_final_event_with_cached_and_reasoning_tokens() -> None:
    usage, strip = RESPONSES.usage_of(COMPLETED)
    assert usage == USAGE and strip is False
    tokens = RESPONSES.tokens(USAGE)
    assert (tokens.prompt, tokens.completion, tokens.cached, tokens.reasoning) == (12, 30, 8, 20)
    assert RESPONSES.usage_of(CREATED) == (None, False)  # "usage": null


def test_the_first_answer_after_reasoning_is_found() -> None:
    assert not RESPONSES.first_answer_in(delta("response.reasoning_text.delta", "hmm"))
    assert RESPONSES.first_answer_in(delta("response.output_text.delta", "Yes"))


def test_a_broken_stream_ends_in_events_openai_python_reads() -> None:
    head = CREATED + IN_PROGRESS + delta("response.output_text.delta", "Hi", 2)
    assert created_response(head) == RESPONSE
    tail = RESPONSES.interrupted("the upstream stream was interrupted", head, 3)
    error_raw, failed_raw = split_events(tail)
    assert error_raw.startswith(b"event: error\n") and failed_raw.startswith(
        b"event: response.failed\n"
    )
    error = ResponseErrorEvent.model_validate_json(error_raw.split(b"data: ", 1)[1])
    assert (error.message, error.sequence_number) == ("the upstream stream was interrupted", 3)
    # ... and OpenAI's nested shape too, on which openai-python raises APIError
    assert json.loads(error_raw.split(b"data: ", 1)[1])["error"]["message"] == error.message
    failed = ResponseFailedEvent.model_validate_json(failed_raw.split(b"data: ", 1)[1])
    assert failed.sequence_number == 4
    assert (failed.response.id, failed.response.status) == ("resp_1", "failed")
    assert failed.response.error is not None and failed.response.error.code == "server_error"
    # without a response.created to copy, still a valid stream event
    STREAM_EVENTS.validate_json(split_events(failure_events("x", None, 0))[0].split(b"data: ")[1])


def test_a_unary_response_gives_its_usage_and_id_and_anything_else_fails_over() -> None:
    body = json.dumps({**RESPONSE, "status": "completed", "usage": USAGE}).encode()
    whole = RESPONSES.whole("a", body)
    assert (whole.usage, whole.response_id) == (USAGE, "resp_1")
    for bad in (b"<html>", b'{"choices": []}', b"[]"):
        with pytest.raises(MalformedFrame):
            RESPONSES.whole("a", bad)


@pytest.mark.anyio
async def test_a_responses_turn_counts_cached_and_reasoning_tokens_and_prices_the_cache() -> None:
    config = CONFIG.replace(
        "price: {input_per_mtok: 1.0, output_per_mtok: 2.0}",
        "price: {input_per_mtok: 1.0, output_per_mtok: 2.0, cached_input_per_mtok: 0.5}",
    )
    events = [CREATED, IN_PROGRESS, delta("response.output_text.delta", "Hi"), COMPLETED]
    rig = Rig(FakeUpstream("a", Reply(events)), FakeUpstream("b"), config=config)
    owners: list[tuple[str, str | None]] = []
    request = replace(
        rig.request(),
        endpoint="responses",
        dialect=RESPONSES,
        on_commit=lambda target, rid: owners.append((target, rid)),
    )
    sink = RecordingSink()
    with anyio.fail_after(5):
        await rig.turn().run(request, sink)
    assert sink.body == b"".join(events)
    (done,) = rig.events.done
    assert (done.prompt_tokens, done.completion_tokens) == (12, 30)
    assert (done.cached_tokens, done.reasoning_tokens) == (8, 20)
    # 4 uncached input tokens at $1, 8 cached at $0.5, 30 output at $2 (per million)
    assert done.cost_usd == pytest.approx((4 * 1.0 + 8 * 0.5 + 30 * 2.0) / 1e6)
    assert owners == [("a", RESPONSE["id"])]
