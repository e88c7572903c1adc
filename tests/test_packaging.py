"""A wheel carries what its commands need.

The wheel is built from a copy of the sources (no build artefacts in the
checkout), installed into a fresh venv, and `firsttoken demo` runs from an empty
folder: the demo's fleet and policy must come from the package itself. The
build fetches its backend (setuptools) as pip's build isolation does; the
dependencies come from this test's own environment through a `.pth` file, so the
install stays offline and fast, while `router` itself comes only from the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, cwd=cwd, timeout=90
    )
    assert done.returncode == 0, f"{argv}: {done.stderr[-3000:]}"
    return done.stdout


def test_the_packaged_demo_policy_is_the_documented_one() -> None:
    packaged = ROOT / "router" / "tools" / "data" / "hybrid.yaml"
    assert packaged.read_bytes() == (ROOT / "policies" / "hybrid.yaml").read_bytes(), (
        "copy policies/hybrid.yaml to router/tools/data/hybrid.yaml"
    )


def test_the_wheel_runs_the_demo_from_an_empty_folder(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "router", src / "router", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src)
    (wheel,) = dist.glob("firsttoken-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    deps = Path(purelib.strip()) / "firsttoken-test-deps.pth"
    deps.write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    pip = (sys.executable, "-m", "pip", "--python", python)
    run(*pip, "install", "-q", "--no-deps", "--no-index", wheel)

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(venv / "bin" / "firsttoken"), "demo", "--no-live", "--duration", "5"],
        capture_output=True,
        text=True,
        check=False,
        cwd=empty,
        env=env,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = done.stdout.split("demo summary:", 1)[1]
    assert f"through {venv}" in summary  # the policy shipped in the wheel
    offered = re.search(r"(\d+) turns offered, (\d+) ok", summary)
    assert offered is not None and int(offered.group(2)) > 0, summary
