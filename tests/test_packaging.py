"""A wheel carries what its commands need.

The wheel is built from a copy of the sources (no build artefacts in the
checkout), installed into a fresh venv, and `firsttoken demo` runs from an empty
folder: the demo's fleet and policy must come from the package itself. The
build fetches its backend (setuptools) as pip's build isolation does; the
dependencies come from this test's own environment through a `.pth` file, so the
install stays offline and fast, while `router` itself comes only from the wheel. So
that a wheel's own install has them too, every package `router` imports must be one
the wheel declares (a dependency, or an optional extra's).
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
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


def _name(requirement: str) -> str:
    found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert found is not None, requirement
    return re.sub(r"[-_.]+", "-", found.group(0)).lower()


def test_every_package_router_imports_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = {k: v for k, v in project["optional-dependencies"].items() if k != "dev"}
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for reqs in extras.values() for r in reqs if "firsttoken" not in r}
    where = importlib.metadata.packages_distributions()
    undeclared = []
    for path in sorted((ROOT / "router").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - {"router", *sys.stdlib_module_names}:
                dists = {_name(d) for d in where.get(top, [top])}
                if not dists & declared:
                    undeclared.append(f"{path.relative_to(ROOT)}: {top} ({', '.join(dists)})")
    assert not undeclared, "imported, not in pyproject's dependencies or extras: " + str(undeclared)


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
