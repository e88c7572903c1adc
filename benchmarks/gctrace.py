"""The router's garbage-collector pauses, as benchmarks read them.

A router started with `FIRSTTOKEN_GC_TRACE=FILE` (router/gateway/collector.py) times
every collection and, on SIGUSR1, appends to FILE one JSON line: per generation the
collections since the previous line, their pause total, p50, p99 and max, and the
objects they freed. `mark()` sends the signal and returns that line; a benchmark
marks at the start of its measured window (discarding what came before) and at its
end. `--gc Y,M,O` in the benchmarks that take it writes `server.gc` thresholds
(young, middle, old) into the router's configuration.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV = "FIRSTTOKEN_GC_TRACE"
SAVEALL_ENV = "FIRSTTOKEN_GC_SAVEALL"
HEADER = (
    "| router | point | window s | gen 0: n, p99 / max ms | gen 1: n, p99 / max ms | "
    "gen 2: n, p99 / max ms | pause ms per s | objects freed |\n"
    "|---|---|---|---|---|---|---|---|"
)


def env(path: Path) -> dict[str, str]:
    return {ENV: str(path)}


def server_yaml(gc: str | None) -> str:
    """`server: {gc: ...}` for thresholds given as "young,middle,old" (or nothing)."""
    if not gc:
        return ""
    young, middle, old = (int(v) for v in gc.split(","))
    return f"server: {{gc: {{young: {young}, middle: {middle}, old: {old}}}}}\n"


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def mark(pid: int, path: Path, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """The collections of the router `pid` since its previous mark (None if it did
    not answer: not started with the trace, or gone)."""
    before = len(_lines(path))
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = _lines(path)
        if len(lines) > before:
            found: dict[str, Any] = json.loads(lines[-1])
            return found
        time.sleep(0.02)
    return None


def row(router: str, point: str, trace: Mapping[str, Any] | None, clock: str = "cpu") -> str:
    """One table row: per generation the collections and their pauses' p99 and max,
    by `clock` ("cpu": the thread's CPU time, which a loaded machine hardly
    inflates; "wall": what the turns in flight waited)."""
    if not trace:
        return f"| {router} | {point} | - | - | - | - | - | - |"
    g = trace["generations"]
    total = sum(g[k][clock]["total_ms"] for k in g)
    freed = sum(g[k]["collected"] for k in g)
    window = trace["window_s"] or 1.0
    cells = [
        f"{g[k]['count']}, {g[k][clock]['p99_ms']:.2f} / {g[k][clock]['max_ms']:.2f}"
        for k in ("0", "1", "2")
    ]
    return (
        f"| {router} | {point} | {trace['window_s']:.1f} | "
        + " | ".join(cells)
        + f" | {total / window:.2f} | {freed} |"
    )
