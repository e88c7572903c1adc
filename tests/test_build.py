"""The compiled build's bookkeeping: which modules setup.py compiles, and the refusal of an
extension that is older than the source beside it (router/build.py)."""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from router import build
from router.errors import StaleBuild

ROOT = Path(__file__).resolve().parent.parent
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("firsttoken_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package(tmp_path: Path, sources: dict[str, str]) -> Path:
    package = tmp_path / "router"
    for rel, text in sources.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def _compile(package: Path, *rels: str) -> None:
    """What setup.py leaves behind: an extension beside each source, their hashes."""
    hashes = {}
    for rel in rels:
        source = package.parent / rel
        source.with_name(source.stem + SUFFIX).write_bytes(b"\x7fELF")
        hashes[rel] = hashlib.sha256(source.read_bytes()).hexdigest()
    (package / "_native__mypyc").with_suffix(SUFFIX).write_bytes(b"\x7fELF")
    (package / build.SOURCES).write_text(json.dumps(hashes))


def test_setup_compiles_the_listed_hot_path_and_nothing_it_excludes() -> None:
    paths = _setup_module().compiled_paths()
    assert "router/turn/sse.py" in paths and "router/policy/base.py" in paths
    assert "router/turn/race.py" not in paths  # coroutines: see the next test
    assert "router/signals/sketch.py" in paths and "router/jsontext.py" in paths
    assert "router/policy/specs.py" not in paths  # pydantic models: mypyc cannot
    assert not [p for p in paths if p.endswith("__init__.py")]
    assert all((ROOT / p).is_file() for p in paths)


def test_no_compiled_module_has_a_coroutine() -> None:
    # mypyc keeps an exception raised across an await in a finally/except in
    # sys.exc_info() after the coroutine ends (mypyc#1114, #1177): in a router, one
    # turn's error raised again in another's. Only synchronous modules are compiled.
    for path in _setup_module().compiled_paths():
        tree = ast.parse((ROOT / path).read_text())
        coroutines = [n.name for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef)]
        assert not coroutines, f"{path} has coroutines {coroutines}: mypyc must not compile it"


def test_a_source_tree_is_no_compiled_build(tmp_path: Path) -> None:
    package = _package(tmp_path, {"router/turn/race.py": "x = 1\n"})
    assert build.check(package) == build.Build(compiled=(), stale=())


def test_a_fresh_build_names_its_compiled_modules(tmp_path: Path) -> None:
    package = _package(tmp_path, {"router/turn/race.py": "x = 1\n", "router/series.py": "y = 2\n"})
    _compile(package, "router/turn/race.py", "router/series.py")
    assert build.check(package) == build.Build(
        compiled=("router.series", "router.turn.race"), stale=()
    )


def test_a_source_edited_after_the_build_is_refused_by_name(tmp_path: Path) -> None:
    package = _package(tmp_path, {"router/turn/race.py": "x = 1\n", "router/series.py": "y = 2\n"})
    _compile(package, "router/turn/race.py", "router/series.py")
    (package / "turn" / "race.py").write_text("x = 2\n")
    assert build.inspect(package).stale == ("router/turn/race.py",)
    with pytest.raises(StaleBuild, match=r"router/turn/race\.py.*make compile"):
        build.check(package)


def test_an_extension_without_the_record_of_its_build_is_refused(tmp_path: Path) -> None:
    package = _package(tmp_path, {"router/series.py": "y = 2\n"})
    _compile(package, "router/series.py")
    (package / build.SOURCES).unlink()
    with pytest.raises(StaleBuild, match=r"1 compiled module"):
        build.check(package)


def test_this_checkout_is_either_source_or_a_fresh_build() -> None:
    built = build.check()  # conftest refused a stale build before any test ran
    listed = {p.removesuffix(".py").replace("/", ".") for p in _setup_module().compiled_paths()}
    assert set(built.compiled) <= listed


def test_the_compiled_build_compiles_and_passes_the_hot_paths_tests(tmp_path: Path) -> None:
    # What `make compile` builds, in a copy of the tree (this one stays as it is), and the
    # unit tests of the compiled rooms run against it. ~1 min of C compilation: the one
    # check in the default suite that the compiled build still builds and behaves.
    skip = shutil.ignore_patterns("__pycache__", "*.so", build.SOURCES, ".hypothesis")
    for name in ("router", "tests"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=skip)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    env = {**os.environ, "FIRSTTOKEN_MYPYC": "1", "PYTHONPATH": str(tmp_path)}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *argv],
            cwd=tmp_path,
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    built = run("setup.py", "-q", "build_ext", "--inplace")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    compiled = build.check(tmp_path / "router").compiled
    assert len(compiled) == len(_setup_module().compiled_paths())
    rooms = ["tests/turn", "tests/policy", "tests/signals", "tests/test_series.py"]
    ran = run("-m", "pytest", "-p", "no:cacheprovider", *rooms)
    assert ran.returncode == 0, ran.stdout[-5000:]
    assert f"router: {len(compiled)} modules compiled (mypyc)" in ran.stdout
    # and the stale-build guard holds in the real thing: an edited source is refused
    series = tmp_path / "router" / "series.py"
    series.write_text(series.read_text() + "\n# edited\n")
    refused = run("-m", "router.tools.cli", "check", "router/tools/data/hybrid.yaml")
    assert refused.returncode == 1 and "router/series.py" in refused.stderr
