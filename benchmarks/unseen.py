"""Routing on fleets the policies were not tuned on: the held-out report of issue 17.

    .venv/bin/python benchmarks/unseen.py                  # the report: seeds 1000-1029
    .venv/bin/python benchmarks/unseen.py --seeds 0-99     # tuning fleets (never 1000+)
    .venv/bin/python benchmarks/unseen.py --seeds 0-99 --rng-salt a   # other tie-breaks
    .venv/bin/python benchmarks/unseen.py --seeds 3,7 --configs slo_cost+hedge,oracle
    .venv/bin/python benchmarks/unseen.py --merge a/unseen.json,b/unseen.json --out c

Each seed is a fleet of `benchmarks/fleets.py`; each configuration runs on it in
`benchmarks/fleetsim.py` (in-process, virtual clock), in `--workers` processes.
Configurations: the policies without hedging (`round_robin`, `ordered`, `p2c`,
`latency`, `slo_cost`), `latency+hedge` and `slo_cost+hedge` (adaptive, max_rate
0.1), the per-turn hindsight `oracle`, two references that know every queue and
distribution (`informed`, and `informed race`, which also races within the same
budget; their bars are printed, and they are no policy the cost bar compares
against), and two cold-start runs (`latency cold`,
`slo_cost cold`: 40 independent turns one after another, every target unmeasured at
the default prior). Prints one row per fleet, the bars, and the SLO misses of every
configuration by cause (`benchmarks/fleetstats.py`); writes everything to
`<out>/unseen.json`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# the router beside this file (a scratch copy of the tree runs its own), and the
# scripts beside this one (fleets.py, fleetsim.py, fleetstats.py)
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from fleets import HELD_OUT_SEEDS, generate  # noqa: E402
from fleetsim import RunConfig, run  # noqa: E402
from fleetstats import CAUSES, cold_start_share, summarise  # noqa: E402

CONFIGS: dict[str, RunConfig] = {
    c.name: c
    for c in (
        RunConfig("round_robin", "round_robin"),
        RunConfig("ordered", "ordered"),
        RunConfig("p2c", "p2c"),
        RunConfig("latency", "latency"),
        RunConfig("latency+hedge", "latency", hedge=True),
        RunConfig("slo_cost", "slo_cost"),
        RunConfig("slo_cost+hedge", "slo_cost", hedge=True),
        RunConfig("slo_cost+hedge cap5", "slo_cost", hedge=True, hedge_cost_share=0.05),
        RunConfig("oracle", "oracle"),
        RunConfig("informed", "informed"),
        RunConfig("informed race", "informed", hedge=True),
        RunConfig("latency cold", "latency", mode="sequential"),
        RunConfig("slo_cost cold", "slo_cost", mode="sequential"),
    )
}
SUBJECT = "slo_cost+hedge"
#: the subject with one setting changed (`hedge.max_cost_share: 0.05`): judged by the
#: same bars, and not a policy the cost bar compares against
VARIANTS = ("slo_cost+hedge cap5",)
#: what a router could do that knew every queue and distribution, without and with
#: races (`fleetsim`): the same bars, to say which are in reach at all; not policies
REFERENCES = ("informed", "informed race")
BAR_COLD = 0.85
BAR_WITHIN_POINTS = 0.01
BAR_WITHIN_FLEETS = 27
BAR_HIGH_ORACLE = 0.995
BAR_HIGH = 0.99
BAR_P99_VS_ORACLE = 1.5
BAR_P99_VS_SLO = 1.5
BAR_EXTRA = 0.10
BAR_COST = 1.1


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


def job(args: tuple[int, str, str]) -> dict[str, Any]:
    seed, name, salt = args
    spec = generate(seed)
    config = replace(CONFIGS[name], rng_salt=salt)
    started = time.process_time()
    result = run(spec, config)
    summary = summarise(spec, result)
    misses, hedges = dict(summary.misses), dict(summary.hedges)
    out: dict[str, Any] = asdict(summary)
    out["misses"], out["hedges"] = misses, hedges
    out["cpu_s"] = round(time.process_time() - started, 2)
    if config.mode == "sequential":
        out["cold_right"] = cold_start_share(spec, result)
    return out


def run_jobs(
    jobs: Sequence[tuple[int, str, str]], workers: int, partial: Path | None = None
) -> list[dict[str, Any]]:
    """Every job's summary; each one is also appended to `partial` (JSON lines) as it
    ends, so a run cut short keeps what it did (`--merge` reads it)."""
    results: list[dict[str, Any]] = []
    t0 = time.monotonic()
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers, maxtasksperchild=8) as pool:
        for r in pool.imap_unordered(job, jobs):
            results.append(r)
            if partial is not None:
                with partial.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(r) + "\n")
            print(
                f"[{time.monotonic() - t0:5.0f}s {len(results)}/{len(jobs)}] seed {r['seed']}"
                f" {r['config']:<15} att {r['attainment']:.3f} p99 {r['p99_ms']:.0f}"
                f" ${r['cost_per_1k']:.3f}/1k extra {r['extra_upstream']:.3f}"
                f"{' cold ' + format(r['cold_right'], '.2f') if 'cold_right' in r else ''}"
                f" cpu {r['cpu_s']}s",
                file=sys.stderr,
                flush=True,
            )
    return results


def _index(results: Iterable[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    return {(r["seed"], r["config"]): r for r in results}


def meets_slo(r: dict[str, Any], quantile: float) -> bool:
    return bool(r["attainment"] >= quantile)


def fleet_rows(seeds: Sequence[int], runs: dict[tuple[int, str], dict[str, Any]]) -> list[str]:
    head = (
        "| seed | fleet | load | SLO ms | oracle SLO / p99 | slo_cost+hedge SLO / p99 |"
        " cost / cheapest meeting | extra | cold latency / slo_cost |"
    )
    lines = [head, "|" + "---|" * 9]
    for seed in seeds:
        spec = generate(seed)
        s, o = runs.get((seed, SUBJECT)), runs.get((seed, "oracle"))
        if s is None or o is None:
            continue
        cheapest = cheapest_meeting(seed, runs, spec.slo_quantile)
        ratio = f"{s['cost_per_1k'] / cheapest:.2f}x" if cheapest else "-"
        cold = [
            runs.get((seed, c), {}).get("cold_right") for c in ("latency cold", "slo_cost cold")
        ]
        stall = " stalls" if spec.stalling else ""
        lines.append(
            f"| {seed} | {len(spec.engines)}E+{len(spec.hosted)}H{stall}"
            f" | {spec.load_factor:.2f} | {spec.slo_ms:.0f}"
            f" | {100 * o['attainment']:.1f}% / {o['p99_ms']:.0f}"
            f" | {100 * s['attainment']:.1f}% / {s['p99_ms']:.0f}"
            f" | ${s['cost_per_1k']:.3f} / {ratio} | {100 * s['extra_upstream']:.1f}%"
            f" | {' / '.join('-' if c is None else f'{100 * c:.0f}%' for c in cold)} |"
        )
    return lines


def cheapest_meeting(
    seed: int, runs: dict[tuple[int, str], dict[str, Any]], quantile: float
) -> float | None:
    """The cost of the cheapest policy (the oracle is not one) meeting the SLO's quantile."""
    costs = [
        r["cost_per_1k"]
        for (s, name), r in runs.items()
        if s == seed
        and name not in ("oracle", *REFERENCES, *VARIANTS)
        and "cold" not in name
        and meets_slo(r, quantile)
    ]
    return min(costs) if costs else None


def bars(
    seeds: Sequence[int], runs: dict[tuple[int, str], dict[str, Any]], subject: str = SUBJECT
) -> list[str]:
    out: list[str] = []

    def bar(text: str, met: bool, detail: str) -> None:
        out.append(f"- {'MET' if met else 'MISSED'}: {text}: {detail}")

    for name in ("latency cold", "slo_cost cold") if subject == SUBJECT else ():
        shares = [runs[(s, name)]["cold_right"] for s in seeds if (s, name) in runs]
        if shares:
            ok = sum(1 for v in shares if v >= BAR_COLD)
            bar(
                f"{name}: >= {BAR_COLD:.0%} of turns 11-40 to the right target, every fleet",
                ok == len(shares),
                f"{ok}/{len(shares)} fleets; pooled {100 * statistics.mean(shares):.1f}%,"
                f" worst {100 * min(shares):.0f}%",
            )
    pairs = [
        (runs[(s, subject)], runs[(s, "oracle")])
        for s in seeds
        if (s, subject) in runs and (s, "oracle") in runs
    ]
    if not pairs:
        return out
    within = sum(1 for a, o in pairs if a["attainment"] >= o["attainment"] - BAR_WITHIN_POINTS)
    need = round(BAR_WITHIN_FLEETS * len(pairs) / 30)
    bar(
        f"SLO attainment within 1 point of the oracle's on >= {need}/{len(pairs)} fleets",
        within >= need,
        f"{within}/{len(pairs)}",
    )
    high = [(a, o) for a, o in pairs if o["attainment"] >= BAR_HIGH_ORACLE]
    high_ok = sum(1 for a, _ in high if a["attainment"] >= BAR_HIGH)
    bar(">= 99% where the oracle reaches 99.5%", high_ok == len(high), f"{high_ok}/{len(high)}")
    ratios = [a["p99_ms"] / o["p99_ms"] for a, o in pairs]
    med = statistics.median(ratios)
    bar(
        f"p99 <= {BAR_P99_VS_ORACLE}x the oracle's on the median fleet",
        med <= BAR_P99_VS_ORACLE,
        f"{med:.2f}x (worst {max(ratios):.2f}x)",
    )
    stalling = [s for s in seeds if generate(s).stalling and (s, subject) in runs]
    over = [
        s for s in stalling if runs[(s, subject)]["p99_ms"] > BAR_P99_VS_SLO * generate(s).slo_ms
    ]
    bar(
        f"p99 <= {BAR_P99_VS_SLO}x the SLO on fleets with stalling hosted targets",
        not over,
        f"{len(stalling) - len(over)}/{len(stalling)} (over: {over})",
    )
    extra = [runs[(s, subject)]["extra_upstream"] for s in seeds if (s, subject) in runs]
    bar(
        f"extra upstream requests <= {BAR_EXTRA:.0%} of turns, every fleet",
        max(extra) <= BAR_EXTRA,
        f"worst {100 * max(extra):.1f}%, mean {100 * statistics.mean(extra):.1f}%",
    )
    costly = []
    for s in seeds:
        if (s, subject) not in runs:
            continue
        cheapest = cheapest_meeting(s, runs, generate(s).slo_quantile)
        if cheapest is not None and runs[(s, subject)]["cost_per_1k"] > BAR_COST * cheapest + 1e-9:
            costly.append(s)
    bar(
        f"cost <= {BAR_COST}x the cheapest policy meeting the SLO, every fleet",
        not costly,
        f"over on {costly}",
    )
    return out


def miss_table(runs: dict[tuple[int, str], dict[str, Any]], configs: Sequence[str]) -> list[str]:
    head = "| config | turns | SLO attainment | " + " | ".join(CAUSES) + " |"
    lines = [head, "|" + "---|" * (len(CAUSES) + 3)]
    for name in configs:
        rows = [r for (_, c), r in runs.items() if c == name]
        if not rows or "cold" in name:
            continue
        counts: Counter[str] = Counter()
        for r in rows:
            counts.update(r["misses"])
        turns = sum(r["turns"] for r in rows)
        met = sum(r["attainment"] * r["turns"] for r in rows)
        cells = " | ".join(str(counts.get(c, 0)) for c in CAUSES)
        lines.append(f"| {name} | {turns} | {100 * met / turns:.2f}% | {cells} |")
    return lines


HEDGE_OUTCOMES = (
    "hedge won, in time",
    "hedge won, late",
    "hedge lost, in time",
    "hedge lost, late",
)


def hedge_table(runs: dict[tuple[int, str], dict[str, Any]], configs: Sequence[str]) -> list[str]:
    """What the hedges of each hedging configuration did, over all fleets."""
    lines = ["| config | hedged turns | " + " | ".join(HEDGE_OUTCOMES) + " |", "|---" * 6 + "|"]
    for name in configs:
        counts: Counter[str] = Counter()
        for (_, c), r in runs.items():
            if c == name:
                counts.update(r.get("hedges", {}))
        if counts:
            cells = " | ".join(str(counts.get(k, 0)) for k in HEDGE_OUTCOMES)
            lines.append(f"| {name} | {sum(counts.values())} | {cells} |")
    return lines


def _read_runs(path: Path) -> list[dict[str, Any]]:
    """The runs of an `unseen.json`, or of an `unseen.partial.jsonl` (one run a line)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    runs: list[dict[str, Any]] = json.loads(text)["runs"]
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default=f"{HELD_OUT_SEEDS.start}-{HELD_OUT_SEEDS.stop - 1}")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/out"))
    parser.add_argument(
        "--merge",
        default=None,
        help="comma-separated unseen.json (or unseen.partial.jsonl) files of runs made in"
        " parts (seeds or configs split over processes): their union's report, no runs",
    )
    parser.add_argument(
        "--rng-salt",
        default="",
        help="run with the router's tie-breaks drawn from another seed (the same fleets,"
        " draws and load): how far chance alone moves a result; a variant is worth"
        " keeping when it beats the base under two salts",
    )
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    t0 = time.monotonic()
    load_before = os.getloadavg()
    if args.merge:
        # every run is deterministic (virtual clock, seeded), so parts add up to one run
        results = [r for f in args.merge.split(",") for r in _read_runs(Path(f))]
        seeds = sorted({r["seed"] for r in results})
        configs = [c for c in CONFIGS if any(r["config"] == c for r in results)]
    else:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        partial = out / "unseen.partial.jsonl"
        partial.unlink(missing_ok=True)
        jobs = [(s, c, args.rng_salt) for s in seeds for c in configs]
        results = run_jobs(jobs, args.workers, partial)
    runs = _index(results)
    wall = time.monotonic() - t0
    text = "\n".join(
        [
            *fleet_rows(seeds, runs),
            "",
            "Bars (slo_cost+hedge unless named):",
            *bars(seeds, runs),
            *(
                line
                for v in VARIANTS
                if v in configs
                for line in ["", f"The same bars for {v}:", *bars(seeds, runs, v)]
            ),
            *(
                line
                for v in REFERENCES
                if v in configs
                for line in [
                    "",
                    f"The same bars for {v} (a reference that knows the odds, not a policy):",
                    *bars(seeds, runs, v),
                ]
            ),
            "",
            "SLO misses by cause (all fleets):",
            "",
            *miss_table(runs, configs),
            "",
            "What the hedges did (in time: the turn met the SLO):",
            "",
            *hedge_table(runs, configs),
        ]
    )
    print(text)
    cpu = sum(r["cpu_s"] for r in results)
    print(
        f"\n{len(results)} runs, {len(seeds)} fleets: {wall:.0f} s wall, {cpu:.0f} CPU-s in"
        f" {args.workers} workers; load average {load_before[0]:.2f} before,"
        f" {os.getloadavg()[0]:.2f} after"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "unseen.json").write_text(
        json.dumps(
            {"seeds": seeds, "wall_s": round(wall, 1), "runs": results, "table_md": text}, indent=1
        ),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
