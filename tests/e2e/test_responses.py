"""`/v1/responses` through the router, with the official `openai` SDK as the client and
simulators on 127.0.0.1 as the targets: streams and the SDK's accumulator, state
pinned to the target that stored it, what the client sees when that target is down,
fallback before the first event and an error event after it, stored responses' own
endpoints, usage priced, and bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.responses import ResponseErrorEvent, ResponseFailedEvent

from router.sim.behaviour import Behaviour, Fault
from tests.e2e.harness import Fleet, LoopThread, start_fleet, stop_fleet
from tests.e2e.test_faults import delta, parse_metrics

FAST = Behaviour(ttft_s=0.01, itl_s=0.002, tokens=5)
TEXT = "t0 t1 t2 t3 t4 "
# connect_s: a refused connect fails at once whatever it is; 0.5 s failed a connect to a
# live simulator on this loop once when the full suite stalled the process (12-07)
TIMEOUTS = "timeouts: {connect_s: 2.0, first_token_s: 0.5, idle_s: 1.0, total_s: 2.0}"
PRICE = "price: {input_per_mtok: 1000000, output_per_mtok: 2000000}"
ROUTES = """
routes:
  - name: rr
    targets: [a, b]
    policy: {type: round_robin}
    exploration: 0
  - name: ordered
    targets: [a, b]
    policy: {type: ordered}
    exploration: 0
  - name: only-c
    targets: [c]
  - name: hedged
    targets: [a, b]
    policy: {type: ordered}
    exploration: 0
    hedge: {after_ms: 50, max_rate: 1.0}
"""


@pytest.fixture
def fleet(loop_thread: LoopThread) -> Iterator[Fleet]:
    extra = f"{TIMEOUTS}\n{PRICE}"
    f = start_fleet(
        loop_thread,
        {"a": FAST, "b": FAST, "c": FAST},
        ROUTES,
        target_extra={"a": extra, "b": extra, "c": extra},
    )
    yield f
    stop_fleet(f)


def sdk(fleet: Fleet) -> openai.OpenAI:
    """The SDK, closing each connection after its answer: a client a test does not
    close leaves no socket for the garbage collector to warn about in a later test."""
    http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
    return openai.OpenAI(
        base_url=fleet.router.base_url, api_key="unused", max_retries=0, http_client=http
    )


def responses_seen(fleet: Fleet, name: str) -> list[dict[str, object]]:
    """The bodies of the POST /v1/responses a simulator received."""
    records = fleet.loop.call(lambda: list(fleet.sim(name).records))
    return [r.body for r in records if r.path == "/v1/responses"]


def raw_events(fleet: Fleet, body: dict[str, object]) -> tuple[httpx.Response, list[bytes]]:
    r = httpx.post(f"{fleet.router.base_url}/responses", json=body, timeout=10)
    return r, [e for e in r.content.split(b"\n\n") if e]


def data_of(event: bytes) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(event.split(b"data: ", 1)[1])
    return parsed


# -- streams ---------------------------------------------------------------------------------


def test_a_stream_arrives_whole_in_order_with_the_routers_headers(fleet: Fleet) -> None:
    c = sdk(fleet)
    with c.responses.with_streaming_response.create(
        model="ordered", input="hello there", stream=True
    ) as response:
        assert response.headers["x-firsttoken-target"] == "a"
        assert "first token (answer)" in response.headers["x-firsttoken-reason"]
        events = list(response.parse())
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == TEXT
    # Nothing was added to what OpenAI's API takes (no stream_options.include_usage).
    assert "stream_options" not in responses_seen(fleet, "a")[-1]


def test_the_sdks_stream_helper_accumulates_the_final_response(fleet: Fleet) -> None:
    with sdk(fleet).responses.stream(model="ordered", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == TEXT and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == 5


def test_usage_feeds_tokens_and_cost(fleet: Fleet) -> None:
    before = parse_metrics(httpx.get(f"{fleet.router.url}/metrics").text)
    sdk(fleet).responses.create(model="ordered", input="x" * 40)  # ~10 input tokens
    with sdk(fleet).responses.stream(model="ordered", input="x" * 40) as stream:
        stream.get_final_response()
    after = parse_metrics(httpx.get(f"{fleet.router.url}/metrics").text)
    labels = {"route": "ordered", "target": "a"}
    assert delta(before, after, "firsttoken_tokens_total", direction="output", **labels) == 10
    assert delta(before, after, "firsttoken_tokens_total", direction="input", **labels) == 20
    # $1 per input token and $2 per output token, from the YAML prices
    assert delta(before, after, "firsttoken_cost_usd_total", **labels) == pytest.approx(40.0)


# -- state lives upstream ---------------------------------------------------------------------


def test_a_follow_up_goes_to_the_target_that_stored_its_previous_response(fleet: Fleet) -> None:
    c = sdk(fleet)
    first = c.responses.create(model="rr", input="one")
    owner = "a" if responses_seen(fleet, "a") else "b"
    chain = [first.id]
    for i in range(4):  # round robin would alternate; each follow-up stays on the owner
        if i % 2:
            with c.responses.stream(model="rr", input="more", previous_response_id=chain[-1]) as s:
                chain.append(s.get_final_response().id)
        else:
            chain.append(
                c.responses.create(model="rr", input="more", previous_response_id=chain[-1]).id
            )
    other = "b" if owner == "a" else "a"
    assert len(responses_seen(fleet, owner)) == 5 and responses_seen(fleet, other) == []
    # A fresh conversation still alternates: only state is pinned, not the route.
    c.responses.create(model="rr", input="fresh")
    assert len(responses_seen(fleet, other)) == 1


def test_a_conversation_made_elsewhere_stays_where_its_first_turn_was_answered(
    fleet: Fleet,
) -> None:
    # Made on a directly (not through the router), so no replica knows its owner yet.
    made = httpx.post(f"{fleet.sim('a').base_url}/conversations", json={}).json()["id"]
    c = sdk(fleet)
    c.responses.create(model="ordered", input="hi", conversation=made)  # a answers
    for _ in range(4):  # round robin would alternate; the router learned the owner
        c.responses.create(model="rr", input="hi", conversation=made)
    assert len(responses_seen(fleet, "a")) == 5 and responses_seen(fleet, "b") == []


def test_when_the_owner_is_down_the_follow_up_is_a_503_never_another_target(fleet: Fleet) -> None:
    c = sdk(fleet)
    first = c.responses.create(model="ordered", input="one")  # on a
    fleet.set_behaviour("a", Behaviour(fault=Fault("status", 503)))
    with pytest.raises(openai.InternalServerError) as err:
        c.responses.create(model="ordered", input="two", previous_response_id=first.id)
    assert err.value.status_code == 503
    assert err.value.code == "response_state_unavailable"
    assert "stored on target 'a'" in err.value.message
    assert responses_seen(fleet, "b") == []  # no silent reroute to a target without the state
    # A request that builds on nothing still falls back to b.
    assert c.responses.create(model="ordered", input="fresh").output_text == TEXT
    assert len(responses_seen(fleet, "b")) == 1


def test_when_the_owners_breaker_is_open_the_503_says_so(fleet: Fleet) -> None:
    c = sdk(fleet)
    first = c.responses.create(model="ordered", input="one")
    fleet.set_behaviour("a", Behaviour(fault=Fault("status", 503)))
    for _ in range(3):  # the breaker opens
        c.responses.create(model="ordered", input="x")
    r = httpx.post(
        f"{fleet.router.base_url}/responses",
        json={"model": "ordered", "input": "two", "previous_response_id": first.id},
    )
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "breaker open" in r.json()["error"]["message"]


def test_a_follow_up_on_a_route_that_cannot_reach_the_owner_is_a_409(fleet: Fleet) -> None:
    c = sdk(fleet)
    first = c.responses.create(model="ordered", input="one")
    with pytest.raises(openai.ConflictError) as err:
        c.responses.create(model="only-c", input="two", previous_response_id=first.id)
    assert err.value.code == "response_state_elsewhere"
    assert "route 'ordered'" in err.value.message


def test_an_unknown_id_routes_freely_and_the_targets_own_error_comes_back(fleet: Fleet) -> None:
    with sdk(fleet) as c, pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model="ordered", input="x", previous_response_id="resp_nope")
    assert err.value.code == "previous_response_not_found"


def test_store_false_is_not_remembered(fleet: Fleet) -> None:
    answer = sdk(fleet).responses.create(model="rr", input="x", store=False)
    assert fleet.loop.call(lambda: fleet.router.router.owners.local.get("r:" + answer.id)) is None


def test_get_input_items_and_delete_reach_the_owner(fleet: Fleet) -> None:
    c = sdk(fleet)
    made = [c.responses.create(model="rr", input=f"n{i}") for i in range(2)]  # on a and b
    for response in made:
        assert c.responses.retrieve(response.id).output_text == TEXT
        assert [i.type for i in c.responses.input_items.list(response.id).data] == ["message"]
    c.responses.delete(made[1].id)
    with pytest.raises(openai.NotFoundError) as err:
        c.responses.retrieve(made[1].id)  # forgotten by the router as well
    assert "no response" in err.value.message
    assert c.responses.retrieve(made[0].id).id == made[0].id


# -- the commit point -------------------------------------------------------------------------


def test_a_target_silent_after_created_falls_back_before_the_client_sees_anything(
    fleet: Fleet,
) -> None:
    # a sends response.created and in_progress, then nothing: no token, so no commit.
    fleet.set_behaviour("a", Behaviour(fault=Fault("hang_before_first_token")))
    with sdk(fleet).responses.with_streaming_response.create(
        model="ordered", input="hi", stream=True
    ) as response:
        assert response.headers["x-firsttoken-target"] == "b"
        events = list(response.parse())
    assert [e.type for e in events].count("response.created") == 1
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT


def test_a_hedge_races_a_target_that_announced_its_response_but_sent_no_token(
    fleet: Fleet,
) -> None:
    # a sends response.created at once, then its first token 2 s later: the hedge to b
    # starts after 50 ms and wins; the client sees b's response alone, and b holds it.
    fleet.set_behaviour("a", Behaviour(ttft_s=2.0, itl_s=0.002, tokens=5))
    c = sdk(fleet)
    with c.responses.with_streaming_response.create(
        model="hedged", input="hi", stream=True
    ) as response:
        assert response.headers["x-firsttoken-target"] == "b"
        assert "hedged" in response.headers["x-firsttoken-reason"]
        events = list(response.parse())
    created = [e.response.id for e in events if e.type == "response.created"]
    ended = events[-1]
    assert ended.type == "response.completed" and created == [ended.response.id]
    fleet.set_behaviour("a", FAST)
    c.responses.create(model="hedged", input="more", previous_response_id=ended.response.id)
    assert len(responses_seen(fleet, "b")) == 2 and len(responses_seen(fleet, "a")) == 1


def test_a_failure_after_the_first_event_ends_the_stream_in_the_responses_shape(
    fleet: Fleet,
) -> None:
    fleet.set_behaviour(
        "a", Behaviour(ttft_s=0.01, tokens=5, fault=Fault("die_after", after_tokens=2))
    )
    with (
        sdk(fleet) as c,
        pytest.raises(openai.APIError) as err,
        c.responses.create(model="ordered", input="hi", stream=True) as stream,
    ):
        for _ in stream:  # the stream and the client are closed when it raises
            pass
    assert "interrupted" in err.value.message
    r, events = raw_events(fleet, {"model": "ordered", "input": "hi", "stream": True})
    assert r.headers["x-firsttoken-target"] == "a"
    error, failed = events[-2:]
    assert error.startswith(b"event: error\n")
    ResponseErrorEvent.model_validate(data_of(error))
    ended = ResponseFailedEvent.model_validate(data_of(failed))
    created = data_of(events[0])["response"]
    assert isinstance(created, dict) and ended.response.id == created["id"]
    seqs = [data_of(e)["sequence_number"] for e in events]
    assert seqs == list(range(len(events)))
    assert responses_seen(fleet, "b") == []


def test_an_upstream_error_event_mid_stream_is_relayed_and_the_stream_ends(fleet: Fleet) -> None:
    fleet.set_behaviour(
        "a", Behaviour(ttft_s=0.01, tokens=5, fault=Fault("error_event_after", after_tokens=2))
    )
    before = parse_metrics(httpx.get(f"{fleet.router.url}/metrics").text)
    r, events = raw_events(fleet, {"model": "ordered", "input": "hi", "stream": True})
    assert [data_of(e)["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert b"interrupted" not in r.content  # the target's own words, nothing added
    after = parse_metrics(httpx.get(f"{fleet.router.url}/metrics").text)
    outcome = {"route": "ordered", "target": "a", "outcome": "error"}
    assert delta(before, after, "firsttoken_requests_total", **outcome) == 1


# -- bad input -----------------------------------------------------------------------------------


def test_unknown_fields_pass_through_and_bad_bodies_are_400s(fleet: Fleet) -> None:
    c = sdk(fleet)
    c.responses.create(model="ordered", input="x", extra_body={"x_vendor_knob": {"k": 1}})
    assert responses_seen(fleet, "a")[-1]["x_vendor_knob"] == {"k": 1}
    url = f"{fleet.router.base_url}/responses"
    headers = {"content-type": "application/json"}
    for body, says in [
        (b'{"model": "ordered", "input": ', "not valid JSON"),
        (b'{"model": "ordered", "input": 5}', "'input'"),
        (b'{"model": "ordered", "input": "x", "stream": "yes"}', "'stream'"),
        (
            b'{"model": "ordered", "previous_response_id": "r", "conversation": "c"}',
            "cannot be used together",
        ),
    ]:
        r = httpx.post(url, content=body, headers=headers)
        assert r.status_code == 400, body
        assert says in r.json()["error"]["message"]
        assert r.json()["error"]["type"] == "invalid_request_error"
