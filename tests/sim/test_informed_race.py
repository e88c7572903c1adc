"""`informed race` in `benchmarks/fleetsim.py`: the ceiling issue 17's bars are read
against. It must race only within the router's hedge budget, cancel each loser, and
keep the first token that came."""

from __future__ import annotations

import dataclasses
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from fleets import generate  # noqa: E402
from fleetsim import RunConfig, run  # noqa: E402


def test_a_race_keeps_the_first_token_cancels_the_loser_and_stays_in_budget() -> None:
    # tuning fleet 0: three hosted APIs, slow draws a second API often beats
    spec = generate(0)
    spec = dataclasses.replace(spec, workload=spec.workload.model_copy(update={"duration_s": 90.0}))
    result = run(spec, RunConfig("informed race", "informed", hedge=True))
    raced = [t for t in result.turns if t.hedged]
    assert raced, "no turn raced: the ceiling would be informed's"
    # the router's budget: 10 % of turns (the floor of one while the window is short)
    assert len(raced) <= max(0.1 * len(result.turns), 1) + 1
    attempts = defaultdict(list)
    for a in result.attempts:
        attempts[a.key].append(a)
    for turn in raced:
        pair = attempts[str(turn.index)]
        assert len(pair) == 2 and turn.attempts == 2
        answered = [a for a in pair if a.first_token_at is not None and not a.cancelled]
        lost = [a for a in pair if a.cancelled]
        assert len(answered) == 1 and len(lost) == 1, pair
        (winner,) = answered
        assert winner.first_token_at is not None
        assert turn.target == winner.target
        assert turn.ttft_s is not None
        assert abs(turn.ttft_s - (winner.first_token_at - turn.arrival_s)) < 1e-9
        # the loser had no first token before the winner's (it was cancelled after)
        loser = lost[0]
        assert loser.first_token_at is None or loser.first_token_at >= winner.first_token_at
    for turn in result.turns:
        if not turn.hedged:
            assert len(attempts[str(turn.index)]) == 1
