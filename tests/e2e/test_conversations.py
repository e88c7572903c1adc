"""The Conversations API and the Responses family's unary calls (`input_tokens`,
`compact`) through the router, with the official `openai` SDK as the client and
simulators on 127.0.0.1 as the targets: a conversation is made on one target, every
call on it and every turn in it goes there, and what the client sees when that target
is gone; a token count or a compaction that builds on stored state goes to its owner."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.harness import Fleet, LoopThread, start_fleet, stop_fleet
from tests.e2e.test_responses import FAST, ROUTES, TIMEOUTS, sdk


@pytest.fixture
def fleet(loop_thread: LoopThread) -> Iterator[Fleet]:
    f = start_fleet(
        loop_thread,
        {"a": FAST, "b": FAST, "c": FAST},
        ROUTES,
        target_extra={"a": TIMEOUTS, "b": TIMEOUTS, "c": TIMEOUTS},
    )
    yield f
    stop_fleet(f)


def holder(fleet: Fleet, conversation_id: str) -> list[str]:
    """The simulators that hold a conversation."""
    return [n for n in ("a", "b", "c") if conversation_id in fleet.sim(n).stored.conversations]


def turns_seen(fleet: Fleet, name: str) -> int:
    records = fleet.loop.call(lambda: list(fleet.sim(name).records))
    return sum(r.path == "/v1/responses" for r in records)


def test_a_conversation_is_made_on_a_routes_target_and_every_turn_in_it_goes_there(
    fleet: Fleet,
) -> None:
    with sdk(fleet) as c:
        conversation = c.conversations.create(
            items=[{"type": "message", "role": "user", "content": "hello"}],
            metadata={"topic": "demo"},
            extra_body={"model": "rr"},
        )
        assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "demo"}
        (owner,) = holder(fleet, conversation.id)
        for _ in range(4):  # round robin would alternate; a conversation stays put
            answer = c.responses.create(model="rr", input="more", conversation=conversation.id)
            assert answer.output_text
        other = "b" if owner == "a" else "a"
        assert turns_seen(fleet, owner) == 4 and turns_seen(fleet, other) == 0
        # Every turn's input and output were added to the conversation, where it lives.
        items = c.conversations.items.list(conversation.id, order="asc", limit=100).data
        assert len(items) == 1 + 4 * 2
        assert [i.role for i in items[:3]] == ["user", "user", "assistant"]  # type: ignore[union-attr]


def test_the_calls_on_a_conversation_reach_its_owner_and_delete_forgets_it(fleet: Fleet) -> None:
    with sdk(fleet) as c:
        made = [c.conversations.create(extra_body={"model": "rr"}) for _ in range(2)]
        assert sorted(n for m in made for n in holder(fleet, m.id)) == ["a", "b"]
        conversation = made[1]
        assert c.conversations.retrieve(conversation.id).id == conversation.id
        updated = c.conversations.update(conversation.id, metadata={"k": "v"})
        assert updated.metadata == {"k": "v"}
        added = c.conversations.items.create(
            conversation.id,
            items=[
                {"type": "message", "role": "user", "content": "one"},
                {"type": "message", "role": "user", "content": "two"},
            ],
        )
        assert len(added.data) == 2
        first = added.data[0]
        assert first.id is not None
        assert c.conversations.items.retrieve(first.id, conversation_id=conversation.id).id == (
            first.id
        )
        c.conversations.items.delete(first.id, conversation_id=conversation.id)
        assert [i.id for i in c.conversations.items.list(conversation.id).data] == [
            added.data[1].id
        ]
        deleted = c.conversations.delete(conversation.id)
        assert deleted.deleted
        with pytest.raises(openai.NotFoundError) as err:
            c.conversations.retrieve(conversation.id)
        assert "no conversation" in err.value.message  # the router forgot it too
        assert c.conversations.retrieve(made[0].id).id == made[0].id


def test_a_target_that_cannot_be_reached_passes_the_create_on_and_its_loss_is_a_503(
    fleet: Fleet,
) -> None:
    with sdk(fleet) as c:
        fleet.loop.run(fleet.sim("a").stop())  # `ordered` tries a first
        conversation = c.conversations.create(extra_body={"model": "ordered"})
        assert holder(fleet, conversation.id) == ["b"]
        c.responses.create(model="ordered", input="hi", conversation=conversation.id)
        assert turns_seen(fleet, "b") == 1
        fleet.loop.run(fleet.sim("b").stop())
        with pytest.raises(openai.InternalServerError) as err:
            c.conversations.retrieve(conversation.id)
        assert err.value.status_code == 503 and err.value.code == "response_state_unavailable"
        assert "stored on target 'b'" in err.value.message
        with pytest.raises(openai.InternalServerError) as err:
            c.responses.create(model="ordered", input="hi", conversation=conversation.id)
        assert err.value.code == "response_state_unavailable"
    calls = fleet.router.router.metrics.registry.get_sample_value
    assert calls("firsttoken_relayed_calls_total", _call("a", "conversation_create", "failed")) == 1
    assert calls("firsttoken_relayed_calls_total", _call("b", "conversation_create", "ok")) == 1
    assert calls("firsttoken_relayed_calls_total", _call("b", "conversation", "failed")) == 1


def _call(target: str, call: str, outcome: str) -> dict[str, str]:
    return {"target": target, "call": call, "outcome": outcome}


def test_a_turn_in_a_conversation_on_a_route_that_cannot_reach_it_is_a_409(fleet: Fleet) -> None:
    with sdk(fleet) as c:
        conversation = c.conversations.create(extra_body={"model": "ordered"})
        with pytest.raises(openai.ConflictError) as err:
            c.responses.create(model="only-c", input="hi", conversation=conversation.id)
        assert err.value.code == "response_state_elsewhere"
        assert turns_seen(fleet, "c") == 0


def test_a_create_that_names_no_route_needs_one_when_several_serve_responses(
    fleet: Fleet,
) -> None:
    with sdk(fleet) as c:
        with pytest.raises(openai.BadRequestError) as err:
            c.conversations.create()
        assert "'model'" in err.value.message and "rr, ordered, only-c, hedged" in err.value.message
        with pytest.raises(openai.NotFoundError) as missing:
            c.conversations.create(extra_body={"model": "nope"})
        assert missing.value.code == "model_not_found"
    # The `model` the router reads is not sent upstream (OpenAI would refuse it).
    r = httpx.post(f"{fleet.router.base_url}/conversations", json={"model": "only-c"})
    assert r.status_code == 200 and holder(fleet, r.json()["id"]) == ["c"]


def test_with_one_route_serving_responses_a_create_needs_no_model(loop_thread: LoopThread) -> None:
    routes = "routes:\n  - name: only\n    targets: [a]\n  - name: chat\n    targets: [e]\n"
    f = start_fleet(
        loop_thread, {"a": FAST, "e": FAST}, routes, target_extra={"e": "capabilities: [chat]"}
    )
    try:
        with sdk(f) as c:
            conversation = c.conversations.create()
            assert conversation.id in f.sim("a").stored.conversations
    finally:
        stop_fleet(f)


def test_bad_calls_get_errors_in_openais_shape(fleet: Fleet) -> None:
    base = fleet.router.base_url
    r = httpx.post(f"{base}/conversations", content=b"{not json", headers=_JSON)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{base}/conversations", json=["a list"])
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
    r = httpx.get(f"{base}/conversations/conv_unknown")
    assert r.status_code == 404 and "no conversation 'conv_unknown'" in r.json()["error"]["message"]
    for path in ("/conversations/bad%20id", "/conversations/conv_x/nope", "/conversationsX"):
        assert httpx.get(f"{base}{path}").status_code == 404
    r = httpx.put(f"{base}/conversations/conv_x", json={})
    assert r.status_code == 405 and "GET" in r.headers["allow"]
    assert httpx.get(f"{base}/conversations").status_code == 405


_JSON = {"content-type": "application/json"}


# -- input_tokens and compact ---------------------------------------------------------------


def test_input_tokens_are_counted_by_a_routes_target_or_the_owner_of_the_state(
    fleet: Fleet,
) -> None:
    with sdk(fleet) as c:
        counted = c.responses.input_tokens.count(model="ordered", input="x" * 400)
        assert counted.object == "response.input_tokens" and counted.input_tokens >= 100
        # Round robin alternates between a and b; only the owner knows the response (a
        # simulator answers 400 for an id it did not store), so every count must land there.
        first = c.responses.create(model="rr", input="one")
        for _ in range(4):
            count = c.responses.input_tokens.count(
                model="rr", input="y", previous_response_id=first.id
            )
            assert count.input_tokens > 0
        with pytest.raises(openai.ConflictError):
            c.responses.input_tokens.count(model="only-c", input="y", previous_response_id=first.id)
        # An id no replica remembers routes freely; the target's own 400 comes back.
        with pytest.raises(openai.BadRequestError) as err:
            c.responses.input_tokens.count(
                model="rr", input="y", previous_response_id="resp_unknown"
            )
        assert err.value.code == "previous_response_not_found"


def test_compact_goes_to_the_owner_of_what_it_builds_on(fleet: Fleet) -> None:
    with sdk(fleet) as c:
        first = c.responses.create(model="ordered", input="one")  # on a
        compacted = c.responses.compact(
            model="ordered", input="keep me", previous_response_id=first.id
        )
        assert compacted.object == "response.compaction"
        assert compacted.output[-1].type == "compaction"
        with pytest.raises(openai.ConflictError) as err:
            c.responses.compact(model="only-c", input="x", previous_response_id=first.id)
        assert err.value.code == "response_state_elsewhere"
        plain = c.responses.compact(model="only-c", input="hello")
        assert plain.output[0].type == "message"
