"""The event loop thread's CPU counters (router/loopcpu.py), from a schedstat file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from router.loopcpu import LoopCpuCollector


def _registry(collector: LoopCpuCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_the_bound_threads_schedstat_becomes_two_counters(tmp_path: Path) -> None:
    task = tmp_path / str(threading.get_native_id())
    task.mkdir()
    # the kernel's three fields: on a CPU (ns), runnable waiting (ns), timeslices
    (task / "schedstat").write_text("2500000000 750000000 1234\n")
    collector = LoopCpuCollector(tmp_path)
    registry = _registry(collector)
    assert registry.get_sample_value("firsttoken_event_loop_cpu_seconds_total") is None
    collector.bind()
    assert registry.get_sample_value("firsttoken_event_loop_cpu_seconds_total") == 2.5
    assert registry.get_sample_value("firsttoken_event_loop_cpu_wait_seconds_total") == 0.75


def test_another_threads_binding_reads_that_thread(tmp_path: Path) -> None:
    (tmp_path / str(threading.get_native_id())).mkdir()
    (tmp_path / str(threading.get_native_id()) / "schedstat").write_text("1 0 1\n")
    collector = LoopCpuCollector(tmp_path)
    worker = threading.Thread(target=collector.bind)
    worker.start()
    worker.join()
    assert worker.native_id is not None
    (tmp_path / str(worker.native_id)).mkdir()
    (tmp_path / str(worker.native_id) / "schedstat").write_text("4000000000 1000000000 9\n")
    registry = _registry(collector)
    assert registry.get_sample_value("firsttoken_event_loop_cpu_seconds_total") == 4.0


@pytest.mark.parametrize("content", [None, "", "garbage here", "12"])
def test_a_missing_or_strange_file_exports_nothing(tmp_path: Path, content: str | None) -> None:
    task = tmp_path / str(threading.get_native_id())
    task.mkdir()
    if content is not None:
        (task / "schedstat").write_text(content)
    collector = LoopCpuCollector(tmp_path)
    collector.bind()
    registry = _registry(collector)
    assert registry.get_sample_value("firsttoken_event_loop_cpu_seconds_total") is None


@pytest.mark.skipif(
    not Path(f"/proc/self/task/{threading.get_native_id()}/schedstat").exists(),
    reason="the kernel keeps no schedstat here (Linux only)",
)
def test_the_real_file_counts_this_threads_work() -> None:
    collector = LoopCpuCollector()
    collector.bind()
    registry = _registry(collector)
    before = registry.get_sample_value("firsttoken_event_loop_cpu_seconds_total")
    assert before is not None
    sum(i * i for i in range(300_000))
    after = registry.get_sample_value("firsttoken_event_loop_cpu_seconds_total")
    assert after is not None and after > before
    wait = registry.get_sample_value("firsttoken_event_loop_cpu_wait_seconds_total")
    assert wait is not None and wait >= 0.0
