"""Which of the router's modules run compiled (mypyc), and whether any is stale.

A `FIRSTTOKEN_MYPYC=1` build (`make compile`, setup.py) puts a C extension beside each
module `compiled_modules.txt` names and records the hash of every source it compiled in
`compiled_sources.json`. Python imports the extension before the source, so a source
edited after the build would silently not run: `check()` refuses that, naming the files,
at the start of every `firsttoken` command and of the test suite.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from router.errors import StaleBuild

PACKAGE = Path(__file__).resolve().parent
SOURCES = "compiled_sources.json"


@dataclass(frozen=True, slots=True)
class Build:
    #: modules running from a compiled extension (dotted names)
    compiled: tuple[str, ...]
    #: sources (relative to the package's parent) whose extension is not from them
    stale: tuple[str, ...]


def _extensions(package: Path) -> dict[str, Path]:
    """Each compiled module's source path (as `router/x/y.py`) -> its extension file."""
    suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
    found: dict[str, Path] = {}
    for ext in package.rglob("*"):
        suffix = next((s for s in suffixes if ext.name.endswith(s)), None)
        if suffix is None:
            continue
        stem = ext.name[: -len(suffix)]
        if stem.endswith("__mypyc"):  # the group's shared runtime, not a module
            continue
        source = ext.with_name(stem + ".py")
        found[source.relative_to(package.parent).as_posix()] = ext
    return found


def is_compiled(module: str) -> bool:
    """Whether `module` (dotted) runs from a compiled extension."""
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    return origin is not None and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def inspect(package: Path = PACKAGE) -> Build:
    """The compiled modules under `package` and the stale ones among them."""
    extensions = _extensions(package)
    recorded: dict[str, str] = {}
    record = package / SOURCES
    if record.exists():
        recorded = json.loads(record.read_text())
    stale = []
    for source in sorted(extensions):
        path = package.parent / source
        if not path.exists():  # an installed build that ships extensions only
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if recorded.get(source) != digest:
            stale.append(source)
    compiled = tuple(s.removesuffix(".py").replace("/", ".") for s in sorted(extensions))
    return Build(compiled=compiled, stale=tuple(stale))


def check(package: Path = PACKAGE) -> Build:
    """The build, or `StaleBuild` when an extension is older than its source."""
    build = inspect(package)
    if build.stale:
        shown = ", ".join(build.stale[:5]) + (" ..." if len(build.stale) > 5 else "")
        raise StaleBuild(
            f"{len(build.stale)} compiled module(s) no longer match their source "
            f"({shown}): run `make compile` again, or `make clean-compiled` to run "
            "from source"
        )
    return build
