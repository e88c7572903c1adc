"""SSE framing: what counts as the first token, and the bytes search after it."""

from __future__ import annotations

import json

import pytest

from router.turn import sse
from tests.turn.chunks import DONE, chunk, content, error, role, tool_call, usage


@pytest.mark.parametrize(
    ("event", "frame"),
    [
        (content("Hi"), sse.Frame.CONTENT),
        (tool_call(), sse.Frame.CONTENT),  # a tool call is the first token of a tool turn
        (chunk({"role": "assistant", "content": ""}), sse.Frame.OTHER),
        (chunk({}), sse.Frame.OTHER),
        (b": keep-alive\n\n", sse.Frame.OTHER),
        (chunk({}, finish="stop"), sse.Frame.FINISH),  # an empty answer ends the wait too
        (DONE, sse.Frame.DONE),
        (error(), sse.Frame.ERROR),
        (b'data: {"choices":[{"text":"Hi","index":0}]}\n\n', sse.Frame.CONTENT),  # completions
    ],
)
def test_classify_finds_the_first_token_of_any_kind(event: bytes, frame: sse.Frame) -> None:
    assert sse.classify(event)[0] is frame


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


def test_split_events_keeps_the_incomplete_rest_and_normalises_crlf() -> None:
    events, rest = sse.split_events(role() + content("Hi")[:10])
    assert events == [role()]
    assert rest == content("Hi")[:10]
    events, rest = sse.split_events(content("Hi").replace(b"\n", b"\r\n") + b"data: x")
    assert events == [content("Hi")]
    assert rest == b"data: x"


def test_event_data_joins_multi_line_data_and_skips_comments() -> None:
    assert sse.event_data(b'data: {"a":\ndata: 1}\n\n') == b'{"a":\n1}'
    assert sse.event_data(b": ping\n\n") is None


def test_scan_finds_usage_error_and_done_in_bytes() -> None:
    assert sse.scan(content("Hi") + content("!")) == sse.Scan(False, False, False)
    found = sse.scan(content("Hi") + usage() + DONE)
    assert (found.has_usage, found.has_error, found.has_done) == (True, False, True)
    assert sse.scan(error()).has_error
    assert sse.scan(b'data: {"choices": [], "usage": {"completion_tokens": 1}}\n\n').has_usage


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
