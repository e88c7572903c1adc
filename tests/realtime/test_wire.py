from __future__ import annotations

import base64
import json

from router.realtime.wire import (
    b64_bytes,
    delta_b64_chars,
    error_event,
    failed_response_done,
    response_id_of,
    sniff,
)


def test_sniff_reads_the_type_at_the_start() -> None:
    assert (
        sniff('{"type":"input_audio_buffer.append","audio":"AAAA"}') == "input_audio_buffer.append"
    )
    assert sniff('  { "type" : "response.create" }\n') == "response.create"
    assert sniff('{"type": "response.done", "response": {}}') == "response.done"
    # an escape in the type is read by the parser, as JSON means it
    assert sniff('{"type":"response.\\u0063reate"}') == "response.create"


def test_sniff_finds_a_type_that_is_not_first_by_parsing() -> None:
    assert sniff('{"session": {"type": "realtime"}, "type": "session.update"}') == "session.update"


def test_sniff_refuses_what_is_not_a_json_object_with_a_type() -> None:
    for text in ("hello", "[1, 2]", '{"type": 3}', '{"no": "type"}', '{"type":"x", "audio":"AA'):
        assert sniff(text) is None, text


def test_unknown_types_are_still_types() -> None:
    assert sniff('{"type":"some.future.event"}') == "some.future.event"


def test_audio_delta_size_without_decoding() -> None:
    audio = base64.b64encode(bytes(960)).decode()
    frame = json.dumps({"type": "response.output_audio.delta", "item_id": "i", "delta": audio})
    assert b64_bytes(delta_b64_chars(frame)) == 960
    assert delta_b64_chars('{"type":"response.output_audio.delta"}') == 0


def test_written_events_have_openai_shapes() -> None:
    error = json.loads(error_event("idle", code="session_idle", type="invalid_request_error"))
    assert error["type"] == "error" and error["error"]["code"] == "session_idle"
    done = json.loads(failed_response_done("resp_1", "upstream_migrated", "moved"))
    assert done["response"]["status"] == "failed" and done["response"]["id"] == "resp_1"
    assert done["response"]["status_details"]["error"]["code"] == "upstream_migrated"


def test_rate_limits_read_as_openai_headers() -> None:
    from router.realtime.wire import rate_limit_headers

    headers = rate_limit_headers(
        [
            {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 0.06},
            {"name": "tokens", "limit": 200000, "remaining": 100000, "reset_seconds": 1.5},
            {"name": "other", "limit": 1},
        ]
    )
    assert headers == {
        "x-ratelimit-limit-requests": "1000",
        "x-ratelimit-remaining-requests": "999",
        "x-ratelimit-reset-requests": "0.06s",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "100000",
        "x-ratelimit-reset-tokens": "1.5s",
    }
    assert rate_limit_headers(None) == {}


def test_response_id_of_a_delta_is_read_in_any_field_order_and_never_from_a_value() -> None:
    audio = base64.b64encode(bytes(960)).decode()
    first = json.dumps(
        {"type": "response.output_audio.delta", "response_id": "resp_1", "delta": audio}
    )
    last = json.dumps(
        {"type": "response.output_audio.delta", "delta": audio, "response_id": "resp_2"}
    )
    spaced = '{"type": "response.output_text.delta", "response_id" : "resp_3", "delta": "hi"}'
    assert [response_id_of(f) for f in (first, last, spaced)] == ["resp_1", "resp_2", "resp_3"]
    quoted = json.dumps({"type": "response.output_text.delta", "delta": '"response_id": "resp_4"'})
    assert response_id_of(quoted) is None
