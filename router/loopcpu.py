"""The process's own metrics: what every Prometheus client exports
(`register_process_collectors`), and the event loop thread's CPU as the kernel counts
it, time on a CPU and time spent runnable without one
(`/proc/self/task/TID/schedstat`, Linux).

`firsttoken_event_loop_lag_seconds` says the loop ran late; these two say why. A loop
that was late while its thread waited for a CPU was starved by the host (other
processes, a CPU quota, a noisy neighbour: on a 2-core box beside two CPU vLLM engines,
each in a session of its own under the kernel's autogroup, the router's thread waited
0.6-0.9 s at a time); one that was late while on a CPU was busy with its own work.
Read only when scraped; absent where the kernel does not keep the file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

TASKS = Path("/proc/self/task")


class LoopCpuCollector(Collector):
    """The two counters of one thread, the event loop's once `bind` ran on it."""

    def __init__(self, tasks: Path = TASKS) -> None:
        self._tasks = tasks
        self._path: Path | None = None

    def bind(self) -> None:
        """Count the calling thread (call it from the event loop's)."""
        self._path = self._tasks / str(threading.get_native_id()) / "schedstat"

    def describe(self) -> Iterator[Metric]:
        return iter(())  # bound only once the loop runs

    def collect(self) -> Iterator[Metric]:
        if self._path is None:
            return
        try:
            on_cpu_ns, waited_ns, _slices = (int(x) for x in self._path.read_text().split()[:3])
        except (OSError, ValueError):  # no schedstat here, or a shape we do not know
            return
        yield CounterMetricFamily(
            "firsttoken_event_loop_cpu_seconds",
            "Time the router's event loop thread spent on a CPU (the kernel's count)",
            value=on_cpu_ns / 1e9,
        )
        yield CounterMetricFamily(
            "firsttoken_event_loop_cpu_wait_seconds",
            "Time the router's event loop thread was runnable but waited for a CPU: the "
            "host starving the router, not the router's own work",
            value=waited_ns / 1e9,
        )


def register_process_collectors(registry: CollectorRegistry) -> LoopCpuCollector:
    """What every Prometheus client exports by default (a registry of our own has none
    of it): the process's CPU, memory and file descriptors, the garbage collector's
    runs, the interpreter; and the event loop thread's counters, returned to be bound
    once the loop runs."""
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    loop_cpu = LoopCpuCollector()
    registry.register(loop_cpu)
    return loop_cpu
