"""What a target is sent: the client's body with its own model, usage asked for on streams."""

from __future__ import annotations

import json
import pickle

import pytest

from router.upstream.body import ClientBody, wire_bytes


def test_the_body_goes_upstream_with_the_targets_model_and_usage_asked_for() -> None:
    body = {"model": "route", "stream_options": {"continuous_usage_stats": True}, "n": 1}
    streamed = ClientBody.of(body, stream=True).for_target("target-model")
    assert (
        json.loads(streamed.wire)
        == dict(streamed)
        == {
            "model": "target-model",
            "stream_options": {"continuous_usage_stats": True, "include_usage": True},
            "n": 1,
        }
    )
    unary = ClientBody.of(body, stream=False).for_target("target-model")
    assert json.loads(unary.wire)["stream_options"] == {"continuous_usage_stats": True}


def test_each_target_gets_its_own_model_and_an_empty_body_stays_valid_json() -> None:
    body = ClientBody.of({"model": "route"}, stream=False)
    assert json.loads(body.for_target("a").wire) == {"model": "a"}
    assert json.loads(body.for_target('b"\n').wire) == {"model": 'b"\n'}


def test_a_body_crosses_a_process_boundary_as_its_bytes() -> None:
    body = ClientBody.of({"model": "route", "messages": [{"role": "user"}]}, stream=False)
    again = pickle.loads(pickle.dumps(body))
    assert again.for_target("m").wire == body.for_target("m").wire


def test_any_other_mapping_is_serialised_and_non_finite_numbers_never_go_out() -> None:
    assert json.loads(wire_bytes({"model": "m", "n": 1})) == {"model": "m", "n": 1}
    with pytest.raises(ValueError):
        wire_bytes({"temperature": float("inf")})
