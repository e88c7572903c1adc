"""The demo's story: events in time order, a counter and the last few of each kind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rich.console import Console

from router.config import Price, parse_config
from router.runtime import Router
from router.tools.demo import DemoState, _live_view
from router.tools.driver import TurnOutcome
from router.tools.story import LAST_PER_KIND, Story

ROOT = Path(__file__).resolve().parents[2]
POLICY = (ROOT / "policies" / "hybrid.yaml").read_text(encoding="utf-8")


def outcome(session: int, **kw: object) -> TurnOutcome:
    out = TurnOutcome(session_id=session, turn_index=0, scheduled_s=0.0, outcome="ok")
    out.target, out.attempts, out.ttft_s = "hosted-a", 2, 0.25
    for key, value in kw.items():
        setattr(out, key, value)
    return out


def test_a_rare_fallback_stays_visible_beside_a_stream_of_hedges() -> None:
    story = Story()
    story.breakers(0.0, {"local-a": "closed"})
    story.turn(1.0, outcome(1, fell_back=True))
    story.breakers(1.5, {"local-a": "open"})
    story.turn(2.0, outcome(2, outcome="error", error="HTTP 502: all targets failed"))
    for i in range(20):
        story.turn(3.0 + i, outcome(10 + i, hedged=True))
    kinds = {title: (count, last) for title, count, last in story.by_kind()}
    assert kinds["fallbacks"][0] == 1 and "s1/t0 -> hosted-a" in kinds["fallbacks"][1][0]
    assert kinds["breaker changes"] == (1, ["   1.5s  local-a: closed -> open"])
    assert kinds["errors"][0] == 1 and "HTTP 502" in kinds["errors"][1][0]
    count, last = kinds["hedges"]
    assert count == 20 and len(last) == LAST_PER_KIND and "s29/t0" in last[-1]
    times = [e.at_s for e in story.timeline]
    assert times == sorted(times)  # the timeline is in time order
    assert story.tally() == "fallbacks 1, hedges 20, errors 1, breaker changes 1"


def test_the_live_view_shows_every_kind_and_the_timeline() -> None:
    config = parse_config(POLICY)
    state = DemoState(
        router=Router(config, environ={"HOSTED_A_API_KEY": "x", "HOSTED_B_API_KEY": "x"}),
        route=config.routes[0],
        prices={t.name: Price() for t in config.targets},
        kinds={t.name: t.kind for t in config.targets},
        base_url="http://127.0.0.1:1/v1",
        duration_s=10,
    )
    state.add(outcome(3, fell_back=True))
    state.add(outcome(4, hedged=True))
    console = Console(record=True, width=160, force_terminal=False)
    console.print(_live_view(state))
    text = console.export_text()
    for title in ("fallbacks", "hedges", "errors", "breaker changes"):
        assert title in text
    assert "s3/t0 -> hosted-a" in text and "s4/t0 -> hosted-a" in text
    assert "latest events, in time order" in text


def test_demo_into_a_pipe_prints_plain_lines_at_full_width() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "router.tools.cli", "demo", "--duration", "3"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    out = done.stdout
    assert "demo summary:" in out
    assert not any(c in out for c in "─━│╭╰"), out  # no rich frame: plain text
    curl = next(line for line in out.splitlines() if "curl -N" in line)
    assert len(curl) > 120 and curl.endswith('"content":"hi"}]}\'')  # not cut at 80
    assert "events: fallbacks " in out
