"""Stored chat completions (`store: true`) through the router, with the official
`openai` SDK as the client and simulators on 127.0.0.1 as the targets: the router
remembers which target stored each completion and sends `retrieve`, `update`,
`delete` and `messages.list` there; `list` reads a route's first target that
answers, under that target's own model name."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from tests.e2e.harness import Fleet, LoopThread, start_fleet, stop_fleet
from tests.e2e.test_responses import FAST, ROUTES, TIMEOUTS, sdk

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello"},
]


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


def metadata_of(completion: BaseModel) -> object:
    """A stored completion's `metadata` (the SDK's ChatCompletion keeps it as an extra)."""
    return (completion.model_extra or {}).get("metadata")


def holder(fleet: Fleet, completion_id: str) -> list[str]:
    """The simulators that stored a chat completion."""
    return [n for n in ("a", "b", "c") if completion_id in fleet.sim(n).chats]


def calls_seen(fleet: Fleet, name: str, completion_id: str) -> int:
    """The requests a simulator received on one stored completion's paths."""
    seen = fleet.loop.call(lambda: list(fleet.sim(name).chats.calls))
    return sum(completion_id in path for path in seen)


def test_each_stored_completion_is_read_updated_and_deleted_at_the_target_that_stored_it(
    fleet: Fleet,
) -> None:
    with sdk(fleet) as c:
        unary = c.chat.completions.create(
            model="rr",
            messages=MESSAGES,
            store=True,
            metadata={"run": "1"},
        )
        stream = c.chat.completions.create(
            model="rr",
            messages=MESSAGES,
            store=True,
            stream=True,
        )
        chunks = list(stream)
        streamed_id = chunks[0].id
        streamed_text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        # round robin put them on different targets; each stored its own
        owners = [holder(fleet, unary.id), holder(fleet, streamed_id)]
        assert sorted(o for owner in owners for o in owner) == ["a", "b"]

        got = c.chat.completions.retrieve(streamed_id)
        assert got.id == streamed_id and got.choices[0].message.content == streamed_text
        got = c.chat.completions.retrieve(unary.id)
        assert got.choices[0].message.content == unary.choices[0].message.content
        assert metadata_of(got) == {"run": "1"}
        messages = c.chat.completions.messages.list(unary.id).data
        assert [(m.role, m.content) for m in messages] == [
            ("system", "be brief"),
            ("user", "hello"),
        ]
        updated = c.chat.completions.update(unary.id, metadata={"run": "2"})
        assert metadata_of(updated) == {"run": "2"}
        deleted = c.chat.completions.delete(unary.id)
        assert deleted.deleted and deleted.id == unary.id
        with pytest.raises(openai.NotFoundError) as err:
            c.chat.completions.retrieve(unary.id)
        assert "no chat completion" in err.value.message  # the router forgot it too
    # Every call on an id went to its owner only.
    (owner,), (other,) = owners[0], owners[1]
    assert calls_seen(fleet, owner, unary.id) == 4 and calls_seen(fleet, other, unary.id) == 0
    assert calls_seen(fleet, other, streamed_id) == 1 and calls_seen(fleet, owner, streamed_id) == 0


def test_a_completion_not_stored_is_not_remembered_and_store_must_be_a_boolean(
    fleet: Fleet,
) -> None:
    with sdk(fleet) as c:
        plain = c.chat.completions.create(model="rr", messages=MESSAGES)
        assert holder(fleet, plain.id) == []
        with pytest.raises(openai.NotFoundError) as err:
            c.chat.completions.retrieve(plain.id)
        assert err.value.code == "not_found"  # the router's own answer: no owner known
        assert f"no chat completion '{plain.id}'" in err.value.message
        with pytest.raises(openai.BadRequestError) as bad:
            c.chat.completions.create(
                model="rr",
                messages=MESSAGES,
                extra_body={"store": "yes"},
            )
        assert "'store' must be a boolean" in bad.value.message


def test_the_owner_down_is_a_503_not_another_target(fleet: Fleet) -> None:
    with sdk(fleet) as c:
        made = c.chat.completions.create(model="ordered", messages=MESSAGES, store=True)
        assert holder(fleet, made.id) == ["a"]
        fleet.loop.run(fleet.sim("a").stop())
        with pytest.raises(openai.InternalServerError) as err:
            c.chat.completions.retrieve(made.id)
        assert err.value.status_code == 503 and err.value.code == "response_state_unavailable"
        assert "stored on target 'a'" in err.value.message
    assert calls_seen(fleet, "b", made.id) == 0


def test_a_list_reads_the_routes_first_target_that_answers_under_its_model_name(
    fleet: Fleet,
) -> None:
    with sdk(fleet) as c:
        first = c.chat.completions.create(
            model="ordered",
            messages=MESSAGES,
            store=True,
            metadata={"k": "v"},
        )
        c.chat.completions.create(model="ordered", messages=MESSAGES, store=True)
        listed = c.chat.completions.list(model="ordered")
        assert len(listed.data) == 2 and listed.data[0].id == first.id
        assert {d.model for d in listed.data} == {"a-model"}  # a's own name for its model
        by_metadata = c.chat.completions.list(model="ordered", metadata={"k": "v"})
        assert [d.id for d in by_metadata.data] == [first.id]
        page = c.chat.completions.list(model="ordered", limit=1)
        assert [d.id for d in page.data] == [first.id] and page.has_more
        # Several routes serve chat to this key: a list must name one.
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.list()
        assert "names no route" in err.value.message and "ordered" in err.value.message
        # a down: the list passes to b, which stored nothing
        fleet.loop.run(fleet.sim("a").stop())
        assert c.chat.completions.list(model="ordered").data == []
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.list(model="no-such-route")
    seen = fleet.loop.call(lambda: list(fleet.sim("b").chats.calls))
    assert any(p.startswith("GET /v1/chat/completions?") and "model=b-model" in p for p in seen)


def test_an_owner_that_fails_its_relayed_calls_opens_its_breaker_for_turns_too(
    fleet: Fleet,
) -> None:
    with sdk(fleet) as c:
        made = c.chat.completions.create(model="ordered", messages=MESSAGES, store=True)
        assert holder(fleet, made.id) == ["a"]
        fleet.loop.run(fleet.sim("a").stop())
        for _ in range(3):  # signals.breaker_failures: 3 refused connections
            with pytest.raises(openai.InternalServerError) as err:
                c.chat.completions.retrieve(made.id)
            assert "circuit breaker" not in err.value.message
        # Open now: the next call is answered at once, without trying a again.
        with pytest.raises(openai.InternalServerError) as err:
            c.chat.completions.retrieve(made.id)
        assert err.value.code == "response_state_unavailable"
        assert "its circuit breaker is open" in err.value.message
    router = fleet.router.router
    # The breaker is the one turns read: `ordered` now plans b first.
    assert router.runtime.targets["a"].signals.breaker.state == "open"
    labels = {"target": "a", "call": "chat_completion", "outcome": "failed"}
    assert router.metrics.registry.get_sample_value("firsttoken_relayed_calls_total", labels) == 3
