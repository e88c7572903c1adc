"""`firsttoken demo`: a simulated fleet, the router and conversational load, in one command.

The fleet is the built-in `demo` scenario (two vLLM-like engines, two hosted-like
APIs) on ephemeral ports; the policy (`policies/hybrid.yaml` by default: the copy
in this folder if there is one, else the one shipped in the package) is bound to
their live base URLs by target name; the router listens on
127.0.0.1 and `router.tools.driver.drive` replays the scenario's sessions through it
over HTTP, all on one event loop. The live view (rich) shows per target the
share of turns, TTFT, queue, breaker and cost, and the story of the run
(`story.py`: fallbacks, hedges, errors and breaker changes, counted by kind and in
time order); `--no-live`, or output that is not a terminal, prints the same once
at the end, as plain text at full width.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import anyio

from router.config import Config, Price, RouteConfig
from router.runtime import Router
from router.sim.fleet import Fleet
from router.sim.scenario import load_scenario
from router.sim.workload import turns
from router.tools.driver import TurnOutcome, drive, summarise
from router.tools.simulate import (
    bind_policy,
    builtin_scenario,
    packaged,
    pick_route,
    running_router,
)
from router.tools.story import Story

DEFAULT_POLICY = "policies/hybrid.yaml"
#: how often the breakers are looked at, for the story
BREAKER_POLL_S = 0.1


def find_policy(policy: str | None) -> Path:
    """The given file, else policies/hybrid.yaml here (a checkout, perhaps edited), else
    the copy shipped in the package (`router/tools/data/hybrid.yaml`, kept equal to
    the documented one by a test)."""
    if policy is not None:
        return Path(policy)
    here = Path(DEFAULT_POLICY)
    return here if here.exists() else packaged("hybrid.yaml")


def examples(base_url: str, route: str) -> list[str]:
    body = f'{{"model":"{route}","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}'
    return [
        f"curl -N {base_url}/chat/completions -H 'content-type: application/json' -d '{body}'",
        f"python -c \"import openai; c = openai.OpenAI(base_url='{base_url}', api_key='none'); "
        f"print(c.chat.completions.create(model='{route}', messages=[{{'role': 'user', "
        f"'content': 'hi'}}]).choices[0].message.content)\"",
    ]


@dataclass
class DemoState:
    """What the view reads: every finished turn, and the story of the notable ones."""

    router: Router
    route: RouteConfig
    prices: dict[str, Price]
    kinds: dict[str, str]
    base_url: str
    duration_s: float
    started: float = field(default_factory=time.monotonic)
    outcomes: list[TurnOutcome] = field(default_factory=list)
    story: Story = field(default_factory=Story)

    def now(self) -> float:
        return time.monotonic() - self.started

    def add(self, out: TurnOutcome) -> None:
        self.outcomes.append(out)
        self.story.turn(self.now(), out)

    def look_at_breakers(self) -> None:
        self.story.breakers(self.now(), {v.name: v.breaker for v in self.router.views()})

    def summary(self) -> dict[str, Any]:
        slo = self.route.slo.ttft_ms if self.route.slo else 500.0
        return summarise(self.outcomes, slo, self.prices, self.route.targets)

    def target_rows(self, summary: dict[str, Any]) -> list[list[str]]:
        views = {v.name: v for v in self.router.views()}
        rows = []
        for name in self.route.targets:
            s = summary["targets"][name]
            view = views.get(name)
            queue = "-"
            if view is not None and view.engine is not None:
                queue = f"{view.engine.waiting:.0f}/{view.engine.running:.0f}"
            rows.append(
                [
                    name,
                    self.kinds.get(name, "?"),
                    str(s["turns"]),
                    f"{s['share']:.0%}",
                    f"{_num(s['ttft_p50_ms'])}/{_num(s['ttft_p99_ms'])}",
                    str(view.in_flight if view else "-"),
                    queue,
                    view.breaker if view else "-",
                    f"${s['cost_usd']:.5f}",
                ]
            )
        return rows


HEADERS = [
    "target",
    "kind",
    "turns",
    "share",
    "p50/p99 ms",
    "inflight",
    "queue",
    "breaker",
    "cost",
]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def headline(state: DemoState, summary: dict[str, Any]) -> str:
    slo = state.route.slo
    slo_text = f"p{slo.quantile * 100:g}<={slo.ttft_ms:g}ms" if slo else "(no SLO)"
    return (
        f"{summary['turns']} turns offered, {summary['ok']} ok, {summary['errors']} errors, "
        f"{summary['dropped']} dropped, {summary['cut']} cut at the stop\n"
        f"TTFT p50 {_ms(summary['ttft_p50_ms'])}, "
        f"p90 {_ms(summary['ttft_p90_ms'])}, p99 {_ms(summary['ttft_p99_ms'])}; "
        f"SLO {slo_text}: {summary['slo_attainment']:.1%} of turns within "
        f"{summary['slo_ms']:g} ms\nfallbacks {summary['fallbacks']}, hedges "
        f"{summary['hedges']} | cost ${summary['cost_usd']:.5f}"
    )


def plain_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _live_view(state: DemoState) -> Any:
    from rich import box
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    summary = state.summary()
    elapsed = min(time.monotonic() - state.started, state.duration_s)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
    for h in HEADERS:
        justify: Literal["left", "right"] = (
            "left" if h in ("target", "kind", "breaker") else "right"
        )
        table.add_column(h, justify=justify, no_wrap=True)
    for row in state.target_rows(summary):
        style = {"open": "red", "half_open": "yellow"}.get(row[7])
        table.add_row(*row, style=style)
    top = "\n".join(
        [
            f"router {state.base_url}   route '{state.route.name}'   "
            f"{elapsed:.0f}/{state.duration_s:g} s",
            *examples(state.base_url, state.route.name),
        ]
    )
    kinds = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_header=False, expand=False)
    kinds.add_column("kind", no_wrap=True)
    kinds.add_column("count", justify="right")
    kinds.add_column("last", no_wrap=True, overflow="ellipsis")
    for title, count, last in state.story.by_kind():
        kinds.add_row(title, str(count), "\n".join(last) or "-")
    timeline = "\n".join(str(e) for e in state.story.timeline) or "(none yet)"
    return Group(
        Panel(top, title="FirstToken demo (Ctrl-C to stop); queue = engine waiting/running"),
        table,
        headline(state, summary),
        Panel(kinds, title="events by kind: count, last few"),
        Panel(timeline, title="latest events, in time order"),
    )


async def _show_live(state: DemoState) -> None:
    from rich.live import Live

    with Live(get_renderable=lambda: _live_view(state), refresh_per_second=4, screen=False):
        await asyncio.Event().wait()


async def run_demo(
    policy: Path, *, duration_s: float, live: bool, port: int, stream: TextIO
) -> DemoState:
    scenario = load_scenario(builtin_scenario("demo"))
    assert scenario.workload is not None
    async with Fleet(scenario) as fleet:
        config: Config = bind_policy(policy, scenario, fleet.base_urls)
        route = pick_route(config, scenario.workload.model)
        async with running_router(config, port=port) as (router, base_url):
            state = DemoState(
                router=router,
                route=route,
                prices={t.name: t.price for t in config.targets},
                kinds={t.name: t.kind for t in config.targets},
                base_url=base_url,
                duration_s=duration_s,
            )
            if not live:
                print(
                    f"router listening on {base_url} (policy {policy}, route '{route.name}'); try:",
                    file=stream,
                )
                for line in examples(base_url, route.name):
                    print(f"  {line}", file=stream)
                print(
                    f"driving {duration_s:g} s of conversational load ...", file=stream, flush=True
                )
            async with anyio.create_task_group() as tg:

                async def stop_on_ctrl_c() -> None:
                    with anyio.open_signal_receiver(signal.SIGINT) as signals:
                        async for _ in signals:
                            tg.cancel_scope.cancel()
                            return

                async def watch_breakers() -> None:
                    while True:
                        state.look_at_breakers()
                        await asyncio.sleep(BREAKER_POLL_S)

                tg.start_soon(stop_on_ctrl_c)
                tg.start_soon(watch_breakers)
                if live:
                    tg.start_soon(_show_live, state)
                await drive(
                    base_url,
                    turns(scenario.workload, random.Random(scenario.seed)),
                    duration_s=duration_s,
                    route=route.name,
                    drain_s=3.0,
                    on_outcome=state.add,
                )
                tg.cancel_scope.cancel()
            state.duration_s = min(duration_s, time.monotonic() - state.started)
            return state


def demo(
    *,
    policy: str | None,
    duration_s: float,
    live: bool,
    port: int,
    stream: TextIO | None = None,
) -> int:
    stream = stream or sys.stdout  # looked up per call: a test may have replaced it
    path = find_policy(policy)
    # A pipe or a file gets no live view (rich would cut it at 80 columns): the plain
    # summary at the end is the whole output.
    live = live and stream.isatty()
    state = asyncio.run(run_demo(path, duration_s=duration_s, live=live, port=port, stream=stream))
    summary = state.summary()
    print(f"\ndemo summary: {state.duration_s:.1f} s of load through {path}", file=stream)
    print(plain_table(state.target_rows(summary)), file=stream)
    print(headline(state, summary), file=stream)
    print(f"events: {state.story.tally()}", file=stream)
    for title, count, last in state.story.by_kind():
        if count:
            print(f"  last {title}:", file=stream)
            for line in last:
                print(f"    {line}", file=stream)
    if state.story.timeline:
        print("latest events, in time order:", file=stream)
        for event in state.story.timeline:
            print(f"  {event}", file=stream)
    stream.flush()
    return 0 if summary["ok"] > 0 else 1
