"""Planning a realtime session: a conversation's targets are ranked on their time to
first audio, a transcription session's on their time to transcript, and what was
measured survives a reload."""

from __future__ import annotations

import random

from router.config import SignalsConfig, parse_config
from router.policy.registry import build_policy
from router.realtime.service import RealtimeService
from router.signals.target import TargetSignals

CONFIG = """
targets:
  - {name: speaks-fast, kind: realtime, base_url: 'ws://127.0.0.1:9/v1', model: m,
     expected_ttft_ms: 400}
  - {name: hears-fast, kind: realtime, base_url: 'ws://127.0.0.1:9/v1', model: m,
     expected_ttft_ms: 400}
routes:
  - {name: voice, targets: [speaks-fast, hears-fast], policy: {type: latency}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def service(text: str = CONFIG, previous: RealtimeService | None = None) -> RealtimeService:
    config = parse_config(text)
    clock = Clock()
    signals = {t.name: TargetSignals(t, SignalsConfig(), clock) for t in config.targets}
    if previous is not None:  # the registry outlives a config: the same objects
        signals = {n: previous.targets[n].signals for n in signals}
    return RealtimeService(config, signals, {}, clock, previous)


def first(svc: RealtimeService, *, transcription: bool) -> str:
    route = parse_config(CONFIG).routes[0]
    policy = build_policy(route.policy)
    plan = svc.plan(route, policy, random.Random(0), transcription=transcription)
    return plan.order[0]


def measure(svc: RealtimeService) -> None:
    """`speaks-fast` answers in 100 ms and transcribes in 900; `hears-fast` the reverse."""
    speaks, hears = svc.targets["speaks-fast"], svc.targets["hears-fast"]
    for _ in range(30):
        for target, ttfa, transcript in ((speaks, 0.1, 0.9), (hears, 0.9, 0.1)):
            target.signals.ttft.observe(ttfa)
            target.signals.ttft_sketch.observe(ttfa)
            target.transcript.observe(transcript)


def test_a_transcription_session_goes_where_transcripts_come_soonest() -> None:
    svc = service()
    measure(svc)
    assert first(svc, transcription=False) == "speaks-fast"
    assert first(svc, transcription=True) == "hears-fast"


def test_the_time_to_transcript_survives_a_reload() -> None:
    old = service()
    measure(old)
    new = service(CONFIG.replace("expected_ttft_ms: 400}", "expected_ttft_ms: 300}"), old)
    assert new.targets["hears-fast"].transcript.samples == 30
    assert first(new, transcription=True) == "hears-fast"


def test_transcripts_that_fail_late_count_as_that_late_at_least() -> None:
    # hears-fast transcribes in 100 ms, but a third of its turns fail 1.5 s after the
    # commit: no transcript by then is a censored sample, so its time to transcript at
    # the p90 is past speaks-fast's 900 ms, and transcription sessions go there.
    svc = service()
    measure(svc)
    hears = svc.targets["hears-fast"].transcript
    for _ in range(15):
        hears.failed(1.5)
    assert hears.sketch.quantile(0.9) >= 1.5
    assert first(svc, transcription=True) == "speaks-fast"
