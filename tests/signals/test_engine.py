from __future__ import annotations

import logging
import math
from dataclasses import replace

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.policy.base import EngineView
from router.signals.engine import (
    EngineSample,
    EngineTracker,
    histogram_quantile,
    parse_metrics,
)
from router.signals.scraper import failure_of, run
from tests.signals.conftest import FakeClock
from tests.signals.vllm_metrics import metrics_page

URL = "http://gpu-a:8000/metrics"


def test_parses_a_vllm_metrics_page_summing_label_sets() -> None:
    sample = parse_metrics(metrics_page())
    assert replace(sample, ttft_buckets=()) == EngineSample(
        waiting=5.0,
        running=5.0,
        kv_usage=0.42,
        ttft_sum=15.0,
        ttft_count=75.0,
        itl_sum=40.5,
        itl_count=1200.0,
    )
    # both engines' TTFT histograms, bucket by bucket: 7 requests within 10 ms, ...
    buckets = dict(sample.ttft_buckets)
    assert (buckets[0.01], buckets[0.04], buckets[0.5], buckets[math.inf]) == (7, 45, 75, 75)
    assert [b for b, _ in sample.ttft_buckets] == sorted(buckets)


def test_a_histograms_quantile_is_interpolated_within_its_bucket() -> None:
    buckets = ((0.1, 10.0), (0.2, 30.0), (0.5, 40.0), (math.inf, 40.0))
    assert histogram_quantile(buckets, 0.25) == pytest.approx(0.1)
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.15)  # 20th of 40, mid-bucket
    assert histogram_quantile(buckets, 0.875) == pytest.approx(0.35)
    assert histogram_quantile(((0.1, 0.0), (math.inf, 5.0)), 0.5) == 0.1  # open top bucket
    assert histogram_quantile(((0.1, 0.0), (math.inf, 0.0)), 0.5) is None


def test_the_engines_own_ttfts_are_evidence_before_any_turn_of_ours(clock: FakeClock) -> None:
    tracker = EngineTracker(2.0, clock)
    assert tracker.view().ttft_median_s is None
    # First sight: the engine served 75 requests before the router started.
    tracker.update(parse_metrics(metrics_page()))
    view = tracker.view()
    assert view.ttft_seen == 75.0
    assert view.ttft_median_s == pytest.approx(histogram_quantile(_sum_buckets(), 0.5))
    # Later scrapes read the histogram since the baseline: 10 new requests in 0.25-0.5 s
    slow = (
        (0, 0, 5, 10, 20, 10, 5, 5, 3, 12, 0, 0, 0, 0),
        (0, 0, 2, 3, 5, 5, 0, 0, 0, 0, 0, 0, 0, 0),
    )
    clock.advance(30.0)
    tracker.update(parse_metrics(metrics_page(ttft_counts=slow)))
    assert tracker.view().ttft_seen == 10.0
    assert 0.25 < (tracker.view().ttft_median_s or 0.0) < 0.5
    clock.advance(31.0)  # the window moves on: the baseline is now this scrape
    tracker.update(parse_metrics(metrics_page(ttft_counts=slow)))
    tracker.update(parse_metrics(metrics_page(ttft_counts=slow)))
    assert tracker.view().ttft_seen == 10.0  # no new requests: the last median stands


def _sum_buckets() -> tuple[tuple[float, float], ...]:
    return parse_metrics(metrics_page()).ttft_buckets


def test_agrees_with_prometheus_client_parser() -> None:
    text = metrics_page(waiting=(7.0, 2.0), running=(16.0, 9.0), kv=(0.31, 0.93))
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "vllm:kv_cache_usage_perc":
                totals[s.name] = max(totals.get(s.name, 0.0), s.value)
            else:
                totals[s.name] = totals.get(s.name, 0.0) + s.value
    sample = parse_metrics(text)
    assert sample.waiting == totals["vllm:num_requests_waiting"] == 9.0
    assert sample.running == totals["vllm:num_requests_running"] == 25.0
    assert sample.kv_usage == totals["vllm:kv_cache_usage_perc"] == 0.93
    assert sample.ttft_sum == totals["vllm:time_to_first_token_seconds_sum"]
    assert sample.ttft_count == totals["vllm:time_to_first_token_seconds_count"]
    assert sample.itl_sum == totals["vllm:inter_token_latency_seconds_sum"]
    assert sample.itl_count == totals["vllm:inter_token_latency_seconds_count"]


def test_reads_the_decode_pace_under_its_pre_v1_name() -> None:
    # vLLM before V1 called the per-token histogram vllm:time_per_output_token_seconds
    sample = parse_metrics(metrics_page(itl_name="vllm:time_per_output_token_seconds"))
    assert (sample.itl_sum, sample.itl_count) == (40.5, 1200.0)


def test_accepts_the_old_kv_cache_name() -> None:
    sample = parse_metrics(metrics_page(kv_name="vllm:gpu_cache_usage_perc", kv=(0.5, 0.25)))
    assert sample.kv_usage == 0.5


def test_prefers_the_new_kv_cache_name_when_both_are_served() -> None:
    text = metrics_page(kv=(0.2, 0.1)) + 'vllm:gpu_cache_usage_perc{engine="0"} 0.9\n'
    assert parse_metrics(text).kv_usage == 0.2


def test_unlabelled_lines_and_timestamps() -> None:
    text = (
        "vllm:num_requests_waiting 2 1700000000000\n"
        "vllm:num_requests_running 1\n"
        "vllm:num_requests_running NaN\n"
    )
    assert parse_metrics(text) == EngineSample(2.0, 1.0, 0.0)


def test_a_page_without_queue_gauges_is_an_error() -> None:
    with pytest.raises(ValueError, match="num_requests_waiting"):
        parse_metrics("# HELP up\nup 1\nvllm:kv_cache_usage_perc 0.5\n")
    with pytest.raises(ValueError):
        parse_metrics("vllm:num_requests_waiting{} not-a-number\nvllm:num_requests_running 1\n")


def test_tracker_reports_ttft_over_the_interval_and_ages_into_staleness(
    clock: FakeClock,
) -> None:
    tracker = EngineTracker(stale_after_s=2.0, clock=clock)
    assert not tracker.scraped
    clock.advance(0.5)
    assert tracker.view() == EngineView(0.0, 0.0, 0.0, age_s=0.5, stale=True)
    tracker.update(EngineSample(1.0, 2.0, 0.3, ttft_sum=10.0, ttft_count=40.0))
    assert tracker.view().recent_ttft_s is None  # nothing to take a delta against yet
    clock.advance(0.25)
    tracker.update(EngineSample(3.0, 4.0, 0.5, ttft_sum=11.5, ttft_count=43.0))
    # requests waited beside a batch of 4: that is the engine's capacity, learned
    assert tracker.view() == EngineView(
        3.0,
        4.0,
        0.5,
        age_s=0.0,
        stale=False,
        recent_ttft_s=0.5,
        capacity=4.0,
        proven_running=4.0,
    )
    clock.advance(0.25)
    tracker.update(EngineSample(3.0, 4.0, 0.5, ttft_sum=11.5, ttft_count=43.0))
    assert tracker.view().recent_ttft_s == 0.5  # no new first tokens: the last mean stands
    clock.advance(2.0)
    view = tracker.view()
    assert (view.age_s, view.stale) == (2.0, False)
    clock.advance(0.01)
    assert tracker.view().stale
    tracker.update(EngineSample(0.0, 0.0, 0.0, ttft_sum=0.2, ttft_count=1.0))
    assert tracker.view().recent_ttft_s is None  # counters went back: the engine restarted


def test_the_decode_pace_is_the_mean_gap_between_tokens_over_the_last_second(
    clock: FakeClock,
) -> None:
    tracker = EngineTracker(stale_after_s=2.0, clock=clock)

    def scrape(itl_sum: float, itl_count: float, after_s: float = 1.0) -> float | None:
        clock.advance(after_s)
        tracker.update(EngineSample(0.0, 2.0, 0.1, itl_sum=itl_sum, itl_count=itl_count))
        return tracker.view().decode_s

    assert scrape(10.0, 400.0) is None  # first sight: nothing to take a delta against
    assert scrape(10.4, 420.0) == pytest.approx(0.02)  # 20 tokens in 0.4 s
    # the batch grew: its steps slowed, and the pace follows in one interval
    assert scrape(11.6, 440.0) == pytest.approx(0.06)
    # a quarter of a second is too short to say (a prefill may fall in it): the pace
    # stands, and its tokens count in the next interval
    assert scrape(12.6, 450.0, after_s=0.25) == pytest.approx(0.06)
    assert scrape(12.7, 452.0) == pytest.approx(1.1 / 12)
    # two tokens are too few to say
    assert scrape(12.75, 454.0) == pytest.approx(1.1 / 12)
    assert scrape(13.05, 458.0) == pytest.approx(0.35 / 6)
    # nothing decoded (idle, or stalled): the last pace stands
    assert scrape(13.05, 458.0) == pytest.approx(0.35 / 6)
    # the engine restarted (its counters went back): no delta until the next interval
    assert scrape(0.1, 5.0) == pytest.approx(0.35 / 6)
    assert scrape(0.3, 15.0) == pytest.approx(0.02)
    # a page without the histogram: no pace
    clock.advance(1.0)
    tracker.update(EngineSample(0.0, 2.0, 0.1))
    assert tracker.view().decode_s is None


@pytest.mark.anyio
async def test_scraper_pushes_good_scrapes_and_survives_bad_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pages = [
        httpx.Response(200, text=metrics_page()),
        httpx.Response(500, text="boom"),
        httpx.Response(200, text="<html>not metrics</html>"),
        None,  # the connection fails
        httpx.Response(200, text=metrics_page(waiting=(0.0, 0.0))),
    ]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        page = pages[len(seen) - 1]
        if page is None:
            raise httpx.ConnectError("refused", request=request)
        return page

    samples: list[EngineSample] = []
    sleeps: list[float] = []

    caplog.set_level(logging.DEBUG, logger="router.signals.scraper")
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
        anyio.create_task_group() as tg,
    ):

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == len(pages):
                tg.cancel_scope.cancel()
            await anyio.lowlevel.checkpoint()

        tg.start_soon(lambda: run(client, URL, 0.25, samples.append, sleep=sleep))

    assert seen == [URL] * 5
    assert sleeps == [0.25] * 5
    assert [s.waiting for s in samples] == [5.0, 0.0]
    failures = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(failures) == 3


def test_capacity_is_learned_from_a_scrape_with_a_queue(clock: FakeClock) -> None:
    tracker = EngineTracker(2.0, clock)
    tracker.update(EngineSample(waiting=0, running=3, kv_usage=0.1))
    assert tracker.view().capacity is None  # no queue: the batch may hold more
    tracker.update(EngineSample(waiting=4, running=8, kv_usage=0.9))
    tracker.update(EngineSample(waiting=1, running=7, kv_usage=0.9))  # one leaving
    assert tracker.view().capacity == 8.0
    # A slow scheduler step showed a queue beside free slots; the batch ran 10 since.
    tracker.update(EngineSample(waiting=0, running=10, kv_usage=0.9))
    assert tracker.view().capacity == 10.0


def test_the_most_seen_running_is_the_room_the_engine_proved(clock: FakeClock) -> None:
    tracker = EngineTracker(2.0, clock)
    assert tracker.view().proven_running == 0.0
    for running in (2, 5, 3, 0):
        tracker.update(EngineSample(waiting=0, running=running, kv_usage=0.1))
    assert tracker.view().proven_running == 5.0
    assert tracker.view().running == 0.0


def test_a_queue_in_one_scrape_only_teaches_nothing(clock: FakeClock) -> None:
    # A request that just arrived waits for the scheduler's next step, batch full or not.
    tracker = EngineTracker(2.0, clock)
    tracker.update(EngineSample(waiting=0, running=3, kv_usage=0.1))
    tracker.update(EngineSample(waiting=1, running=4, kv_usage=0.2))
    tracker.update(EngineSample(waiting=0, running=5, kv_usage=0.2))
    assert tracker.view().capacity is None


def test_a_queue_that_held_a_turn_of_ours_teaches_the_capacity_at_once(
    clock: FakeClock,
) -> None:
    tracker = EngineTracker(2.0, clock)
    tracker.held_a_turn()  # nothing scraped: nothing to learn from
    tracker.update(EngineSample(waiting=0, running=2, kv_usage=0.1))
    assert not tracker.view().queue_seen  # never a queue: the batch is believed to have room
    tracker.held_a_turn()  # no queue in the last scrape: the move was not about this engine
    assert (tracker.view().capacity, tracker.view().queue_seen) == (None, False)
    tracker.update(EngineSample(waiting=1, running=2, kv_usage=0.2))
    assert tracker.view().queue_seen
    assert tracker.view().capacity is None  # one scrape alone: a scheduler step, maybe
    tracker.held_a_turn()
    assert tracker.view().capacity == 2.0


def test_a_configured_capacity_wins(clock: FakeClock) -> None:
    tracker = EngineTracker(2.0, clock, capacity=16)
    tracker.update(EngineSample(waiting=2, running=4, kv_usage=0.9))
    tracker.update(EngineSample(waiting=2, running=4, kv_usage=0.9))
    assert tracker.view().capacity == 16.0


@pytest.mark.anyio
async def test_each_failed_scrape_is_told_by_its_kind() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        failure = failures[len(told)]
        if isinstance(failure, Exception):
            raise failure
        return failure

    failures: list[Exception | httpx.Response] = [
        httpx.ReadTimeout("slow", request=httpx.Request("GET", URL)),
        httpx.ConnectError("refused", request=httpx.Request("GET", URL)),
        httpx.Response(503, text="busy"),
        httpx.Response(200, text="<html>not metrics</html>"),
        httpx.RemoteProtocolError("reset", request=httpx.Request("GET", URL)),
    ]
    told: list[str] = []
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
        anyio.create_task_group() as tg,
    ):

        async def sleep(_: float) -> None:
            if len(told) == len(failures):
                tg.cancel_scope.cancel()
            await anyio.lowlevel.checkpoint()

        tg.start_soon(
            lambda: run(client, URL, 0.25, lambda _: None, sleep=sleep, failed=told.append)
        )
    assert told == ["timeout", "connect", "status", "page", "transport"]
    assert failure_of(RuntimeError("?")) == "unexpected"


def test_the_view_says_how_many_scrapes_failed_since_the_last_good_one(clock: FakeClock) -> None:
    tracker = EngineTracker(2.0, clock)
    tracker.scrape_failed("connect")
    assert (tracker.view().scrape_failures, tracker.view().last_scrape_failure) == (1, "connect")
    tracker.update(EngineSample(waiting=0, running=1, kv_usage=0.1))
    tracker.scrape_failed("timeout")
    tracker.scrape_failed("timeout")
    view = tracker.view()
    assert (view.scrape_failures, view.last_scrape_failure, view.running) == (2, "timeout", 1.0)
    tracker.update(EngineSample(waiting=0, running=2, kv_usage=0.1))
    assert (tracker.view().scrape_failures, tracker.view().last_scrape_failure) == (0, None)
