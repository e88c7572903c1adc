"""The cyclic garbage collector in a serving process: its thresholds (`server.gc`),
the points where long-lived objects are frozen out of its scans, and an opt-in trace
of its pauses for benchmarks.

CPython collects the young generation after `young` container allocations (net of
frees), the middle one every `middle` young collections and the old one (every live
object not frozen) every `old` middle ones, and then only once the objects that
survived into it since the last full collection are a quarter of it. A collection
runs on the event loop's thread, between two bytecodes of whatever runs then, so
its pause lands on the turns in flight.

The trace (`FIRSTTOKEN_GC_TRACE=FILE`, off by default; benchmarks set it): a
`gc.callbacks` hook times every collection; on SIGUSR1 the process appends one JSON
line to FILE with, per generation, the collections since the previous line, their
pauses (total, p50, p99 and max; wall time, and the thread's CPU time, which a
loaded machine inflates far less) and the objects they freed, then starts afresh. A
benchmark signals at the edges of its measured window. With
`FIRSTTOKEN_GC_SAVEALL=1` too, the collector keeps what it finds unreachable
(`gc.DEBUG_SAVEALL`), each line first runs a full collection (not counted among the
pauses) and then says what all that was (objects by type, and the large buffers they
held): a check that nothing big waits for the cyclic collector.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from router.config import GcConfig

#: the environment variable that switches the pause trace on: the file it appends to
TRACE_ENV = "FIRSTTOKEN_GC_TRACE"
#: with the trace: keep and report what the collector found unreachable
SAVEALL_ENV = "FIRSTTOKEN_GC_SAVEALL"
#: a buffer at least this large held by cyclic garbage is reported by size
BIG_BYTES = 64 * 1024
PACKAGE = Path(__file__).resolve().parents[1]


def apply(settings: GcConfig) -> None:
    """Before serving: collect what start-up left, freeze everything built so far (it
    lives as long as the process, so no collection needs to scan it again), then set
    the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(settings.young, settings.middle, settings.old)


def freeze_after_start() -> None:
    """What the lifespan built lives as long as the process too. No collection first:
    the server listens already, and a full one can take 100+ ms on a busy machine;
    the little start-up garbage kept is kept once."""
    gc.freeze()


class PauseTrace:
    """Times every collection (a `gc.callbacks` hook) and writes a summary per
    generation on demand. Debug only: the hook costs a few microseconds a collection."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], int] = time.perf_counter_ns,
        cpu_clock: Callable[[], int] = time.thread_time_ns,
        saveall: bool = False,
    ) -> None:
        self.path = path
        self.saveall = saveall
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._started = self._started_cpu = 0
        self._since = clock()
        self._pauses: list[list[int]] = [[], [], []]
        self._cpu: list[list[int]] = [[], [], []]
        self._collected = [0, 0, 0]
        self._own = False  # our own collection (saveall), not counted

    def install(self) -> None:
        gc.callbacks.append(self._on_gc)
        signal.signal(signal.SIGUSR1, self._on_signal)
        if self.saveall:
            gc.set_debug(gc.DEBUG_SAVEALL)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        if self.saveall:
            gc.set_debug(0)
            gc.garbage.clear()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if self._own:
            return
        if phase == "start":
            self._started = self._clock()
            self._started_cpu = self._cpu_clock()
            return
        generation = info["generation"]
        self._pauses[generation].append(self._clock() - self._started)
        self._cpu[generation].append(self._cpu_clock() - self._started_cpu)
        self._collected[generation] += info["collected"]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.dump()

    def summary(self) -> dict[str, Any]:
        """The collections since the previous summary (and starts afresh)."""
        now = self._clock()
        gens: dict[str, Any] = {}
        for generation, pauses in enumerate(self._pauses):
            gens[str(generation)] = {
                "count": len(pauses),
                "wall": _stats(pauses),
                "cpu": _stats(self._cpu[generation]),
                "collected": self._collected[generation],
            }
        out = {
            "window_s": round((now - self._since) / 1e9, 3),
            "generations": gens,
            "thresholds": list(gc.get_threshold()),
            "frozen": gc.get_freeze_count(),
        }
        if self.saveall:
            self._own = True
            try:
                gc.collect()
            finally:
                self._own = False
            out["garbage"] = garbage_report(gc.garbage)
            gc.garbage.clear()
        self._since = now
        self._pauses = [[], [], []]
        self._cpu = [[], [], []]
        self._collected = [0, 0, 0]
        return out

    def dump(self) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(self.summary()) + "\n")


def garbage_report(garbage: list[Any]) -> dict[str, Any]:
    """What cyclic garbage there was: objects by type and frames by function (the
    most common), and the buffers (bytes, str, ...) of at least `BIG_BYTES` it held."""
    types = Counter(type(o).__name__ for o in garbage)
    frames = Counter(_where(o) for o in garbage if isinstance(o, FrameType))
    big: dict[int, int] = {}
    for obj in garbage:
        for ref in gc.get_referents(obj):
            if not gc.is_tracked(ref) and id(ref) not in big:
                size = sys.getsizeof(ref)
                if size >= BIG_BYTES:
                    big[id(ref)] = size
    return {
        "objects": len(garbage),
        "types": dict(types.most_common(8)),
        "frames": dict(frames.most_common(12)),
        "big_buffers": len(big),
        "big_bytes": sum(big.values()),
    }


def _where(frame: FrameType) -> str:
    """`router/gateway/admission.py:parse` for the router's own code, the file's name
    and the function for a library's."""
    path = Path(frame.f_code.co_filename)
    if path.is_relative_to(PACKAGE):
        return f"router/{path.relative_to(PACKAGE)}:{frame.f_code.co_name}"
    return f"{path.name}:{frame.f_code.co_name}"


def trace_from_env(environ: Mapping[str, str] = os.environ) -> PauseTrace | None:
    """The pause trace, installed, when `FIRSTTOKEN_GC_TRACE` names a file."""
    where = environ.get(TRACE_ENV)
    if not where:
        return None
    trace = PauseTrace(Path(where), saveall=environ.get(SAVEALL_ENV, "") not in ("", "0"))
    trace.install()
    return trace


def _stats(pauses: list[int]) -> dict[str, float]:
    """Total, p50, p99 and max of pauses in ns, as ms."""
    ordered = sorted(pauses) or [0]
    n = len(ordered)
    return {
        "total_ms": round(sum(ordered) / 1e6, 3),
        "p50_ms": round(ordered[n // 2] / 1e6, 3),
        "p99_ms": round(ordered[min(n - 1, int(0.99 * n))] / 1e6, 3),
        "max_ms": round(ordered[-1] / 1e6, 3),
    }
