"""vLLM engine load, scraped from its Prometheus `/metrics`.

Reads the gauges the vLLM docs list under "Production Metrics"
(docs.vllm.ai/en/latest/usage/metrics.html): `vllm:num_requests_waiting`,
`vllm:num_requests_running`, `vllm:kv_cache_usage_perc` (a 0-1 fraction; older
releases call it `vllm:gpu_cache_usage_perc`), and the `_sum`/`_count` of the
`vllm:time_to_first_token_seconds` histogram, whose deltas between scrapes give
the engine's own mean TTFT over the interval. Its buckets are evidence too: the
median of the engine's TTFTs over the last minute or so (the whole histogram at
first sight, so an engine that served others before the router started is known
before any turn of ours), interpolated within a bucket as Prometheus's
`histogram_quantile` does. The `_sum`/`_count` deltas of
`vllm:inter_token_latency_seconds` (one observation per token decoded;
`vllm:time_per_output_token_seconds` in releases before V1) give the engine's decode
pace over the interval: the batch's step time as it is now, which slows as the batch
grows (on a CPU engine, 8 running took 5-9 s a turn against 3.3 s alone), where the
router's own time per token is what its turns saw when they finished.

Parsing is a line scan of the text exposition format (prometheus.io/docs/
instrumenting/exposition_formats) that looks only at the few names needed, since
each engine is scraped every 250 ms; `prometheus_client`'s full parser is the
reference it is tested against. Several label sets (model_name, engine index of a
data-parallel server) are summed, except the KV-cache fraction, whose maximum
(the fullest engine) is kept.

A page without the queue gauges is an error, not zero load: the last good stats
then age into staleness, which policies treat as saturation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from router.clock import Clock
from router.policy.base import EngineView
from router.vocabulary import ScrapeFailure

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"
TTFT_SUM = "vllm:time_to_first_token_seconds_sum"
TTFT_COUNT = "vllm:time_to_first_token_seconds_count"
TTFT_BUCKET = "vllm:time_to_first_token_seconds_bucket"
ITL_SUM = "vllm:inter_token_latency_seconds_sum"
ITL_COUNT = "vllm:inter_token_latency_seconds_count"
ITL_SUM_OLD = "vllm:time_per_output_token_seconds_sum"
ITL_COUNT_OLD = "vllm:time_per_output_token_seconds_count"
_ITL = (ITL_SUM, ITL_COUNT, ITL_SUM_OLD, ITL_COUNT_OLD)
_WANTED = frozenset((WAITING, RUNNING, KV_USAGE, KV_USAGE_OLD, TTFT_SUM, TTFT_COUNT, *_ITL))
#: tokens an interval must have decoded, and how long it must last, for its mean gap to
#: be the decode pace (shorter ones run on into the next scrape). On a real CPU engine
#: with 8 running, 250 ms intervals read 36-107 ms a token, as prefills of arriving
#: turns fell into one interval or the next (benchmarks/vllm_burst.py); a second holds
#: several of them and tracks a batch that grows within a turn's first seconds.
MIN_ITL_TOKENS = 4
DECODE_WINDOW_S = 1.0
#: the TTFT histogram's window: its bucket counts are read against a baseline this old
HISTOGRAM_WINDOW_S = 60.0
#: (upper bound, cumulative count) of each bucket, in increasing bound
Buckets = tuple[tuple[float, float], ...]
_MAXED = frozenset({KV_USAGE, KV_USAGE_OLD})


@dataclass(frozen=True, slots=True)
class EngineSample:
    """One scrape of an engine, as parsed (no time attached)."""

    waiting: float
    running: float
    kv_usage: float
    ttft_sum: float | None = None
    ttft_count: float | None = None
    ttft_buckets: Buckets = ()
    #: the inter-token latency histogram's _sum and _count (None: not on the page)
    itl_sum: float | None = None
    itl_count: float | None = None


def _le(labels: str) -> float | None:
    """The `le` label's bound from a label set such as `{model_name="m",le="0.5"`."""
    start = labels.find(',le="')
    if start == -1:
        start = labels.find('{le="')
        if start == -1:
            return None
    start += 5
    try:
        return float(labels[start : labels.find('"', start)])
    except ValueError:
        return None


def histogram_quantile(buckets: Buckets, q: float) -> float | None:
    """The q-quantile of a cumulative histogram, linear within its bucket (None if empty)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower  # in the open top bucket: its lower edge is all that is known
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def parse_metrics(text: str) -> EngineSample:
    """The engine's load from a /metrics page; ValueError if the queue gauges are missing."""
    found: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name = line[:brace]
            close = line.rfind("}")
            rest = line[close + 1 :]
        elif space != -1:
            name = line[:space]
            rest = line[space:]
        else:
            continue
        if name == TTFT_BUCKET and brace != -1:
            bound = _le(line[brace:close])
            fields = rest.split()
            if bound is not None and fields:
                buckets[bound] = buckets.get(bound, 0.0) + float(fields[0])
            continue
        if name not in _WANTED:
            continue
        fields = rest.split()
        if not fields:
            raise ValueError(f"no value on line: {line!r}")
        value = float(fields[0])
        if math.isnan(value):
            continue
        if name in found:
            found[name] = max(found[name], value) if name in _MAXED else found[name] + value
        else:
            found[name] = value
    if WAITING not in found or RUNNING not in found:
        raise ValueError(f"no {WAITING} / {RUNNING} on the metrics page")
    return EngineSample(
        waiting=found[WAITING],
        running=found[RUNNING],
        kv_usage=found.get(KV_USAGE, found.get(KV_USAGE_OLD, 0.0)),
        ttft_sum=found.get(TTFT_SUM),
        ttft_count=found.get(TTFT_COUNT),
        ttft_buckets=tuple(sorted(buckets.items())),
        itl_sum=found.get(ITL_SUM, found.get(ITL_SUM_OLD)),
        itl_count=found.get(ITL_COUNT, found.get(ITL_COUNT_OLD)),
    )


class EngineTracker:
    """The last scrape of one engine, its age, and its TTFT over the last interval."""

    __slots__ = (
        "_base",
        "_baseline",
        "_clock",
        "_created",
        "_decode",
        "_failures",
        "_itl_base",
        "_last",
        "_last_at",
        "_last_failure",
        "_learned",
        "_median",
        "_proven",
        "_queued_at",
        "_recent",
        "_unseen_until",
        "capacity",
        "stale_after_s",
    )

    def __init__(self, stale_after_s: float, clock: Clock, capacity: int | None = None) -> None:
        self.stale_after_s = stale_after_s
        #: the engine's --max-num-seqs when configured; else learned (see `update`)
        self.capacity = capacity
        self._learned: float | None = None
        #: the most sequences any scrape showed running: the batch holds at least that many
        self._proven = 0.0
        self._clock = clock
        self._created = clock()
        self._last: EngineSample | None = None
        self._last_at = 0.0
        #: when a scrape last showed requests waiting; None: never
        self._queued_at: float | None = None
        #: when the last gap of more than `stale_after_s` between scrapes ended; None: never
        self._unseen_until: float | None = None
        #: (sum, count) of the TTFT histogram when it last moved
        self._base: tuple[float, float] | None = None
        self._recent: float | None = None
        #: (when, buckets) the histogram's window starts from; () before any scrape
        self._baseline: tuple[float, Buckets] | None = None
        #: (median TTFT, requests) over the window, when the histogram has any
        self._median: tuple[float, float] | None = None
        #: (sum, count, when) of the inter-token histogram where the interval began
        self._itl_base: tuple[float, float, float] | None = None
        #: mean seconds between tokens over the last interval that decoded any
        self._decode: float | None = None
        #: scrapes failed since the last good one, and why the last one failed
        self._failures = 0
        self._last_failure: ScrapeFailure | None = None

    @property
    def scraped(self) -> bool:
        return self._last is not None

    def scrape_failed(self, reason: ScrapeFailure) -> None:
        """A scrape failed: the stats age on, and the view says why."""
        self._failures += 1
        self._last_failure = reason

    def update(self, sample: EngineSample) -> None:
        self._failures, self._last_failure = 0, None
        previous, self._last = self._last, sample
        now = self._clock()
        if previous is not None and now - self._last_at > self.stale_after_s:
            self._unseen_until = now
        self._last_at = now
        self._proven = max(self._proven, sample.running)
        if sample.waiting > 0:
            self._queued_at = self._last_at
        if sample.waiting > 0 and sample.running > 0 and previous and previous.waiting > 0:
            # Requests wait when the batch is full: what runs then is the capacity (the
            # largest seen, since a scrape can land while a sequence is leaving). One
            # scrape with a queue is not enough: a request that just arrived waits until
            # the scheduler's next step even beside a batch with room, and learning from
            # it once kept an engine half idle in benchmarks/routing.py.
            self._learned = max(self._learned or 0.0, sample.running, previous.running)
        self._window(sample.ttft_buckets)
        self._pace(sample.itl_sum, sample.itl_count)
        total, count = sample.ttft_sum, sample.ttft_count
        if total is None or count is None:
            self._base, self._recent = None, None
            return
        base = self._base
        if base is None or count < base[1] or total < base[0]:
            # First sight, or the engine restarted and its counters began again.
            self._base, self._recent = (total, count), None
        elif count > base[1]:
            self._recent = (total - base[0]) / (count - base[1])
            self._base = (total, count)
        # No new first tokens in this interval: the last interval's mean still stands.

    def _pace(self, total: float | None, count: float | None) -> None:
        """The decode pace: the mean inter-token gap since the interval began, once it
        holds `MIN_ITL_TOKENS` tokens over `DECODE_WINDOW_S` (then the next interval
        begins). An engine that decodes nothing keeps its last pace; one whose
        counters went back restarted."""
        if total is None or count is None:
            self._itl_base, self._decode = None, None
            return
        now = self._clock()
        base = self._itl_base
        if base is None or count < base[1] or total < base[0]:
            self._itl_base = (total, count, now)
            return
        if count - base[1] >= MIN_ITL_TOKENS and now - base[2] >= DECODE_WINDOW_S:
            self._decode = (total - base[0]) / (count - base[1])
            self._itl_base = (total, count, now)

    def _window(self, buckets: Buckets) -> None:
        """The TTFT histogram since the baseline (first sight: all of it); the baseline
        moves to the last scrape once it is `HISTOGRAM_WINDOW_S` old."""
        if not buckets:
            return
        now = self._clock()
        baseline = self._baseline
        if baseline is None:
            delta = buckets
            self._baseline = (now, buckets)
        else:
            old = dict(baseline[1])
            delta = tuple((b, c - old.get(b, 0.0)) for b, c in buckets)
            if delta and delta[-1][1] < 0:  # the engine restarted: start again
                delta = buckets
                self._baseline = (now, buckets)
            elif now - baseline[0] >= HISTOGRAM_WINDOW_S:
                self._baseline = (now, buckets)
        median = histogram_quantile(delta, 0.5)
        if median is not None:
            self._median = (median, delta[-1][1])

    def held_a_turn(self) -> None:
        """A turn of the router's sat in the engine's queue (the race moved it out:
        `router.turn.requeue`): the batch was full at what the last scrape saw running.
        That is the capacity, learned at once (a queue that held a turn of ours past a
        free slot's TTFT is no scheduler step's transient, which the two-scrape rule
        in `update` guards against), and moving the turn cancels the request, so the
        second scrape that rule waits for would never see it."""
        last = self._last
        if last is None or last.running <= 0 or last.waiting <= 0:
            return
        self._queued_at = self._last_at
        self._learned = max(self._learned or 0.0, last.running)

    def queued_since(self, since: float) -> bool:
        """Whether a scrape at or after `since` showed requests waiting."""
        return self._queued_at is not None and self._queued_at >= since

    def seen_since(self, since: float) -> bool:
        """Whether the engine was in sight from `since` to now: scraped then, with no gap
        longer than `stale_after_s` between scrapes since (a stalled API server, or a
        router too starved to scrape), and fresh now."""
        if self._last is None or self._clock() - self._last_at > self.stale_after_s:
            return False
        return self._unseen_until is None or self._unseen_until < since

    def _capacity(self) -> float | None:
        """The configured batch size; else the learned one, at least what ran at once (a
        slow scheduler step can show a queue beside free slots two scrapes running)."""
        if self.capacity is not None:
            return float(self.capacity)
        return None if self._learned is None else max(self._learned, self._proven)

    def view(self) -> EngineView:
        """The last stats; before any scrape, an empty view that is already stale."""
        now = self._clock()
        last = self._last
        if last is None:
            return EngineView(
                0.0,
                0.0,
                0.0,
                age_s=max(now - self._created, 0.0),
                stale=True,
                scrape_failures=self._failures,
                last_scrape_failure=self._last_failure,
            )
        age = max(now - self._last_at, 0.0)
        return EngineView(
            waiting=last.waiting,
            running=last.running,
            kv_usage=last.kv_usage,
            age_s=age,
            stale=age > self.stale_after_s,
            recent_ttft_s=self._recent,
            capacity=self._capacity(),
            ttft_median_s=self._median[0] if self._median else None,
            ttft_seen=self._median[1] if self._median else 0.0,
            proven_running=self._proven,
            queue_seen=self._queued_at is not None,
            decode_s=self._decode,
            scrape_failures=self._failures,
            last_scrape_failure=self._last_failure,
        )
