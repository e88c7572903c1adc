"""`firsttoken simulate`: the same seeded workload through each policy, side by side.

For every policy file: a fresh fleet of the scenario's simulated servers (same
seed, so the hosted servers draw the same randomness), the policy bound to the
fleet's live base URLs (targets are matched to servers by name, or by an explicit
`--map TARGET=SERVER`, which the output states), the router
in-process on uvicorn, and `router.tools.driver.drive` replaying the scenario's turns
in real time. Runs are sequential so they never compete for the CPU.

Also home to what `firsttoken demo` shares with it: `bind_policy` and
`running_router`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import random
import time
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
import uvicorn
import yaml

from router.config import Config, Price, RouteConfig, load_config, parse_config
from router.errors import ConfigError, ConfigIssue
from router.gateway.server import Server
from router.runtime import Router
from router.sim.fleet import Fleet, fleet_targets
from router.sim.scenario import Scenario, load_scenario
from router.sim.workload import turns
from router.tools.driver import TurnOutcome, drive, percentile, summarise, watch_loop_lag

DEFAULT_SLO_MS = 500.0


def packaged(name: str) -> Path:
    """A file shipped with the package, in `router/tools/data/` (package data)."""
    return Path(str(importlib.resources.files("router.tools").joinpath("data", name)))


def builtin_scenario(name: str = "demo") -> Path:
    """A scenario shipped with the package (`router/tools/data/<name>.yaml`)."""
    return packaged(f"{name}.yaml")


def resolve_scenario(spec: str) -> Path:
    """A path, or the name of a built-in scenario (`demo`)."""
    path = Path(spec)
    if not path.exists() and "/" not in spec and not spec.endswith(".yaml"):
        builtin = builtin_scenario(spec)
        if builtin.exists():
            return builtin
    return path


# -- binding a policy to a live fleet --------------------------------------------------


def bind_policy(
    policy_path: str | Path,
    scenario: Scenario,
    base_urls: dict[str, str],
    mapping: Mapping[str, str] | None = None,
) -> Config:
    """The policy with each target's base_url replaced by its server's live one.

    Targets are matched to the scenario's servers by name, or by `mapping` (policy
    target -> scenario server, `--map`); each takes the kind its server speaks
    (`vllm` for engines, `openai` for the rest) and loses its api_key_env
    (simulated servers need no key) and metrics_url.
    """
    path = str(policy_path)
    load_config(path)  # the file itself must be valid: report its own file:line errors
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    live = {t["name"]: t for t in fleet_targets(scenario, base_urls)}
    mapping = mapping or {}
    names = [target["name"] for target in data["targets"]]
    issues = [
        ConfigIssue(path, None, "targets", f"--map {n}=...: the policy has no target '{n}'")
        for n in mapping
        if n not in names
    ]
    for target in data["targets"]:
        server = live.get(mapping.get(target["name"], target["name"]))
        if server is None:
            wanted = mapping.get(target["name"], target["name"])
            issues.append(
                ConfigIssue(
                    path,
                    None,
                    "targets",
                    f"target '{target['name']}' has no server '{wanted}' in scenario "
                    f"'{scenario.name}' (servers: {', '.join(live)}); map it onto one with "
                    f"--map {target['name']}=SERVER",
                )
            )
            continue
        target["base_url"] = server["base_url"]
        target["kind"] = server["kind"]
        target.pop("api_key_env", None)
        target.pop("metrics_url", None)
    if issues:
        raise ConfigError(issues)
    return parse_config(yaml.safe_dump(data, sort_keys=False), f"{path} (live base_urls)")


def parse_map(pairs: Sequence[str]) -> dict[str, str]:
    """`--map TARGET=SERVER` (repeated, or comma-separated) as a dict."""
    out: dict[str, str] = {}
    for pair in (p for arg in pairs for p in arg.split(",") if p.strip()):
        target, sep, server = pair.partition("=")
        if not sep or not target.strip() or not server.strip():
            raise ConfigError([ConfigIssue("--map", None, "", f"'{pair}' is not TARGET=SERVER")])
        out[target.strip()] = server.strip()
    return out


def pick_route(config: Config, preferred: str | None) -> RouteConfig:
    """The route named `preferred` if the policy has it, else its first route."""
    return (config.route(preferred) if preferred else None) or config.routes[0]


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal capture: the caller owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def running_router(
    config: Config, *, port: int = 0, rng: random.Random | None = None
) -> AsyncIterator[tuple[Router, str]]:
    """The router on 127.0.0.1 in this event loop; yields it and its OpenAI base URL."""
    router = Router(config, rng=rng, environ={})
    server = _QuietServer(
        uvicorn.Config(
            Server(router),
            host="127.0.0.1",
            port=port,
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind
                task.result()
            raise OSError(f"the router could not listen on 127.0.0.1:{port}")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield router, f"http://127.0.0.1:{bound}/v1"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


# -- one run per policy -----------------------------------------------------------------


@dataclass(slots=True)
class PolicyRun:
    name: str
    path: str
    route: str
    targets: list[str]
    prices: dict[str, Price]
    outcomes: list[TurnOutcome]
    wall_s: float
    #: how late the shared event loop woke up (p99): large values inflate every TTFT
    loop_lag_p99_ms: float = 0.0


async def run_policy(
    policy_path: str | Path,
    scenario: Scenario,
    *,
    duration_s: float,
    drain_s: float = 5.0,
    mapping: Mapping[str, str] | None = None,
) -> PolicyRun:
    assert scenario.workload is not None
    started = time.monotonic()
    async with Fleet(scenario) as fleet:
        config = bind_policy(policy_path, scenario, fleet.base_urls, mapping)
        route = pick_route(config, scenario.workload.model)
        lag: list[float] = []
        async with (
            running_router(config, rng=random.Random(scenario.seed)) as (_, base_url),
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(watch_loop_lag, lag)
            outcomes = await drive(
                base_url,
                turns(scenario.workload, random.Random(scenario.seed)),
                duration_s=duration_s,
                route=route.name,
                drain_s=drain_s,
            )
            tg.cancel_scope.cancel()
    return PolicyRun(
        name=Path(policy_path).stem,
        path=str(policy_path),
        route=route.name,
        targets=list(route.targets),
        prices={t.name: t.price for t in config.targets},
        outcomes=outcomes,
        wall_s=time.monotonic() - started,
        loop_lag_p99_ms=round(1000 * (percentile(lag, 0.99) or 0.0), 1),
    )


def share_over_time(
    outcomes: Sequence[TurnOutcome], targets: Sequence[str], duration_s: float, bins: int = 20
) -> dict[str, Any]:
    """Per time bin (by send time), each target's share of the turns that got a token."""
    width = max(duration_s / bins, 0.5)
    n = max(1, int(duration_s / width + 0.999))
    counts = {name: [0] * n for name in targets}
    for o in outcomes:
        if o.target in counts and o.sent_s is not None and o.ttft_s is not None:
            counts[o.target][min(n - 1, int(o.sent_s / width))] += 1
    totals = [sum(counts[name][i] for name in targets) for i in range(n)]
    return {
        "bin_s": round(width, 3),
        "t_s": [round(i * width, 3) for i in range(n)],
        "share": {
            name: [round(c / t, 4) if t else 0.0 for c, t in zip(counts[name], totals, strict=True)]
            for name in targets
        },
    }


def report(runs: Sequence[PolicyRun], *, duration_s: float, slo_ms: float) -> dict[str, Any]:
    out = []
    for run in runs:
        summary = summarise(run.outcomes, slo_ms, run.prices, run.targets)
        ttfts = sorted(round(o.ttft_s * 1000, 2) for o in run.outcomes if o.ttft_s is not None)
        out.append(
            {
                "name": run.name,
                "path": run.path,
                "route": run.route,
                "wall_s": round(run.wall_s, 2),
                "loop_lag_p99_ms": run.loop_lag_p99_ms,
                "summary": summary,
                "share_over_time": share_over_time(run.outcomes, run.targets, duration_s),
                "ttft_ms": ttfts,
            }
        )
    return {"duration_s": duration_s, "slo_ms": slo_ms, "policies": out}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _num(x: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def format_table(data: dict[str, Any]) -> str:
    policies = data["policies"]
    rows: list[tuple[str, list[str]]] = [
        ("turns ok / offered", [f"{p['summary']['ok']}/{p['summary']['turns']}" for p in policies]),
        ("TTFT p50 ms", [_num(p["summary"]["ttft_p50_ms"]) for p in policies]),
        ("TTFT p90 ms", [_num(p["summary"]["ttft_p90_ms"]) for p in policies]),
        ("TTFT p99 ms", [_num(p["summary"]["ttft_p99_ms"]) for p in policies]),
        (f"SLO <= {data['slo_ms']:g} ms", [_pct(p["summary"]["slo_attainment"]) for p in policies]),
        ("cost / 1k turns", [f"${p['summary']['cost_per_1k_turns_usd']:.4f}" for p in policies]),
        ("fallbacks", [str(p["summary"]["fallbacks"]) for p in policies]),
        ("hedges", [str(p["summary"]["hedges"]) for p in policies]),
        (
            "errors / dropped",
            [f"{p['summary']['errors']}/{p['summary']['dropped']}" for p in policies],
        ),
    ]
    names = list(dict.fromkeys(n for p in policies for n in p["summary"]["targets"]))
    for name in names:
        rows.append(
            (
                f"share {name}",
                [_pct(p["summary"]["targets"].get(name, {}).get("share")) for p in policies],
            )
        )
    rows.append(("loop lag p99 ms", [f"{p['loop_lag_p99_ms']:.0f}" for p in policies]))
    rows.append(
        (
            "wall time s",
            [f"{p['wall_s']:.1f} ({p['wall_s'] / data['duration_s']:.2f}x)" for p in policies],
        )
    )
    first = max(len(label) for label, _ in rows)
    widths = [
        max(len(p["name"]), *(len(cells[i]) for _, cells in rows)) for i, p in enumerate(policies)
    ]
    lines = [
        " " * first + "".join(f"  {p['name']:>{w}}" for p, w in zip(policies, widths, strict=True))
    ]
    for label, cells in rows:
        lines.append(
            f"{label:<{first}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )
    return "\n".join(lines)


def write_plot(data: dict[str, Any], path: Path) -> None:
    """TTFT CDFs of every policy on top; each policy's traffic share over time below."""
    from matplotlib.figure import Figure  # heavy: only when a plot is written

    policies = data["policies"]
    fig = Figure(figsize=(max(8.0, 4.0 * len(policies)), 8.0), layout="constrained")
    grid = fig.add_gridspec(2, len(policies))
    cdf = fig.add_subplot(grid[0, :])
    for p in policies:
        values = p["ttft_ms"]
        if values:
            ys = [(i + 1) / len(values) for i in range(len(values))]
            cdf.step(values, ys, where="post", label=p["name"])
    cdf.axvline(data["slo_ms"], color="grey", linestyle="--", label=f"SLO {data['slo_ms']:g} ms")
    cdf.set_xscale("log")
    cdf.set_xlabel("TTFT (ms, log scale)")
    cdf.set_ylabel("fraction of turns")
    cdf.set_title("TTFT CDF")
    cdf.legend(loc="lower right")
    for i, p in enumerate(policies):
        ax = fig.add_subplot(grid[1, i])
        series = p["share_over_time"]
        names = list(series["share"])
        if names:
            ax.stackplot(
                series["t_s"], *(series["share"][n] for n in names), labels=names, step="post"
            )
        ax.set_ylim(0.0, 1.0)
        ax.set_title(f"{p['name']}: traffic share")
        ax.set_xlabel("time (s)")
        if i == 0:
            ax.set_ylabel("share of turns")
            ax.legend(loc="upper left", fontsize="small")
    fig.savefig(path, dpi=100)


def simulate(
    policy_paths: Sequence[str],
    scenario_spec: str,
    *,
    out_dir: str = "simulate-out",
    duration_s: float | None = None,
    slo_ms: float | None = None,
    mapping: Mapping[str, str] | None = None,
    stream: TextIO,
) -> int:
    scenario_path = resolve_scenario(scenario_spec)
    scenario = load_scenario(scenario_path)
    if scenario.workload is None:
        raise ConfigError([ConfigIssue(str(scenario_path), None, "workload", "no workload")])
    duration = min(duration_s or scenario.workload.duration_s, scenario.workload.duration_s)
    if slo_ms is None:
        first = pick_route(load_config(policy_paths[0]), scenario.workload.model)
        slo_ms = first.slo.ttft_ms if first.slo else DEFAULT_SLO_MS
    if mapping:
        pairs = ", ".join(f"{t} -> {s}" for t, s in mapping.items())
        print(f"policy targets mapped onto scenario servers (--map): {pairs}", file=stream)
    runs = []
    for path in policy_paths:
        print(f"running {path} on {scenario.name} for {duration:g} s ...", file=stream, flush=True)
        run = asyncio.run(run_policy(path, scenario, duration_s=duration, mapping=mapping))
        print(f"  done in {run.wall_s:.1f} s wall time", file=stream, flush=True)
        runs.append(run)
    stems = [run.name for run in runs]
    for run in runs:
        if stems.count(run.name) > 1:
            run.name = run.path  # two files named alike: tell them apart
    data = {"scenario": scenario.name, "scenario_path": str(scenario_path), "seed": scenario.seed}
    data |= report(runs, duration_s=duration, slo_ms=slo_ms)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulate.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    write_plot(data, out / "simulate.png")
    print(
        f"\nscenario {scenario.name} (seed {scenario.seed}), {duration:g} s of traffic", file=stream
    )
    print(format_table(data), file=stream)
    print(f"\nwrote {out / 'simulate.json'} and {out / 'simulate.png'}", file=stream)
    return 0
