"""What `firsttoken demo --voice` shows: one row per session (the target or cascade
serving it, answers, voice-to-voice latency, the stages of its last answer, barge-ins,
cancels, errors) and a headline per target, live (rich) or as plain text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from router.tools.voice_callers import Caller

STAGES = ("vad_hangover", "stt", "llm_ttft", "tts_first_audio", "overhead")


@dataclass
class VoiceDemo:
    callers: list[Caller]
    base_url: str
    duration_s: float
    notes: list[str]
    started: float = field(default_factory=time.monotonic)
    #: the router's migrations so far, by reason (read live from its metrics)
    migrations: Callable[[], dict[str, int]] = field(default=dict)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


HEADERS = ["session", "served by", "answers", "v2v last", "v2v p50", "stages of last answer"]
HEADERS += ["barge-ins", "cancels", "errors"]


def session_rows(demo: VoiceDemo) -> list[list[str]]:
    rows = []
    for c in demo.callers:
        done = [a for a in c.done() if a.v2v_ms is not None]
        last = done[-1] if done else None
        stages = "-"
        if last is not None and last.stages_ms:
            stages = " ".join(f"{k.split('_')[0]} {last.stages_ms.get(k, 0):.0f}" for k in STAGES)
        elif last is not None:
            stages = "(hosted: one model, no stages)"
        rows.append(
            [
                f"#{c.number}",
                c.target,
                str(len(c.done())),
                _ms(last.v2v_ms if last else None),
                _ms(median(a.v2v_ms for a in done if a.v2v_ms is not None) if done else None),
                stages,
                str(c.barge_ins),
                str(c.cancels),
                str(c.errors),
            ]
        )
    return rows


def headline(demo: VoiceDemo) -> list[str]:
    lines = []
    by_target: dict[str, list[Any]] = {}
    for c in demo.callers:
        by_target.setdefault(c.target, []).extend(
            a
            for a in c.done()
            if a.v2v_ms is not None  # barged-into ones too: heard first
        )
    for target, answers in sorted(by_target.items()):
        v2v = [a.v2v_ms for a in answers]
        who = "router's clock" if any(a.measured_by == "router" for a in answers) else "caller"
        lines.append(
            f"{target}: {len(answers)} answers timed, voice-to-voice p50 {_ms(_pct(v2v, 0.5))} ms, "
            f"p90 {_ms(_pct(v2v, 0.9))} ms ({who})"
        )
        staged = [a for a in answers if a.stages_ms]
        if staged:
            parts = [f"{s} {_ms(_pct([a.stages_ms[s] for a in staged], 0.5))}" for s in STAGES]
            lines.append(f"  stages p50 ms: {', '.join(parts)} (overhead: FirstToken's own)")
    total = sum(len(c.done()) for c in demo.callers)
    lines.append(
        f"{total} answers, {sum(c.barge_ins for c in demo.callers)} barge-ins, "
        f"{sum(c.cancels for c in demo.callers)} cancelled, "
        f"{sum(c.errors for c in demo.callers)} errors"
    )
    moved = demo.migrations()
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(moved.items()))
    lines.append(f"{sum(moved.values())} migrations" + (f" ({reasons})" if reasons else ""))
    return lines


def plain_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def live_view(demo: VoiceDemo) -> Any:
    from rich import box
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for h in HEADERS:
        table.add_column(h, no_wrap=True)
    for row in session_rows(demo):
        table.add_row(*row)
    elapsed = min(time.monotonic() - demo.started, demo.duration_s)
    top = [
        f"router {demo.base_url}   route 'voice' = [hosted-rt, laptop-voice] (round robin)   "
        f"{elapsed:.0f}/{demo.duration_s:g} s",
        f"playground: {demo.base_url.removesuffix('/v1')}/playground (speak to it yourself)",
        *demo.notes,
    ]
    return Group(
        Panel("\n".join(top), title="FirstToken voice demo (Ctrl-C to stop)"),
        table,
        "\n".join(headline(demo)),
    )


async def show_live(demo: VoiceDemo) -> None:
    from rich.live import Live

    with Live(get_renderable=lambda: live_view(demo), refresh_per_second=4, screen=False):
        await asyncio.Event().wait()
