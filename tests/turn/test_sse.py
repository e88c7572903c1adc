"""SSE framing: what counts as the first token, and the bytes search after it."""

from __future__ import annotations

import json

import pytest

from router.turn import sse
from tests.turn.chunks import DONE, chunk, content, error, frame, role, tool_call, usage


@pytest.mark.parametrize(
    ("event", "frame", "kind"),
    [
        (content("Hi"), sse.Frame.TOKEN, "answer"),
        (tool_call(), sse.Frame.TOKEN, "answer"),  # a tool call is the first token of a tool turn
        (chunk({"function_call": {"name": "f", "arguments": ""}}), sse.Frame.TOKEN, "answer"),
        (chunk({"reasoning_content": "Hmm", "content": None}), sse.Frame.TOKEN, "reasoning"),
        (chunk({"reasoning": "Let me"}), sse.Frame.TOKEN, "reasoning"),
        (chunk({"refusal": "I can't"}), sse.Frame.TOKEN, "refusal"),
        (chunk({"audio": {"id": "a1", "data": "UklG"}}), sse.Frame.TOKEN, "audio"),
        (chunk({"role": "assistant", "content": ""}), sse.Frame.OTHER, None),
        (chunk({"role": "assistant", "content": "", "refusal": None}), sse.Frame.OTHER, None),
        (chunk({}), sse.Frame.OTHER, None),
        (b": OPENROUTER PROCESSING\n\n", sse.Frame.OTHER, None),
        (b'data: {"choices":[],"prompt_filter_results":[]}\n\n', sse.Frame.OTHER, None),
        (chunk({}, finish="stop"), sse.Frame.FINISH, "finish"),  # an empty answer ends it too
        (DONE, sse.Frame.DONE, None),
        (b"data:[DONE]\n\n", sse.Frame.DONE, None),
        (error(), sse.Frame.ERROR, None),
        (b'data: {"object":"error","message":"x","code":400}\n\n', sse.Frame.ERROR, None),
        (b"event: error\ndata: overloaded\n\n", sse.Frame.ERROR, None),
        (b'data: {"choices":[{"text":"Hi","index":0}]}\n\n', sse.Frame.TOKEN, "answer"),
    ],
)
def test_classify_finds_the_first_token_of_any_kind(
    event: bytes, frame: sse.Frame, kind: str | None
) -> None:
    found, found_kind, _ = sse.classify(event)
    assert (found, found_kind) == (frame, kind)


@pytest.mark.parametrize(
    "event",
    [
        b"data: {not json\n\n",
        b"data: [1, 2]\n\n",
        b'data: {"id": "x"}\n\n',
        b'data: {"choices": [3]}\n\n',
    ],
)
def test_a_frame_that_is_not_an_openai_chunk_is_malformed(event: bytes) -> None:
    with pytest.raises(sse.MalformedFrame):
        sse.classify(event)


def test_the_framer_keeps_the_incomplete_rest_and_normalises_crlf() -> None:
    framer = sse.Framer(1 << 20)
    assert framer.feed(role() + content("Hi")[:10]) == role()
    assert framer.pending == content("Hi")[:10]
    framer = sse.Framer(1 << 20)
    assert framer.feed(content("Hi").replace(b"\n", b"\r\n") + b"data: x") == content("Hi")
    assert framer.pending == b"data: x"


def test_a_crlf_split_across_reads_and_cr_only_line_ends_frame_the_same_events() -> None:
    stream = role() + content("Hi") + DONE
    for ending in (b"\r\n", b"\r"):
        framed = stream.replace(b"\n", ending)
        for cut in range(1, len(framed)):  # every split point, CR|LF included
            framer = sse.Framer(1 << 20)
            out = framer.feed(framed[:cut]) + framer.feed(framed[cut:])
            assert sse.split_events(out) == [role(), content("Hi"), DONE], (ending, cut)


def test_an_event_past_the_bound_is_an_error_not_a_growing_buffer() -> None:
    framer = sse.Framer(1024)
    framer.feed(b"data: " + b"x" * 1000)
    with pytest.raises(sse.EventTooLarge):
        framer.feed(b"x" * 100)
    # complete events of any number pass; only one unfinished event is bounded
    assert sse.Framer(1024).feed(content("Hi") * 100) == content("Hi") * 100


def test_event_data_joins_multi_line_data_and_skips_comments() -> None:
    assert sse.event_data(b'data: {"a":\ndata: 1}\n\n') == b'{"a":\n1}'
    assert sse.event_data(b": ping\n\n") is None


def test_scan_finds_usage_error_and_done_in_bytes() -> None:
    assert sse.scan(content("Hi") + content("!")) == sse.Scan(False, False, False)
    found = sse.scan(content("Hi") + usage() + DONE)
    assert (found.has_usage, found.has_error, found.has_done) == (True, False, True)
    assert sse.scan(error()).has_error
    assert sse.scan(b'data: {"choices": [], "usage": {"completion_tokens": 1}}\n\n').has_usage


@pytest.mark.parametrize(
    "block",
    [
        b"data:[DONE]\n\n",
        b"data:  [DONE]\n\n",
        b"data: [DONE] \n\n",
        b"event: done\ndata: [DONE]\n\n",
    ],
)
def test_done_is_found_however_it_is_framed(block: bytes) -> None:
    assert sse.scan(content("Hi") + block).has_done


@pytest.mark.parametrize(
    "block",
    [
        b'data:{"error":{"message":"boom"}}\n\n',
        b'data: {"error": {"message": "boom"}}\n\n',
        b'data: {"object":"error","message":"boom","type":"BadRequestError","code":400}\n\n',
        b"event: error\ndata: boom\n\n",
    ],
)
def test_error_events_are_found_however_they_are_framed(block: bytes) -> None:
    assert sse.scan(content("Hi") + block).has_error


def test_content_that_mentions_done_or_error_is_neither() -> None:
    found = sse.scan(content('the "error" was [DONE]') + content("data: [DONE]"))
    assert (found.has_error, found.has_done) == (False, False)


def test_first_answer_in_finds_content_after_reasoning_only() -> None:
    reasoning = chunk({"reasoning_content": "so", "content": None})
    assert not sse.first_answer_in(reasoning + chunk({"role": "assistant", "content": ""}))
    assert sse.first_answer_in(reasoning + content("Paris"))
    assert sse.first_answer_in(tool_call())


def test_groq_usage_is_read_from_x_groq() -> None:
    event = frame(
        {
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "x_groq": {"id": "req_1", "usage": {"prompt_tokens": 9, "completion_tokens": 4}},
        }
    )
    assert sse.usage_of(event) == ({"prompt_tokens": 9, "completion_tokens": 4}, False)


def test_usage_of_reads_the_counts_and_says_if_the_event_is_usage_only() -> None:
    assert sse.usage_of(usage(7, 3)) == ({"prompt_tokens": 7, "completion_tokens": 3}, True)
    with_text = chunk({"content": "x"})[:-3] + b',"usage":{"completion_tokens":1}}\n\n'
    assert sse.usage_of(with_text) == ({"completion_tokens": 1}, False)
    assert sse.usage_of(content("usage")) == (None, False)


def test_error_event_is_openai_shaped() -> None:
    event = sse.error_event("upstream broke")
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    body = json.loads(event[6:])
    assert body == {
        "error": {
            "message": "upstream broke",
            "type": "upstream_error",
            "code": "stream_interrupted",
        }
    }
