"""The `firsttoken` command: serve, check, demo, simulate, sim, speech."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence

from router import build
from router.config import Config, load_config, missing_secrets
from router.errors import ConfigError, StaleBuild
from router.logs import LOG_FORMATS, setup_logging


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def summary(cfg: Config, path: str) -> str:
    lines = [f"{path}: valid", f"server  {cfg.server.host}:{cfg.server.port}", "targets"]
    for t in cfg.targets:
        where = t.base_url or "(provider default)"
        price = f"${t.price.input_per_mtok:g}/${t.price.output_per_mtok:g} per Mtok in/out"
        lines.append(f"  {t.name:<16} {t.kind:<8} {t.model:<28} {where}  {price}")
    lines.append("routes")
    for r in cfg.routes:
        extra = []
        if r.slo:
            extra.append(f"slo p{round(r.slo.quantile * 100)}<={r.slo.ttft_ms:g}ms")
        if r.hedge:
            extra.append(
                f"hedge after {r.hedge.after_ms}{'' if r.hedge.after_ms == 'adaptive' else 'ms'}"
                f" (max {r.hedge.max_rate:.0%} of turns"
                + (
                    ""
                    if r.hedge.max_cost_share is None
                    else f", +{r.hedge.max_cost_share:.0%} of spend"
                )
                + ")"
            )
        lines.append(
            f"  {r.name:<16} {r.policy.type:<11} -> {', '.join(r.targets)}"
            + (f"  [{'; '.join(extra)}]" if extra else "")
        )
    return "\n".join(lines)


def _config_errors(err: ConfigError) -> int:
    for issue in err.issues:
        print(issue, file=sys.stderr)
    return 1


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.path)
    except ConfigError as err:
        for issue in err.issues:
            print(issue, file=sys.stderr)
        print(f"{len(err.issues)} error(s)", file=sys.stderr)
        return 1
    print(summary(cfg, args.path))
    for message in missing_secrets(cfg, os.environ):
        print(f"warning: {message} (serve will refuse to start)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from router.gateway.serving import run
    from router.runtime import Router

    setup_logging(args.log_level, args.log_format)
    try:
        cfg = load_config(args.config)
        host = args.host or cfg.server.host
        port = args.port if args.port is not None else cfg.server.port
        router = Router(cfg, config_path=args.config)
        router.reload_on_sighup = True
    except ConfigError as err:
        return _config_errors(err)
    if not _is_loopback(host) and not router.runtime.auth.enabled and not args.insecure_public:
        print(
            f"refusing to bind {host}: no client keys are configured (auth.keys), so anyone "
            "who can reach it could spend your upstream budget; bind to loopback, configure "
            "auth, or pass --insecure-public",
            file=sys.stderr,
        )
        return 1
    run(router, host, port, args.log_level)
    if router.fatal is not None:
        print(f"firsttoken: {router.fatal}", file=sys.stderr)
        return 1
    return 0


def _quiet() -> None:
    # One log line per turn would drown the demo's view and simulate's table.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("firsttoken", "uvicorn", "aiohttp", "httpx", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The simulators re-raise a reset from a hedge loser's closed connection and
    # aiohttp logs it as an error with a traceback: expected here, not news.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


def cmd_demo(args: argparse.Namespace) -> int:
    from router.tools.demo import demo

    _quiet()
    if args.voice:
        from router.tools.voice_demo import voice_demo

        return voice_demo(
            duration_s=args.duration,
            sessions=args.sessions,
            barge_in=args.barge_in,
            live=not args.no_live,
            port=args.port,
            save_audio=args.save_audio,
        )
    try:
        return demo(
            policy=args.policy, duration_s=args.duration, live=not args.no_live, port=args.port
        )
    except ConfigError as err:
        return _config_errors(err)


def cmd_simulate(args: argparse.Namespace) -> int:
    from router.tools.simulate import parse_map, simulate

    _quiet()
    try:
        return simulate(
            args.policy,
            args.scenario,
            out_dir=args.out,
            duration_s=args.duration,
            slo_ms=args.slo_ms,
            mapping=parse_map(args.map),
            stream=sys.stdout,
        )
    except ConfigError as err:
        return _config_errors(err)


def cmd_sim(args: argparse.Namespace) -> int:
    from router.sim.fleet import serve_scenario
    from router.sim.scenario import load_scenario
    from router.tools.simulate import resolve_scenario

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
    stop = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C (or a supervisor) is how `--serve` ends
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve_scenario(path, host=args.host, base_port=args.base_port, stop_signals=stop)
        )
    return 0


def _register_tools(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """demo, simulate and sim: the simulated fleet's commands (their heavy modules,
    uvicorn, rich and matplotlib, are imported only when one runs)."""
    demo = sub.add_parser(
        "demo", help="run a simulated fleet and the router with policies/hybrid.yaml, under load"
    )
    demo.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    demo.add_argument(
        "--no-live", action="store_true", help="no live view: print a plain summary at the end"
    )
    demo.add_argument("--port", type=int, default=0, help="the router's port (default: any free)")
    demo.add_argument(
        "--policy",
        default=None,
        help="policy file (default: policies/hybrid.yaml here, else the copy in the package)",
    )
    voice = demo.add_argument_group(
        "voice", "--voice: callers talk to a realtime route (local speech engines when installed)"
    )
    voice.add_argument("--voice", action="store_true", help="the voice demo")
    voice.add_argument("--sessions", type=int, default=4, help="callers at once (default 4)")
    voice.add_argument(
        "--barge-in", type=float, default=0.25, help="share of answers cut into (default 0.25)"
    )
    voice.add_argument("--save-audio", metavar="DIR", help="write each session's two sides as WAV")
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
    simulate.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="TARGET=SERVER",
        help="run a policy target on a scenario server of another name (repeatable); "
        "by default each target runs on the server of its own name",
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

    from router.tools.speech import register  # imports no engine until one runs

    register(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="firsttoken", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the router")
    serve.add_argument("--config", required=True, help="policy file (YAML)")
    serve.add_argument("--host", default=None, help="default: the file's server.host (127.0.0.1)")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument(
        "--insecure-public", action="store_true", help="allow binding a non-loopback address"
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="info: what an operator acts on; debug adds every turn and background poll",
    )
    serve.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="json: one object per line (route, target, outcome, ttft_ms, client, ...)",
    )
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate a policy file")
    check.add_argument("path")
    check.set_defaults(func=cmd_check)

    _register_tools(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # a compiled build (make compile) must be of the sources beside it
        build.check()
    except StaleBuild as err:
        print(f"firsttoken: {err.message}", file=sys.stderr)
        return 1
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
