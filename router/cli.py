"""The `firsttoken` command: serve, check, demo, simulate, sim, bench."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence

from router.config import Config, load_config, missing_secrets
from router.errors import ConfigError
from router.sim import commands


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
                f" (max {r.hedge.max_rate:.0%} of turns)"
            )
        lines.append(
            f"  {r.name:<16} {r.policy.type:<11} -> {', '.join(r.targets)}"
            + (f"  [{'; '.join(extra)}]" if extra else "")
        )
    return "\n".join(lines)


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

    logging.getLogger().setLevel(args.log_level.upper())
    try:
        cfg = load_config(args.config)
        host = args.host or cfg.server.host
        port = args.port if args.port is not None else cfg.server.port
        router = Router(cfg, config_path=args.config)
        router.reload_on_sighup = True
    except ConfigError as err:
        for issue in err.issues:
            print(issue, file=sys.stderr)
        return 1
    if not _is_loopback(host) and not router.runtime.auth.enabled and not args.insecure_public:
        print(
            f"refusing to bind {host}: no client keys are configured (auth.keys), so anyone "
            "who can reach it could spend your upstream budget; bind to loopback, configure "
            "auth, or pass --insecure-public",
            file=sys.stderr,
        )
        return 1
    run(router, host, port, args.log_level)
    return 0


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
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate a policy file")
    check.add_argument("path")
    check.set_defaults(func=cmd_check)

    commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
