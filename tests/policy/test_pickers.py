from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from router.policy.latency import LatencyPolicy, SloCostPolicy
from router.policy.p2c import PowerOfTwoChoicesPolicy
from router.policy.predict import attainment, predict_ttft_s
from router.policy.registry import plan_turn
from router.policy.simple import OrderedPolicy, RandomPolicy, RoundRobinPolicy
from tests.policy.views import FREE, PRICEY, ctx, hosted, request, vllm

ABC = [hosted("a", 0.6), hosted("b", 0.3), hosted("c", 0.9)]


def test_ordered_keeps_the_listed_order_and_skips_the_filtered() -> None:
    plan = plan_turn(OrderedPolicy(), request(), ABC, ctx())
    assert plan.order == ("a", "b", "c")
    assert plan.reason == "ordered: first available in listed order"
    down = [hosted("a", 0.6, breaker="open", available=False), *ABC[1:]]
    plan = plan_turn(OrderedPolicy(), request(), down, ctx())
    assert plan.order == ("b", "c")
    assert plan.rejected == (("a", "breaker open"),)
    assert [c.score for c in plan.candidates] == pytest.approx([1.0, 0.5])


def test_round_robin_rotates_one_place_per_turn() -> None:
    policy = RoundRobinPolicy()
    orders = [plan_turn(policy, request(), ABC, ctx()).order for _ in range(4)]
    assert orders == [("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b"), ("a", "b", "c")]
    assert plan_turn(policy, request(), ABC, ctx()).reason == "round_robin: place 2 of 3"


def test_random_is_a_seeded_shuffle() -> None:
    policy = RandomPolicy()
    first = Counter(plan_turn(policy, request(), ABC, ctx(seed)).order[0] for seed in range(300))
    assert set(first) == {"a", "b", "c"}
    assert min(first.values()) > 60
    assert plan_turn(policy, request(), ABC, ctx(7)).order == (
        plan_turn(policy, request(), ABC, ctx(7)).order
    )


def test_latency_orders_by_predicted_ttft_at_its_quantile() -> None:
    plan = plan_turn(LatencyPolicy(0.9), request(), ABC, ctx())
    assert plan.order == ("b", "a", "c")
    assert plan.reason == "latency: lowest predicted p90 (pred 300ms)"
    assert [c.predicted_ttft_s for c in plan.candidates] == pytest.approx([0.3, 0.6, 0.9])
    assert [c.score for c in plan.candidates] == pytest.approx([1.0, 0.5, 1 / 3])
    # A fast median does not help a heavy tail when the policy looks at p90.
    tail = [hosted("steady", 0.3, p50=0.25), hosted("spiky", 0.5, p50=0.1)]
    assert plan_turn(LatencyPolicy(0.9), request(), tail, ctx()).order == ("steady", "spiky")
    assert plan_turn(LatencyPolicy(0.5), request(), tail, ctx()).order == ("spiky", "steady")


def test_latency_avoids_a_stale_engine_yet_a_stale_only_fleet_routes() -> None:
    fleet = [vllm("gpu", stale=True), hosted("api", 0.8)]
    assert plan_turn(LatencyPolicy(), request(), fleet, ctx()).order == ("api", "gpu")
    stale_only = [vllm("gpu1", stale=True, in_flight=3), vllm("gpu2", stale=True)]
    assert plan_turn(LatencyPolicy(), request(), stale_only, ctx()).order == ("gpu2", "gpu1")


def test_p2c_leads_with_the_lighter_of_the_two_sampled() -> None:
    # peak-EWMA x (in-flight + 1): a 0.1, b 0.3, c 0.5, d 0.7
    fleet = [
        hosted(n, 0.3, ttft_ewma_s=0.1, in_flight=k)
        for n, k in zip("abcd", (0, 2, 4, 6), strict=True)
    ]
    policy = PowerOfTwoChoicesPolicy()
    for seed in range(50):
        i, j = random.Random(seed).sample(range(4), 2)
        plan = plan_turn(policy, request(), fleet, ctx(seed))
        assert plan.order[0] == "abcd"[min(i, j)]
        rest = [n for n in "abcd" if n != plan.order[0]]
        assert plan.order[1:] == tuple(rest)
    assert plan.reason.startswith("p2c: lighter of two sampled (load ")


def test_p2c_distribution_favours_the_lighter_target() -> None:
    fleet = [
        hosted(n, 0.3, ttft_ewma_s=0.1, in_flight=k) for n, k in zip("abc", (0, 2, 4), strict=True)
    ]
    policy = PowerOfTwoChoicesPolicy()
    first = Counter(plan_turn(policy, request(), fleet, ctx(s)).order[0] for s in range(3000))
    # pairs {a,b} and {a,c} go to a, {b,c} to b; c never leads
    assert first["c"] == 0
    assert 0.62 < first["a"] / 3000 < 0.71
    assert 0.29 < first["b"] / 3000 < 0.38


def test_slo_cost_keeps_local_while_short_spills_when_queued_returns_when_drained() -> None:
    policy = SloCostPolicy()
    c = ctx(slo_ms=500)
    api = hosted("api", 0.25)
    orders = []
    reasons = []
    for waiting in (0, 1, 3, 8, 1, 0):
        plan = plan_turn(policy, request(), [vllm("gpu", waiting=waiting), api], c)
        orders.append(plan.order[0])
        reasons.append(plan.reason)
    assert orders == ["gpu", "gpu", "api", "api", "gpu", "gpu"]
    assert reasons[0] == "slo_cost: cheapest meeting p90<=500ms (pred 100ms, $0)"
    # 1 waiting: 2 slots to free at 10/s, Erlang(2) p90 = 3.89 / 10 s, + 0.05 + 0.05
    assert reasons[1] == "slo_cost: cheapest meeting p90<=500ms (pred 489ms, $0)"
    assert reasons[2] == "slo_cost: cheapest meeting p90<=500ms (pred 250ms, $0.00021)"


def test_slo_cost_prefers_the_cheaper_of_two_meeting_and_ranks_the_rest_by_ttft() -> None:
    fleet = [
        hosted("pricey_fast", 0.1, price=PRICEY),
        hosted("slow", 0.9),
        hosted("cheap_ok", 0.28),
        hosted("slower", 2.0),
    ]
    plan = plan_turn(SloCostPolicy(), request(), fleet, ctx(slo_ms=300))
    assert plan.order == ("cheap_ok", "pricey_fast", "slow", "slower")
    assert [c.expected_cost_usd for c in plan.candidates[:2]] == pytest.approx([0.00021, 0.00042])


def test_slo_cost_does_not_trust_an_slo_read_off_a_few_samples() -> None:
    # A free engine measured three times at p99 280 ms may well be slower than that:
    # at the SLO's edge it has not earned a p99 of 300 ms yet; a cheap API measured
    # a hundred times at 150 ms has.
    api = hosted("api", 0.1, p99=0.15, ttft_evidence=100.0)
    thin = hosted("gpu", 0.2, p99=0.28, price=FREE, ttft_samples=3, ttft_evidence=3.0)
    slo = ctx(slo_ms=300, quantile=0.99)
    assert plan_turn(SloCostPolicy(), request(), [api, thin], slo).order == ("api", "gpu")
    known = replace(thin, ttft_samples=100, ttft_evidence=100.0)
    assert plan_turn(SloCostPolicy(), request(), [api, known], slo).order == ("gpu", "api")


def test_slo_cost_when_none_meets_takes_the_likeliest_to_make_it() -> None:
    fleet = [vllm("gpu", waiting=20), hosted("api", 0.6), hosted("api2", 0.5, price=PRICEY)]
    plan = plan_turn(SloCostPolicy(), request(), fleet, ctx(slo_ms=300))
    assert plan.order == ("api2", "api", "gpu")
    # api2's p50 250 ms, p90 500 ms: within 300 ms 58 % of the time (api: 50 %)
    assert (
        plan.reason == "slo_cost: none meets p90<=300ms, likeliest within 300ms (58%, pred 500ms)"
    )
    # A fast API whose p99 is a stall beats a full engine whose p99 is a long queue
    # when the route asks for p99: it answers in time far more often.
    stalls = hosted("api", 0.25, p50=0.15, p99=3.0)
    full = vllm("gpu", running=8, in_flight=8, waiting=2, unloaded=0.05, rate=4.0, p50=0.2)
    plan = plan_turn(SloCostPolicy(), request(), [full, stalls], ctx(slo_ms=300, quantile=0.99))
    assert plan.order == ("api", "gpu")
    assert predict_ttft_s(stalls, 0.99) > predict_ttft_s(full, 0.99)


def test_slo_cost_sends_a_lost_turn_where_it_is_answered_soonest() -> None:
    # A queued engine (2 waiting, 8 running) answers within 300 ms 8 % of the time, at
    # p90 in 1.43 s; an API never under 300 ms answers at p90 in 0.9 s. Neither is
    # likely to make the SLO, so the turn goes to the sooner, not to the engine's slim
    # chance (whose queue it would deepen for the turns behind it).
    queued = vllm("gpu", waiting=2, running=8, rate=4.0)
    api = hosted("api", 0.9, p50=0.6, p99=1.2)
    assert attainment(queued, 0.3) == pytest.approx(0.08, abs=0.01)
    assert attainment(api, 0.3) == 0.0
    plan = plan_turn(SloCostPolicy(), request(), [queued, api], ctx(slo_ms=300))
    assert plan.order == ("api", "gpu")
    assert plan.reason == (
        "slo_cost: none meets p90<=300ms or is likely within 300ms (best 8%),"
        " soonest at p90 (pred 900ms)"
    )
    # Soonest, whatever its kind: an API slower at p90 than the queue leaves the engine first.
    slow_api = hosted("api", 3.0, p50=2.0, p99=4.0)
    plan = plan_turn(SloCostPolicy(), request(), [slow_api, queued], ctx(slo_ms=300))
    assert plan.order == ("gpu", "api")
    assert plan.reason.endswith("(best 8%), soonest at p90 (pred 1431ms)")
    # A target likely to make it (here 58 %) still goes first: the turn is not lost.
    likely = hosted("api2", 0.5, p50=0.25)
    plan = plan_turn(SloCostPolicy(), request(), [queued, api, likely], ctx(slo_ms=300))
    assert plan.order[0] == "api2"
    assert "likeliest within 300ms (58%" in plan.reason


def test_slo_cost_without_slo_behaves_like_latency_and_says_so() -> None:
    plan = plan_turn(SloCostPolicy(), request(), ABC, ctx())
    assert plan.order == plan_turn(LatencyPolicy(), request(), ABC, ctx()).order
    assert plan.reason == "slo_cost: no SLO configured, lowest predicted p90 (pred 300ms)"


@pytest.mark.parametrize("policy", [LatencyPolicy(), SloCostPolicy(), PowerOfTwoChoicesPolicy()])
def test_affinity_leads_while_it_meets_the_slo(
    policy: LatencyPolicy | SloCostPolicy | PowerOfTwoChoicesPolicy,
) -> None:
    fast = hosted("fast", 0.1, ttft_ewma_s=0.05)
    # pred 0.05 + Erlang(1 + 1) p90 / 10 + 0.05 = 0.1 + 0.389 s, the heavier in p2c
    warm_ok = vllm("warm", waiting=1, in_flight=3)
    plan = plan_turn(policy, request(affinity="warm"), [fast, warm_ok], ctx(slo_ms=500))
    assert plan.order == ("warm", "fast")
    assert "affinity" in plan.reason
    assert plan.reason.endswith("affinity (pred 489ms, within p90<=500ms)")

    warm_slow = vllm("warm", waiting=3, in_flight=3)  # 0.1 + Erlang(3 + 1) p90 / 10 = 768ms
    plan = plan_turn(policy, request(affinity="warm"), [fast, warm_slow], ctx(slo_ms=500))
    assert plan.order == ("fast", "warm")
    assert plan.reason.endswith("affinity warm dropped (pred 768ms > p90<=500ms)")

    # no SLO: affinity always holds
    plan = plan_turn(policy, request(affinity="warm"), [fast, warm_slow], ctx())
    assert plan.order == ("warm", "fast")


def test_affinity_to_a_filtered_target_is_ignored() -> None:
    fleet = [hosted("fast", 0.1), hosted("warm", 0.2, breaker="open", available=False)]
    plan = plan_turn(LatencyPolicy(), request(affinity="warm"), fleet, ctx(slo_ms=300))
    assert plan.order == ("fast",)
    assert "affinity" not in plan.reason


def test_slo_cost_affinity_never_moves_a_turn_to_a_dearer_target_within_the_slo() -> None:
    # A spill or a hedge put this conversation on a priced API; the free engine meets
    # the SLO again: slo_cost sends the turn back (the cache a priced API may hold is
    # not worth its price), where latency keeps the affinity.
    local = vllm("local", waiting=0, running=0, in_flight=0)
    api = hosted("api", 0.2, price=PRICEY)
    plan = plan_turn(SloCostPolicy(), request(affinity="api"), [local, api], ctx(slo_ms=500))
    assert plan.order == ("local", "api")
    assert plan.reason.endswith("affinity api dropped (dearer than local within the SLO)")
    plan = plan_turn(LatencyPolicy(), request(affinity="api"), [local, api], ctx(slo_ms=500))
    assert plan.order == ("api", "local")
    # When the free engine cannot promise the SLO, the affinity holds as before.
    queued = vllm("local", waiting=8, running=2, in_flight=10)
    plan = plan_turn(SloCostPolicy(), request(affinity="api"), [queued, api], ctx(slo_ms=500))
    assert plan.order == ("api", "local")
