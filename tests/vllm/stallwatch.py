"""Watching the in-process router's event loop for stalls, and catching what held it.

The router of the vLLM tests runs on a loop in a thread of the pytest process
(`tests.e2e.harness.LoopThread`). A miss of a timing test can be the engines' or the
router's: `StallWatch` pings that loop from its own thread every `every_s` and, when a
ping is not answered within `stall_s`, takes the loop thread's Python stack (what the
loop is running instead of its callbacks), the stack of every other thread of the
process that ran Python meanwhile, and how much CPU the loop thread and the whole process
got during the stall. It also times the process's garbage collections (a `gc.callbacks`
hook): a full one scans the whole pytest heap, holding the GIL. `lines()` says, per
stall, when it began, how long it lasted and what held it, for the test's report.

Reading a stall: the loop thread in `select`/`poll` with little CPU of its own while the
process got plenty means another thread held the GIL (its stack is shown); the process
getting little CPU too means the machine did not run it.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stall:
    began_s: float
    lasted_s: float
    stack: list[str] = field(default_factory=list)
    #: other threads' innermost frames when the stall was seen
    others: list[str] = field(default_factory=list)
    loop_cpu_s: float = 0.0
    #: how long the loop thread waited, runnable, for a CPU (the kernel's schedstat)
    loop_runqueue_s: float = 0.0
    process_cpu_s: float = 0.0
    #: the garbage collections that overlapped it: (generation, pause in s)
    collections: list[tuple[int, float]] = field(default_factory=list)


class StallWatch:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        thread_id: int,
        native_id: int,
        *,
        every_s: float = 0.05,
        stall_s: float = 0.25,
    ) -> None:
        self._loop = loop
        self._thread_id = thread_id
        self._every_s = every_s
        self._stall_s = stall_s
        self._stop = threading.Event()
        self._began = time.monotonic()
        self.stalls: list[Stall] = []
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)
        self._loop_clock = time.pthread_getcpuclockid(thread_id)
        self._schedstat = Path(f"/proc/self/task/{native_id}/schedstat")
        #: the collections (full, or of 1 ms or more): (generation, began, ended)
        self.collections: list[tuple[int, float, float]] = []
        self._gc_began = 0.0

    def __enter__(self) -> StallWatch:
        gc.callbacks.append(self._on_gc)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_began = time.monotonic()
            return
        ended = time.monotonic()
        # the full ones, and any other long enough to matter (a busy process runs
        # hundreds of young collections a second: not kept)
        if info["generation"] == 2 or ended - self._gc_began >= 0.001:
            self.collections.append((info["generation"], self._gc_began, ended))

    def _runqueue_s(self) -> float:
        """The loop thread's time spent runnable but not running, so far (0 where
        the kernel does not say)."""
        try:
            return int(self._schedstat.read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def _others(self) -> list[str]:
        mine = {self._thread_id, threading.get_ident()}
        out = []
        for ident, frame in sys._current_frames().items():
            if ident in mine:
                continue
            inner = traceback.extract_stack(frame)[-3:]
            out.append(
                f"thread {ident}: "
                + " <- ".join(
                    f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})"
                    for f in reversed(inner)
                )
            )
        return out

    def _stack(self) -> list[str]:
        frame = sys._current_frames().get(self._thread_id)
        if frame is None:
            return ["(the loop thread is gone)"]
        return [line.rstrip() for line in traceback.format_stack(frame)[-12:]]

    def _watch(self) -> None:
        while not self._stop.wait(self._every_s):
            answered = threading.Event()
            sent = time.monotonic()
            try:
                self._loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # the loop is closed
                return
            if answered.wait(self._stall_s):
                continue
            loop_cpu = time.clock_gettime(self._loop_clock)
            runqueue = self._runqueue_s()
            process_cpu = time.process_time()
            stall = Stall(sent - self._began, 0.0, self._stack(), self._others())
            while not answered.wait(0.05) and not self._stop.is_set():
                pass
            ended = time.monotonic()
            stall.lasted_s = ended - sent
            stall.loop_cpu_s = time.clock_gettime(self._loop_clock) - loop_cpu
            stall.loop_runqueue_s = self._runqueue_s() - runqueue
            stall.process_cpu_s = time.process_time() - process_cpu
            stall.collections = [
                (generation, end - start)
                for generation, start, end in list(self.collections)
                if end >= sent and start <= ended
            ]
            self.stalls.append(stall)

    def lines(self, at_least_s: float = 0.0) -> list[str]:
        """A line per stall of at least `at_least_s`, the longest three with stacks."""
        shown = [s for s in self.stalls if s.lasted_s >= at_least_s]
        longest = sorted(shown, key=lambda s: s.lasted_s, reverse=True)[:3]
        full = [end - start for generation, start, end in self.collections if generation == 2]
        out = [
            f"router loop stalls >= {self._stall_s * 1000:.0f} ms: {len(self.stalls)},"
            f" worst {max((s.lasted_s for s in self.stalls), default=0.0) * 1000:.0f} ms;"
            f" full collections {len(full)}, longest {max(full, default=0.0) * 1000:.0f} ms"
        ]
        for stall in shown:
            out.append(
                f"  at +{stall.began_s:.1f} s for {stall.lasted_s * 1000:.0f} ms: loop thread"
                f" CPU {stall.loop_cpu_s * 1000:.0f} ms, runnable without a CPU"
                f" {stall.loop_runqueue_s * 1000:.0f} ms, process CPU"
                f" {stall.process_cpu_s * 1000:.0f} ms, collections (generation, ms)"
                f" {[(g, round(p * 1000)) for g, p in stall.collections]}"
            )
            if stall in longest:
                out.extend(f"      {line}" for line in "\n".join(stall.stack).splitlines()[-4:])
                out.extend(f"    {line}" for line in stall.others)
        return out
