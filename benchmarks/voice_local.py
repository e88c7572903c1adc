"""Voice-to-voice latency on the local engines, split by stage: a laptop's cascade.

    .venv/bin/python benchmarks/voice_local.py --sessions 1 --duration 60

The cascade of `firsttoken demo --voice` alone on the route: PocketSphinx (two worker
processes) and eSpeak NG (`firsttoken speech serve`'s engines, in process), an LLM
simulator answering in 80 ms then 20 ms a token, and synthetic callers streaming
eSpeak NG sentences in 20 ms frames in real time, with pauses and a quarter of the
answers barged into. Each answer's stages are the router's own clock
(`response.firsttoken.latency_ms`): `vad_hangover` (the silence window), `stt`,
`llm_ttft` (to the first speakable clause), `tts_first_audio` and `overhead`,
FirstToken's own share. Prints the table and the bar (overhead p50 <= 15 ms); exits 1
when the bar is missed or no answer came back. Everything shares one event loop and
two cores with the callers, so on a busy machine the stages stretch with the load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from datetime import UTC, datetime

from router.tools.voice_demo import run_voice_demo
from router.tools.voice_view import STAGES

BAR_OVERHEAD_P50_MS = 15.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of calls")
    parser.add_argument("--barge-in", type=float, default=0.25)
    args = parser.parse_args(argv)
    demo = asyncio.run(
        run_voice_demo(
            duration_s=args.duration,
            sessions=args.sessions,
            barge_in=args.barge_in,
            live=False,
            port=0,
            save_audio=None,
            stream=sys.stderr,
            cascade_only=True,
        )
    )
    answers = [
        a
        for c in demo.callers
        for a in c.done()
        if a.status == "completed" and a.measured_by == "router" and a.v2v_ms is not None
    ]
    load = os.getloadavg()[0]
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load:.2f}; {args.sessions} session(s), {args.duration:g} s; "
        + "; ".join(demo.notes)
    )
    if not answers:
        print("no answer came back")
        return 1
    rows = [("voice_to_voice", [a.v2v_ms for a in answers if a.v2v_ms is not None])]
    rows += [(s, [a.stages_ms[s] for a in answers if s in a.stages_ms]) for s in STAGES]
    print(f"| stage | p50 ms | p90 ms | answers ({len(answers)}) |")
    print("|---|---|---|---|")
    for name, values in rows:
        p50, p90 = percentile(values, 0.5), percentile(values, 0.9)
        print(f"| {name} | {p50:.1f} | {p90:.1f} | {len(values)} |")
    overhead = percentile([a.stages_ms["overhead"] for a in answers], 0.5)
    met = overhead <= BAR_OVERHEAD_P50_MS
    print(
        f"bar: FirstToken's own share p50 {overhead:.1f} ms <= {BAR_OVERHEAD_P50_MS:g} ms: "
        f"{'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
