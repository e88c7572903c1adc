"""Time to transcript per realtime target: what a transcription session is routed on.

A transcription session (`?intent=transcription`) never asks for an answer, so the
signals a conversation is ranked on (time to first audio) say nothing about how soon
its user's words come back as text. Each of a target's transcription sessions
measures, per committed turn, the time from the commit to the transcript's first
text (a delta, or the completed transcript of a model that sends none); this keeps
those samples the way a target's TTFT is kept (a peak-EWMA and a decaying quantile
sketch, from the target's `expected_ttft_ms` prior), and `over(view)` puts them
where a policy reads TTFT. So the route's own policy (latency, `slo_cost`, p2c)
ranks the targets of a transcription session on their transcript latency, with the
same exploration of targets not measured yet.
"""

from __future__ import annotations

from router.clock import Clock
from router.policy.base import TargetView
from router.signals.sketch import DecayingQuantiles
from router.signals.target import QUANTILE_SIZE, QUANTILE_TAU_S, timed_on
from router.signals.ttft import PeakEwma


class TranscriptTime:
    """One target's time to transcript, in seconds."""

    __slots__ = ("ewma", "sketch")

    def __init__(self, tau_s: float, prior_s: float, clock: Clock) -> None:
        self.ewma = PeakEwma(tau_s, prior_s, clock)
        self.sketch = DecayingQuantiles(QUANTILE_TAU_S, prior_s, clock, size=QUANTILE_SIZE)

    @property
    def samples(self) -> int:
        return self.sketch.count

    def observe(self, seconds: float) -> None:
        self.ewma.observe(seconds)
        self.sketch.observe(seconds)

    def failed(self, waited_s: float) -> None:
        """A turn whose transcript failed `waited_s` after its commit: it never came, so
        its time to transcript is at least that (a censored sample)."""
        self.ewma.observe_lower_bound(waited_s)
        self.sketch.observe_censored(waited_s)

    def set_prior(self, prior_s: float) -> None:
        """A reloaded `expected_ttft_ms`; what was measured is kept."""
        self.ewma.set_prior(prior_s)
        self.sketch.set_prior(prior_s)

    def over(self, view: TargetView) -> TargetView:
        """`view` with its TTFT figures replaced by the time to transcript (load,
        breaker, limits and price stay the target's)."""
        sketch = self.sketch
        unloaded = min(view.prior_ttft_s, sketch.median()) if sketch.count else view.prior_ttft_s
        return timed_on(view, self.ewma.value, sketch, unloaded)
