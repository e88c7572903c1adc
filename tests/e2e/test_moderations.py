"""`/v1/moderations` through the router with the official `openai` SDK: the route from
`model`, from a route named as OpenAI's default model, or the only one serving it; a
target that cannot be reached passed over; what a route without it answers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from router.sim.behaviour import Behaviour
from tests.e2e.harness import Fleet, LoopThread, start_fleet, stop_fleet

FAST = Behaviour(ttft_s=0.01, itl_s=0.002, tokens=5)
TIMEOUTS = "timeouts: {connect_s: 0.5, first_token_s: 0.5, idle_s: 1.0, total_s: 2.0}"
ROUTES = """
routes:
  - {name: mod, targets: [a, b], policy: {type: ordered}, exploration: 0}
  - {name: omni-moderation-latest, targets: [b], exploration: 0}
  - {name: engine, targets: [v]}
"""


@pytest.fixture
def fleet(loop_thread: LoopThread) -> Iterator[Fleet]:
    f = start_fleet(
        loop_thread,
        {"a": FAST, "b": FAST, "v": FAST},
        ROUTES,
        kinds={"v": "vllm"},
        target_extra={"a": TIMEOUTS, "b": TIMEOUTS, "v": "probe: false"},
    )
    yield f
    stop_fleet(f)


def sdk(fleet: Fleet) -> openai.OpenAI:
    http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
    return openai.OpenAI(
        base_url=fleet.router.base_url, api_key="unused", max_retries=0, http_client=http
    )


def test_a_batch_is_moderated_by_the_routes_first_target(fleet: Fleet) -> None:
    with sdk(fleet) as c:
        answer = c.moderations.create(model="mod", input=["hello there", "I will attack"])
    assert answer.model == "a-model"  # each target is sent its own model name
    assert [r.flagged for r in answer.results] == [False, True]
    assert answer.results[1].categories.violence


def test_without_a_model_the_route_named_as_openais_default_answers(fleet: Fleet) -> None:
    with sdk(fleet) as c:
        answer = c.moderations.create(input="hello")
    assert answer.model == "b-model" and not answer.results[0].flagged


def test_a_target_that_cannot_be_reached_is_passed_over(fleet: Fleet) -> None:
    fleet.loop.run(fleet.sim("a").stop())
    with sdk(fleet) as c:
        answer = c.moderations.create(model="mod", input="kill the lights")
    assert answer.model == "b-model" and answer.results[0].flagged
    calls = fleet.router.router.metrics.registry.get_sample_value
    labels = {"call": "moderation"}
    assert calls("firsttoken_relayed_calls_total", {**labels, "target": "a", "outcome": "failed"})
    assert calls("firsttoken_relayed_calls_total", {**labels, "target": "b", "outcome": "ok"})


def test_bad_calls_get_errors_in_openais_shape(fleet: Fleet) -> None:
    with sdk(fleet) as c:
        with pytest.raises(openai.BadRequestError) as err:
            c.moderations.create(model="engine", input="x")  # vLLM serves no moderations
        assert "serves no /v1/moderations" in err.value.message
        with pytest.raises(openai.NotFoundError):
            c.moderations.create(model="nope", input="x")
    r = httpx.post(f"{fleet.router.base_url}/moderations", json={"model": "mod"})
    assert r.status_code == 400 and "'input' is required" in r.json()["error"]["message"]
    r = httpx.post(f"{fleet.router.base_url}/moderations", json={"model": "mod", "input": 3})
    assert r.status_code == 400  # the target's own 400, relayed
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_without_a_default_route_a_model_is_needed_where_several_serve_it(
    loop_thread: LoopThread,
) -> None:
    routes = "routes:\n  - {name: one, targets: [a]}\n  - {name: two, targets: [b]}\n"
    f = start_fleet(loop_thread, {"a": FAST, "b": FAST}, routes)
    try:
        with sdk(f) as c, pytest.raises(openai.BadRequestError) as err:
            c.moderations.create(input="x")
        assert "one, two" in err.value.message and "'model'" in err.value.message
    finally:
        stop_fleet(f)
