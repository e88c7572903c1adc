"""Signals measure and never decide: TTFT, load, breaker, rate limits, engine stats.

Each module holds one estimator and cites its source; `target.TargetSignals`
aggregates them for one target and makes the `TargetView` snapshots policies read,
and `registry.SignalsRegistry` holds them for a config generation.
"""

from router.signals.affinity import AffinityMap
from router.signals.attempt import Attempt
from router.signals.breaker import Breaker
from router.signals.engine import EngineSample, EngineTracker, parse_metrics
from router.signals.inflight import InFlight, Lease
from router.signals.ratelimit import LocalLimits, ProviderLimits
from router.signals.registry import SignalsRegistry
from router.signals.target import TargetSignals
from router.signals.ttft import DecayingQuantiles, Ewma, PeakEwma

__all__ = [
    "AffinityMap",
    "Attempt",
    "Breaker",
    "DecayingQuantiles",
    "EngineSample",
    "EngineTracker",
    "Ewma",
    "InFlight",
    "Lease",
    "LocalLimits",
    "PeakEwma",
    "ProviderLimits",
    "SignalsRegistry",
    "TargetSignals",
    "parse_metrics",
]
