"""Metrics: bounded labels, the config's series, and every turn outcome from a real router.

The exposition against a real Prometheus, the deploy rules and the dashboard are
in tests/e2e/test_prometheus.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router.config import parse_config
from router.errors import TargetUnavailable, UpstreamConnectError, UpstreamStatusError
from router.metrics import OUTCOMES, Metrics, policy_type, status_class
from router.policy.base import Candidate, Plan
from router.sim.behaviour import Behaviour, Fault
from tests.e2e.harness import Fleet, LoopThread, eventually, start_fleet, stop_fleet

CONFIG = """
targets:
  - {name: a, kind: openai, base_url: "http://127.0.0.1:1/v1", model: m}
  - {name: b, kind: openai, base_url: "http://127.0.0.1:2/v1", model: m}
routes:
  - name: chat
    targets: [a, b]
    policy: {type: slo_cost}
    slo: {ttft_ms: 400}
  - name: fast
    targets: [b]
    hedge: {after_ms: 50}
"""
SMALLER = """
targets:
  - {name: a, kind: openai, base_url: "http://127.0.0.1:1/v1", model: m}
routes:
  - {name: chat, targets: [a], policy: {type: slo_cost}}
"""


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(text: str, name: str, **labels: str) -> float | None:
    for n, got, v in samples(text):
        if n == name and got == labels:
            return v
    return None


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def candidate(name: str, ttft: float = 0.2) -> Candidate:
    return Candidate(name, predicted_ttft_s=ttft, expected_cost_usd=0.0, score=0.5)


# -- the config's series ------------------------------------------------------------------


def test_configure_publishes_route_membership_and_creates_series_at_zero() -> None:
    m = Metrics()
    m.configure(parse_config(CONFIG))
    text = exposition(m)
    members = {
        (lab["route"], lab["target"])
        for n, lab, _ in samples(text)
        if n == "firsttoken_route_target_info"
    }
    assert members == {("chat", "a"), ("chat", "b"), ("fast", "b")}
    for outcome in OUTCOMES:
        assert (
            value(text, "firsttoken_requests_total", route="chat", target="a", outcome=outcome)
            == 0.0
        )
    assert value(text, "firsttoken_ttft_seconds_count", route="fast", target="b") == 0.0
    assert value(text, "firsttoken_hedges_total", route="fast", event="started") == 0.0
    assert value(text, "firsttoken_hedges_total", route="chat", event="started") is None
    assert value(text, "firsttoken_route_slo_ttft_seconds", route="chat") == pytest.approx(0.4)
    assert (
        value(text, "firsttoken_decisions_total", route="chat", target="a", reason="slo_cost")
        == 0.0
    )

    # A reload that drops route fast and target b from chat: membership and the
    # last-decision gauges follow; counters stay (they must never go backwards).
    m.decided("chat", Plan((candidate("a"), candidate("b")), "slo_cost: a meets the SLO"))
    m.configure(parse_config(SMALLER))
    text = exposition(m)
    assert value(text, "firsttoken_route_target_info", route="fast", target="b") is None
    assert value(text, "firsttoken_predicted_ttft_seconds", route="chat", target="b") is None
    assert value(text, "firsttoken_predicted_ttft_seconds", route="chat", target="a") == 0.2
    assert value(text, "firsttoken_ttft_seconds_count", route="fast", target="b") == 0.0


# -- bounded labels -----------------------------------------------------------------------


def test_decisions_are_labelled_by_policy_type_only() -> None:
    assert policy_type("slo_cost: explore b (last seen 30s ago) instead of a meets") == "slo_cost"
    assert policy_type("round_robin: place 2 of 3") == "round_robin"
    assert policy_type("p2c: only one target") == "p2c"
    assert policy_type("session 5f2c: user text") == "other"
    assert policy_type("") == "other"


def test_a_target_filtered_out_loses_its_last_prediction() -> None:
    m = Metrics()
    m.decided("chat", Plan((candidate("a", 0.1), candidate("b", 0.3)), "latency: a fastest"))
    m.decided("chat", Plan((candidate("a", 0.12),), "latency: a fastest"))
    text = exposition(m)
    assert value(text, "firsttoken_predicted_ttft_seconds", route="chat", target="a") == 0.12
    assert value(text, "firsttoken_predicted_ttft_seconds", route="chat", target="b") is None
    assert value(text, "firsttoken_score", route="chat", target="b") is None
    assert (
        value(text, "firsttoken_decisions_total", route="chat", target="a", reason="latency") == 2.0
    )


def test_a_fallback_left_out_is_counted_per_route_and_target() -> None:
    m = Metrics()
    m.fallback_skipped("chat", "b")
    m.fallback_skipped("chat", "b")
    text = exposition(m)
    assert value(text, "firsttoken_fallbacks_skipped_total", route="chat", target="b") == 2.0
    assert value(text, "firsttoken_fallbacks_skipped_total", route="chat", target="a") is None


def test_untyped_label_values_are_folded_into_their_vocabulary() -> None:
    m = Metrics()
    m.turn_done(
        "chat",
        "a",
        "ok",
        ttft_s=0.1,
        duration_s=0.5,
        prompt_tokens=3,
        completion_tokens=5,
        cost_usd=0.0,
    )
    # A target skipped because its breaker opened after the plan: no request reached
    # it, so the fallback's cause is `error` (the documented vocabulary has no more).
    skipped = TargetUnavailable("a: breaker open", target="a")
    m.fell_back("chat", "a", "b", skipped.cause)
    m.attempt_failed("chat", skipped)
    m.rejected(42)
    text = exposition(m)
    assert value(text, "firsttoken_requests_total", route="chat", target="a", outcome="ok") == 1
    assert (
        value(
            text,
            "firsttoken_fallbacks_total",
            route="chat",
            from_target="a",
            to_target="b",
            cause="error",
        )
        == 1
    )
    assert value(text, "firsttoken_upstream_errors_total", target="a", status_class="error") == 1
    assert value(text, "firsttoken_rejected_requests_total", status="other") == 1
    # Time per output token: the time after the first token over the tokens after it.
    assert value(
        text, "firsttoken_time_per_output_token_seconds_sum", route="chat", target="a"
    ) == pytest.approx(0.1)


def test_cached_input_and_reasoning_tokens_are_counted_beside_input_and_output() -> None:
    m = Metrics()
    m.turn_done(
        "chat",
        "a",
        "ok",
        ttft_s=0.1,
        duration_s=0.5,
        prompt_tokens=12,
        completion_tokens=30,
        cost_usd=0.0,
        cached_tokens=8,
        reasoning_tokens=20,
    )
    text = exposition(m)
    counted = {
        direction: value(
            text, "firsttoken_tokens_total", route="chat", target="a", direction=direction
        )
        for direction in ("input", "output", "cached_input", "reasoning")
    }
    assert counted == {"input": 12, "output": 30, "cached_input": 8, "reasoning": 20}


def test_status_class() -> None:
    assert status_class(UpstreamStatusError("x", target="a", upstream_status=503)) == "5xx"
    assert status_class(UpstreamStatusError("x", target="a", upstream_status=429)) == "4xx"
    assert status_class(UpstreamStatusError("x", target="a", upstream_status=999)) == "error"
    assert status_class(UpstreamConnectError("x", target="a")) == "connect"


# -- every outcome, from a real router ----------------------------------------------------

ROUTES = """
routes:
  - name: chat
    targets: [a, b]
    policy: {type: ordered}
  - name: hedged
    targets: [s, q]
    policy: {type: ordered}
    hedge: {after_ms: 30, max_rate: 1.0}
"""
FAST = Behaviour(ttft_s=0.02, itl_s=0.005, tokens=5)
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "secret-prompt-7c1e"}
]


@pytest.fixture
def fleet(loop_thread: LoopThread) -> Iterator[Fleet]:
    f = start_fleet(
        loop_thread,
        {"a": FAST, "b": FAST, "s": FAST, "q": FAST},
        ROUTES,
        header="signals: {breaker_failures: 100}",
    )
    yield f
    stop_fleet(f)


def scrape(fleet: Fleet) -> str:
    return httpx.get(f"{fleet.router.url}/metrics", timeout=5).text


def requests_total(fleet: Fleet, route: str, target: str, outcome: str) -> float | None:
    return value(
        scrape(fleet), "firsttoken_requests_total", route=route, target=target, outcome=outcome
    )


def test_every_outcome_is_counted(fleet: Fleet) -> None:
    c = openai.OpenAI(base_url=fleet.router.base_url, api_key="unused", max_retries=0)

    def turn(route: str = "chat") -> None:
        for _ in c.chat.completions.create(model=route, messages=MESSAGES, stream=True):
            pass

    turn()
    assert requests_total(fleet, "chat", "a", "ok") == 1

    fleet.set_behaviour("a", Behaviour(fault=Fault("status", status=500)))
    turn()
    assert requests_total(fleet, "chat", "b", "fell_back") == 1

    fleet.set_behaviour("s", Behaviour(ttft_s=0.3, itl_s=0.005, tokens=5))
    turn("hedged")
    assert requests_total(fleet, "hedged", "q", "hedged_won") == 1
    fleet.set_behaviour("s", Behaviour(ttft_s=0.06, itl_s=0.005, tokens=5))
    fleet.set_behaviour("q", Behaviour(ttft_s=0.5, itl_s=0.005, tokens=5))
    turn("hedged")
    assert requests_total(fleet, "hedged", "s", "hedged_lost") == 1
    text = scrape(fleet)
    events = {
        lab["event"]: v
        for n, lab, v in samples(text)
        if n == "firsttoken_hedges_total" and lab["route"] == "hedged"
    }
    assert events == {"started": 2, "won": 1, "lost": 1, "cancelled": 2, "capped": 0}
    # TTFT is what the client waited: the hedge delay is in it, not just the winner's 20 ms.
    ttft_sum = value(text, "firsttoken_ttft_seconds_sum", route="hedged", target="q")
    assert ttft_sum is not None and ttft_sum > 0.03

    fleet.set_behaviour("a", Behaviour(fault=Fault("die_after", after_tokens=2)))
    with pytest.raises(openai.APIError):
        turn()
    assert requests_total(fleet, "chat", "a", "error") == 1

    for name in ("a", "b"):
        fleet.set_behaviour(name, Behaviour(fault=Fault("status", status=503)))
    with pytest.raises(openai.InternalServerError):
        turn()
    assert requests_total(fleet, "chat", "none", "error") == 1


def test_a_client_leaving_is_client_cancelled_before_and_after_the_first_token(
    fleet: Fleet,
) -> None:
    fleet.set_behaviour("a", Behaviour(ttft_s=0.02, itl_s=0.05, tokens=200))
    c = openai.OpenAI(base_url=fleet.router.base_url, api_key="unused", max_retries=0)
    stream = c.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
    for n, _ in enumerate(stream):
        if n == 2:
            break
    stream.close()
    done = eventually(lambda: requests_total(fleet, "chat", "a", "client_cancelled") == 1)
    assert done, scrape(fleet)

    fleet.set_behaviour("a", Behaviour(ttft_s=0.8, itl_s=0.01, tokens=5))
    with (
        httpx.Client(base_url=fleet.router.base_url, timeout=0.2) as h,
        pytest.raises(httpx.ReadTimeout),
    ):
        h.post("/chat/completions", json={"model": "chat", "messages": MESSAGES, "stream": True})
    done = eventually(lambda: requests_total(fleet, "chat", "none", "client_cancelled") == 1)
    assert done, scrape(fleet)


def test_no_user_input_reaches_a_label(fleet: Fleet) -> None:
    secrets = ("secret-prompt-7c1e", "secret-session-91ab", "secret-model-44f0", "req-id-5d")
    with httpx.Client(base_url=fleet.router.base_url) as h:
        ok = h.post(
            "/chat/completions",
            json={"model": "chat", "messages": MESSAGES, "user": "secret-session-91ab"},
            headers={"x-session-id": "secret-session-91ab", "x-request-id": "req-id-5d"},
        )
        assert ok.status_code == 200
        missing = h.post(
            "/chat/completions", json={"model": "secret-model-44f0", "messages": MESSAGES}
        )
        assert missing.status_code == 404
        bad = h.post(
            "/chat/completions",
            content=b'{"model": "secret-model-44f0", "messages"',
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400
    text = scrape(fleet)
    assert not [s for s in secrets if s in text]
    labels = {(k, v) for _, lab, _ in samples(text) for k, v in lab.items()}
    assert ("status", "404") in labels and ("status", "400") in labels


def test_a_unary_answer_books_its_time_to_first_byte_but_no_time_per_token() -> None:
    """A non-streaming answer arrives whole: (duration - TTFT) is ~0 and would drag the
    time-per-output-token histogram toward zero."""
    m = Metrics()
    for streamed in (True, False):
        m.turn_done(
            "chat",
            "a" if streamed else "b",
            "ok",
            ttft_s=0.5,
            duration_s=0.5,
            prompt_tokens=3,
            completion_tokens=40,
            cost_usd=0.0,
            streamed=streamed,
        )
    text = exposition(m)
    for target in ("a", "b"):
        assert value(text, "firsttoken_ttft_seconds_count", route="chat", target=target) == 1
    assert (
        value(text, "firsttoken_time_per_output_token_seconds_count", route="chat", target="a") == 1
    )
    assert not value(
        text, "firsttoken_time_per_output_token_seconds_count", route="chat", target="b"
    )


def test_every_metric_is_documented() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    registry = Metrics().registry
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in text, f"{name} is not in docs/metrics.md"


def test_a_relayed_call_is_counted_by_target_call_and_outcome() -> None:
    m = Metrics()
    m.relayed_call("a", "conversation_create", "not_here")
    m.relayed_call("a", "conversation_create", "not_here")
    labels = {"target": "a", "call": "conversation_create", "outcome": "not_here"}
    assert m.registry.get_sample_value("firsttoken_relayed_calls_total", labels) == 2
