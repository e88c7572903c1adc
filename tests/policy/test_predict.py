from __future__ import annotations

import math
from dataclasses import replace

import pytest

from router.policy.base import EngineView, TargetView
from router.policy.predict import (
    DEFAULT_OUTPUT_TOKENS,
    STALE_PENALTY_S,
    attainment,
    doubt,
    erlang_quantile,
    expected_cost_usd,
    expected_wait_s,
    load,
    optimistic_ttft_s,
    predict_ttft_s,
    ratelimit_factor,
    slots_needed,
    wait_quantile_s,
    waiting_ahead,
)
from tests.policy.views import CHEAP, hosted, request, vllm


def test_hosted_prediction_is_the_measured_sketch() -> None:
    view = hosted("gpt", p50=0.4, p90=0.6, p99=1.2)
    assert predict_ttft_s(view, 0.5) == pytest.approx(0.4)
    assert predict_ttft_s(view, 0.9) == pytest.approx(0.6)
    # interpolated between the sketch's points
    assert predict_ttft_s(view, 0.95) == pytest.approx(0.6 + 0.6 * (0.05 / 0.09))


def test_a_measured_target_is_believed_from_its_first_samples() -> None:
    # Two answers at 150-180 ms against a 500 ms prior: a fast target looks fast at once
    # (hedge losses enter the sketch as censored samples, so these are not just the
    # races it happened to win) ...
    fast = hosted("new", p90=0.18, p50=0.15, ttft_samples=2, prior_ttft_s=0.5)
    assert predict_ttft_s(fast, 0.9) == pytest.approx(0.18)
    # ... and a slow one slow.
    slow = replace(fast, ttft_quantiles=((0.5, 0.6), (0.9, 1.1), (0.99, 3.0)))
    assert predict_ttft_s(slow, 0.9) == pytest.approx(1.1)


def test_the_optimistic_prediction_is_what_little_evidence_allows() -> None:
    unmeasured = hosted("new", p90=0.5, ttft_samples=0, ttft_optimistic=((0.5, 0.0), (0.9, 0.0)))
    assert optimistic_ttft_s(unmeasured, 0.9) == 0.0
    known = hosted("known", p90=0.3, ttft_optimistic=((0.5, 0.1), (0.9, 0.25), (0.99, 0.5)))
    assert optimistic_ttft_s(known, 0.9) == pytest.approx(0.25)
    # an engine: its queue is seen, not guessed; only its unloaded TTFT may be better
    gpu = vllm("gpu", unloaded=0.08, ttft_optimistic=((0.5, 0.02), (0.9, 0.05)), in_flight=0)
    assert optimistic_ttft_s(gpu, 0.9) == pytest.approx(0.02)
    # a view made without bounds (a hand-made one) is not optimistic at all
    assert optimistic_ttft_s(hosted("plain", p90=0.4), 0.9) == pytest.approx(0.4)


def test_attainment_is_the_predicted_chance_of_answering_in_time() -> None:
    api = hosted("api", p50=0.2, p90=0.4, p99=2.0)
    assert attainment(api, 0.4) == pytest.approx(0.9, abs=0.002)
    assert attainment(api, 0.3) == pytest.approx(0.7, abs=0.002)  # between p50 and p90
    assert attainment(api, 5.0) == 1.0
    assert attainment(api, 0.1) < 0.02
    # an engine whose full batch frees 10 slots/s: the wait for one slot is exponential
    engine = EngineView(waiting=0, running=8, kv_usage=0.3, age_s=0.1, stale=False, capacity=8)
    full = vllm("gpu", in_flight=8, unloaded=0.05, p50=0.05, p90=0.05, engine=engine, rate=10.0)
    assert attainment(full, 0.05 + math.log(10) / 10) == pytest.approx(0.9, abs=0.002)


def test_hosted_near_its_rate_limit_predicts_slower() -> None:
    plenty = hosted("gpt", p90=0.6, ratelimit_headroom=0.5)
    near = hosted("gpt", p90=0.6, ratelimit_headroom=0.1)
    none_left = hosted("gpt", p90=0.6, ratelimit_headroom=0.0)
    assert predict_ttft_s(plenty, 0.9) == pytest.approx(0.6)
    assert predict_ttft_s(near, 0.9) == pytest.approx(0.6 * 2.5)
    assert predict_ttft_s(none_left, 0.9) == pytest.approx(0.6 * 4.0)
    assert ratelimit_factor(0.2) == 1.0


def test_erlang_quantile_is_the_time_of_the_kth_poisson_event() -> None:
    # One event: the exponential's quantile, -ln(1 - q).
    assert erlang_quantile(1, 0.9) == pytest.approx(math.log(10), rel=1e-9)
    assert erlang_quantile(1, 0.5) == pytest.approx(math.log(2), rel=1e-9)
    # k events: twice the chi-square quantile with 2k degrees of freedom (13.362 for 8, p90).
    assert 2 * erlang_quantile(4, 0.9) == pytest.approx(13.3616, abs=1e-4)
    x = erlang_quantile(2, 0.9)  # P(T <= x) = 1 - e^-x (1 + x)
    assert 1 - math.exp(-x) * (1 + x) == pytest.approx(0.9, abs=1e-9)
    assert erlang_quantile(0, 0.9) == 0.0


def test_vllm_prediction_is_unloaded_plus_queue_wait_quantile_plus_spread() -> None:
    # 0.05 unloaded + the 4 slots (3 waiting + its own) freed at 10 per s, at p90,
    # + (0.15 - 0.10) spread
    queued = vllm("local", waiting=3)
    assert slots_needed(queued) == 4
    assert predict_ttft_s(queued, 0.9) == pytest.approx(0.05 + 6.6808 / 10 + 0.05, abs=1e-5)
    assert predict_ttft_s(queued, 0.9) > 0.05 + expected_wait_s(queued) + 0.05  # > the mean
    assert wait_quantile_s(queued, 0.5) == pytest.approx(erlang_quantile(4, 0.5) / 10)
    assert predict_ttft_s(vllm("local", waiting=0), 0.9) == pytest.approx(0.10)
    assert predict_ttft_s(vllm("local", waiting=0), 0.5) == pytest.approx(0.05)


def test_vllm_counts_the_routers_own_newer_turns_as_waiting() -> None:
    # The scrape saw 4 running and nothing waiting; the router has sent 10 since.
    view = vllm("local", waiting=0, running=4, in_flight=10)
    assert expected_wait_s(view) == pytest.approx((6 + 1) / 10)
    assert load(view) == pytest.approx(16.0)
    # When the engine reports more waiting (other clients), the engine wins.
    busy = vllm("local", waiting=8, running=4, in_flight=10)
    assert expected_wait_s(busy) == pytest.approx((8 + 1) / 10)


def test_turns_in_transit_to_an_engine_of_unknown_batch_size_fit_the_room_it_proved() -> None:
    # Scraped 3 running and none waiting, 6 of ours in flight: the gauges lag the three
    # sent since. A scrape once saw 5 running, so 5 fit; only the sixth may wait.
    seen = EngineView(waiting=0, running=3, kv_usage=0.3, age_s=0.1, stale=False)
    lagging = vllm("large", in_flight=6, engine=replace(seen, proven_running=5.0))
    assert slots_needed(lagging) == 2
    assert expected_wait_s(lagging) == pytest.approx(2 / 10)
    # Never more than 3 seen running: the three sent since may all be queued.
    assert slots_needed(vllm("large", in_flight=6, engine=replace(seen, proven_running=3.0))) == 4
    # A queue in the scrape says the batch is full now, whatever ran before.
    queued = replace(seen, waiting=1, proven_running=5.0)
    assert slots_needed(vllm("large", in_flight=6, engine=queued)) == 4


def test_stale_engines_are_ranked_by_our_turns_per_slot_they_proved() -> None:
    # The router stalled: both scrapes are old. The 8-slot engine holds 8 of ours, the
    # 2-slot one 3: the latter's turns wait for slots longer (3 per 2 slots vs 8 per 8).
    old = EngineView(waiting=0, running=2, kv_usage=0.1, age_s=2.1, stale=True)
    big = vllm("large", in_flight=8, rate=0.3, engine=replace(old, proven_running=8.0))
    small = vllm("small", in_flight=3, rate=0.3, engine=replace(old, proven_running=2.0))
    assert STALE_PENALTY_S < expected_wait_s(big) < expected_wait_s(small)
    # A learned capacity counts as proven room too.
    known = vllm("small", in_flight=3, rate=0.3, engine=replace(old, capacity=8.0))
    assert expected_wait_s(known) < expected_wait_s(small)


def test_an_engine_that_never_showed_a_queue_is_believed_to_have_twice_the_room_it_proved() -> None:
    # A fresh router saw this engine run 1 at a time (its first turns); 2 of ours are in
    # transit and its scrape shows it idle. Never a queue: both are believed running.
    fresh = EngineView(waiting=0, running=0, kv_usage=0.0, age_s=0.5, stale=False)
    unseen = replace(fresh, proven_running=1.0, queue_seen=False)
    view = vllm("large", in_flight=2, rate=0.3, engine=unseen)
    assert (waiting_ahead(view), slots_needed(view), wait_quantile_s(view, 0.9)) == (0.0, 0, 0.0)
    # Slow start: room for twice the proven 1; of 5 in flight (a stall bunched them), 3 wait.
    bunched = vllm("large", in_flight=5, rate=0.3, engine=unseen)
    assert (waiting_ahead(bunched), slots_needed(bunched)) == (3.0, 4)
    assert waiting_ahead(vllm("large", in_flight=5, engine=replace(unseen, running=3))) == 0.0
    # Once a queue was seen, the turns beyond the proven room may be queued (as above):
    # one ahead, and its own slot, at 0.3 turns/s.
    seen = vllm("large", in_flight=2, rate=0.3, engine=replace(unseen, queue_seen=True))
    assert slots_needed(seen) == 2
    assert wait_quantile_s(seen, 0.9) == pytest.approx(erlang_quantile(2, 0.9) / 0.3)
    # A queue in this very scrape counts, seen before or not.
    waiting = vllm("large", in_flight=2, engine=replace(unseen, waiting=3.0))
    assert waiting_ahead(waiting) == 3.0


def test_vllm_without_measured_rate_uses_littles_law() -> None:
    # 4 running turns each lasting 0.05 + 100 x 0.01 s complete at 4 / 1.05 per s
    view = vllm("local", waiting=2, running=4, rate=None, mean_output_tokens=100.0, tpot_s=0.01)
    assert expected_wait_s(view) == pytest.approx((2 + 1) * 1.05 / 4)


def test_a_queue_drains_at_the_engines_decode_pace_now() -> None:
    # The router's turns saw 10 ms a token when they finished (a small batch); the
    # engine's page says its batch of 4 now steps every 40 ms: each turn lasts
    # 0.05 + 100 x 0.04 s, and the two waiting plus this turn's slot drain at 4 / 4.05.
    view = vllm("local", waiting=2, running=4, rate=None, mean_output_tokens=100.0, tpot_s=0.01)
    assert view.engine is not None
    slow = replace(view, engine=replace(view.engine, decode_s=0.04))
    assert expected_wait_s(slow) == pytest.approx((2 + 1) * 4.05 / 4)
    assert predict_ttft_s(slow, 0.9) > predict_ttft_s(view, 0.9)
    # a batch that shrank steps faster than the turns measured: the queue drains sooner
    fast = replace(view, engine=replace(view.engine, decode_s=0.005))
    assert expected_wait_s(fast) == pytest.approx((2 + 1) * 0.55 / 4)


def test_stale_engine_counts_as_saturated_but_finite() -> None:
    stale = vllm("local", waiting=0, stale=True)
    predicted = predict_ttft_s(stale, 0.9)
    assert predicted == pytest.approx(0.05 + STALE_PENALTY_S + 0.05)
    assert predicted < float("inf")
    assert predict_ttft_s(vllm("local", stale=True, in_flight=5), 0.9) > predicted


def test_vllm_before_its_first_scrape_has_no_queue() -> None:
    view = TargetView(
        name="local",
        kind="vllm",
        price=CHEAP,
        unloaded_ttft_s=0.05,
        ttft_quantiles=((0.5, 0.1), (0.9, 0.15), (0.99, 0.3)),
        in_flight=3,
    )
    assert predict_ttft_s(view, 0.9) == pytest.approx(0.10)
    fresh = vllm("local", engine=EngineView(0, 0, 0, 0, stale=False))
    assert predict_ttft_s(fresh, 0.9) == pytest.approx(0.10)


def test_expected_cost_per_turn() -> None:
    view = hosted("gpt", p90=0.6, price=CHEAP)
    # 1000 x $0.15/M + 100 x $0.60/M
    assert expected_cost_usd(view, request(1000, 100)) == pytest.approx(0.00021)
    # no max_output_tokens: the target's observed mean
    observed = hosted("gpt", p90=0.6, price=CHEAP, mean_output_tokens=50.0)
    assert expected_cost_usd(observed, request(1000, None)) == pytest.approx(0.00018)
    # nothing known: the default
    assert expected_cost_usd(view, request(0, None)) == pytest.approx(
        DEFAULT_OUTPUT_TOKENS * 0.6 / 1e6
    )
    assert expected_cost_usd(vllm("local"), request(1000, 100)) == 0.0


def test_a_drained_engine_is_not_held_back_by_the_spread_its_queue_caused() -> None:
    # After a burst the sketch remembers a 1.2 s p90, but the queue is empty now:
    # the spread is bounded by the unloaded TTFT, so the engine predicts 2x unloaded.
    view = vllm("gpu", waiting=0, running=0, unloaded=0.03, p50=0.3, p90=1.2)
    assert predict_ttft_s(view, 0.9) == pytest.approx(0.03 + 0.0 + 0.03)


def test_a_quiet_engines_arrival_rate_does_not_undercut_its_capacity() -> None:
    # 1 turn/s measured on a quiet engine is the arrival rate; Little's law over a
    # batch of 4 turns of 0.05 + 100 x 0.01 s says it can do 4 / 1.05 per second.
    view = vllm(
        "gpu",
        waiting=4,
        running=4,
        unloaded=0.05,
        rate=1.0,
        p50=0.05,
        p90=0.05,
        tpot_s=0.01,
        mean_output_tokens=100.0,
    )
    assert predict_ttft_s(view, 0.9) == pytest.approx(0.05 + erlang_quantile(4 + 1, 0.9) * 1.05 / 4)


def test_a_known_batch_size_counts_only_what_does_not_fit() -> None:
    # Scraped: 1 running, nothing waiting; the router has sent 5 since. Unknown
    # capacity: 4 of them count as waiting. A batch of 8: they all run.
    unknown = vllm("big", waiting=0, running=1, in_flight=5)
    assert unknown.engine is not None
    roomy = replace(unknown, engine=replace(unknown.engine, capacity=8.0))
    assert expected_wait_s(unknown) == pytest.approx((4 + 1) / 10)
    assert expected_wait_s(roomy) == 0.0
    small = replace(unknown, engine=replace(unknown.engine, capacity=2.0))
    assert expected_wait_s(small) == pytest.approx((3 + 1) / 10)  # 5 held, 2 run


def test_a_batch_that_is_exactly_full_makes_a_new_turn_wait_for_one_slot() -> None:
    # 8 held by a batch of 8, nothing waiting: the ninth waits for one to finish,
    # ln(10) / 10 s at p90. With 7 held it runs at once.
    view = vllm("gpu", waiting=0, running=8, in_flight=8, p50=0.05, p90=0.05)
    assert view.engine is not None
    full = replace(view, engine=replace(view.engine, capacity=8.0))
    assert slots_needed(full) == 1
    assert expected_wait_s(full) == pytest.approx(1 / 10)
    assert predict_ttft_s(full, 0.9) == pytest.approx(0.05 + math.log(10) / 10)
    assert full.engine is not None
    roomy = replace(full, in_flight=7, engine=replace(full.engine, running=7.0))
    assert slots_needed(roomy) == 0
    assert predict_ttft_s(roomy, 0.9) == pytest.approx(0.05)
    # A batch size learned too small (4) is no smaller than what the engine runs now (8).
    learned_low = replace(full, engine=replace(full.engine, capacity=4.0))
    assert slots_needed(learned_low) == 1


def test_doubt_grows_as_evidence_thins_and_stays_finite_when_it_has_all_but_decayed() -> None:
    # 1.9x on one sample, 1.07x on a hundred, 1 with none (the prior stands for it) ...
    assert doubt(hosted("a", 0.1, ttft_evidence=1.0)) == pytest.approx(1.898, abs=1e-3)
    assert doubt(hosted("a", 0.1, ttft_evidence=100.0)) == pytest.approx(1.066, abs=1e-3)
    assert doubt(hosted("a", 0.1, ttft_evidence=0.0)) == 1.0
    # ... and a sample from hours ago (evidence 1e-12) is not a crash in the planner
    # (an OverflowError in exp): it counts as a quarter of a sample, 3.6x.
    assert doubt(hosted("a", 0.1, ttft_evidence=1e-12)) == pytest.approx(3.6, abs=0.01)


def test_an_empty_engine_is_not_held_back_by_one_slow_free_slot_turn() -> None:
    # A burst left one 460 ms turn among four "free-slot" samples, so the free-slot
    # p90 is 460 ms. Nothing runs or waits now and nothing of ours is in flight: a new
    # turn is the engine's only sequence: the free-slot sketch, at most unloaded +
    # spread (the spread capped at unloaded).
    free = ((0.5, 0.023), (0.75, 0.46), (0.9, 0.46), (0.99, 0.46))
    drained = vllm("gpu", waiting=0, running=0, unloaded=0.022, free_ttft_quantiles=free)
    assert predict_ttft_s(drained, 0.9) == pytest.approx(0.022 + 0.022)
    # While a batch runs, a free slot means joining it: the measured free-slot TTFT.
    busy = vllm("gpu", waiting=0, running=1, unloaded=0.022, free_ttft_quantiles=free)
    assert predict_ttft_s(busy, 0.9) == pytest.approx(0.46)
    # ... and so while a turn of ours is in flight that the scrape has not seen yet
    # (which, the batch size unknown, also counts as a queue to wait behind).
    sent = replace(drained, in_flight=1)
    assert predict_ttft_s(sent, 0.9) > 0.46


def test_a_snapshot_predicts_each_quantile_once() -> None:
    view = hosted("a", 0.4)
    first = predict_ttft_s(view, 0.9)
    assert view.predicted == {0.9: first}
    view.predicted[0.9] = 123.0  # what a second ask returns is the memo's
    assert predict_ttft_s(view, 0.9) == 123.0


def test_a_view_made_from_another_predicts_afresh() -> None:
    """A replaced view (a rate limit's headroom, a limit reached) stands for other
    signals: it must not read the predictions of the snapshot it was made from."""
    view = hosted("a", 0.4)
    before = predict_ttft_s(view, 0.9)
    slower = replace(view, ratelimit_headroom=0.0)
    assert predict_ttft_s(slower, 0.9) > before
    assert predict_ttft_s(slower, 0.9) == predict_ttft_s(replace(slower), 0.9)
