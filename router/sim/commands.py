"""The simulator's subcommands of `firsttoken`: demo, simulate, sim.

`register(sub)` adds them to the CLI's subparsers. The heavy modules (uvicorn,
rich, matplotlib) are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from router.errors import ConfigError


def _quiet() -> None:
    # One log line per turn would drown the demo's view and simulate's table.
    for name in ("firsttoken", "uvicorn", "aiohttp", "httpx", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The simulators re-raise a reset from a hedge loser's closed connection and
    # aiohttp logs it as an error with a traceback: expected here, not news.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


def _config_errors(err: ConfigError) -> int:
    for issue in err.issues:
        print(issue, file=sys.stderr)
    return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from router.demo import demo

    _quiet()
    try:
        return demo(
            policy=args.policy, duration_s=args.duration, live=not args.no_live, port=args.port
        )
    except ConfigError as err:
        return _config_errors(err)


def cmd_simulate(args: argparse.Namespace) -> int:
    from router.simulate import simulate

    _quiet()
    try:
        return simulate(
            args.policy,
            args.scenario,
            out_dir=args.out,
            duration_s=args.duration,
            slo_ms=args.slo_ms,
            stream=sys.stdout,
        )
    except ConfigError as err:
        return _config_errors(err)


def cmd_sim(args: argparse.Namespace) -> int:
    from router.sim.fleet import serve_scenario
    from router.sim.scenario import load_scenario
    from router.simulate import resolve_scenario

    path = resolve_scenario(args.scenario)
    try:
        scenario = load_scenario(path)
    except ConfigError as err:
        return _config_errors(err)
    if not args.serve:
        for spec in scenario.servers:
            print(f"{spec.name:<16} {spec.kind:<7} {spec.model}")
        print("(add --serve to start these servers)")
        return 0
    _quiet()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how `--serve` ends
        asyncio.run(serve_scenario(path, host=args.host, base_port=args.base_port))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo", help="run a simulated fleet and the router with policies/hybrid.yaml, under load"
    )
    demo.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    demo.add_argument(
        "--no-live", action="store_true", help="no live view: print a plain summary at the end"
    )
    demo.add_argument("--port", type=int, default=0, help="the router's port (default: any free)")
    demo.add_argument("--policy", default=None, help="policy file (default: policies/hybrid.yaml)")
    demo.set_defaults(func=cmd_demo)

    simulate = sub.add_parser(
        "simulate", help="compare policies on the same seeded workload of a scenario"
    )
    simulate.add_argument(
        "--policy", action="append", required=True, help="policy file; repeat to compare"
    )
    simulate.add_argument(
        "--scenario", required=True, help="scenario file, or `demo` for the built-in one"
    )
    simulate.add_argument("--out", default="simulate-out", help="where the PNG and JSON go")
    simulate.add_argument("--duration", type=float, default=None, help="cut the scenario short")
    simulate.add_argument(
        "--slo-ms",
        type=float,
        default=None,
        help="TTFT threshold for SLO attainment (default: the first policy's route SLO)",
    )
    simulate.set_defaults(func=cmd_simulate)

    sim = sub.add_parser("sim", help="run a scenario's simulated servers")
    sim.add_argument("--scenario", required=True, help="scenario file, or `demo`")
    sim.add_argument("--serve", action="store_true", help="start them and serve until Ctrl-C")
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (with --serve)")
    sim.add_argument(
        "--base-port",
        type=int,
        default=0,
        help="server i listens on BASE_PORT + i, in scenario order (default: any free port)",
    )
    sim.set_defaults(func=cmd_sim)
