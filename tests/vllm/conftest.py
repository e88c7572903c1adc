"""Session fixture: two real vLLM engines (CPU) serving a tiny model built on the spot.

Only tests marked ``vllm`` use it; the default run deselects them. Run with::

    .venv-vllm/bin/pytest -m vllm tests/vllm -p no:cacheprovider

``FIRSTTOKEN_VLLM_PYTHON`` names the engines' python. ``FIRSTTOKEN_VLLM_SHAPE`` picks the model
(tests/vllm/tinymodel.py): ``slow`` (default, ~45 M parameters, decode steps of tens of ms, so
the API server keeps up and streams token by token) or ``tiny`` (~0.85 M parameters, 2 ms
steps: on 2 busy cores its API server falls behind and delivers whole streams in one burst,
which breaks the timing tests; see benchmarks/RESULTS.md, "Real vLLM").
The terminal summary says how long the engines took to become healthy and to stop.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.vllm.engines import (
    VllmEngines,
    engine_python,
    running_engines,
    vllm_unavailable_reason,
)

_TIMINGS = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def vllm_engines(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[VllmEngines]:
    """Engines ``small`` (--max-num-seqs 2) and ``large`` (8), started together, healthy."""
    python = engine_python()
    reason = vllm_unavailable_reason(python)
    if reason is not None:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("vllm")
    timings = pytestconfig.stash.setdefault(_TIMINGS, [])
    began = time.monotonic()
    shape = os.environ.get("FIRSTTOKEN_VLLM_SHAPE", "slow")
    with running_engines(root, python, shape=shape) as engines:
        timings.append(
            f"{shape} model built and both engines healthy in {time.monotonic() - began:.1f} s"
        )
        timings.extend(
            f"{e.spec.name} (--max-num-seqs {e.spec.max_num_seqs}) on :{e.port}:"
            f" healthy {e.healthy_after_s or 0.0:.1f} s after launch, log {e.log_path}"
            for e in engines.all
        )
        yield engines
        stopping = time.monotonic()
    timings.append(f"both engines stopped in {time.monotonic() - stopping:.1f} s")
    # Keep the engine logs; drop the model (175 MB for ``slow``) and the engines' temp files.
    shutil.rmtree(engines.model_dir, ignore_errors=True)
    for engine in engines.all:
        shutil.rmtree(engine.workdir / "tmp", ignore_errors=True)


@pytest.fixture(scope="session")
def vllm_report(pytestconfig: pytest.Config) -> list[str]:
    """Lines a test wants shown in the "vllm engines" section of the terminal summary."""
    return pytestconfig.stash.setdefault(_TIMINGS, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_TIMINGS, [])
    if lines:
        terminalreporter.section("vllm engines")
        for line in lines:
            terminalreporter.write_line(line)
