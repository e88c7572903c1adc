"""The build's one optional step: `FIRSTTOKEN_MYPYC=1` compiles the hot path with mypyc.

Without it (the default, and what `pip install firsttoken` gives) the package is pure
Python. With it, the modules `router/compiled_modules.txt` names are compiled to C
extensions beside their sources, and the hash of each source is recorded in
`router/compiled_sources.json`, so a run never uses an extension older than its source
(`router/build.py` refuses it). Compiling needs mypy and the router's dependencies
importable (`make compile`: the dev venv, `--no-build-isolation` for a wheel).
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def compiled_paths() -> list[str]:
    """The paths `router/compiled_modules.txt` names (`!path` excludes one), sorted."""
    include: set[str] = set()
    exclude: list[str] = []
    for raw in (ROOT / "router" / "compiled_modules.txt").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            exclude.append(line[1:])
        else:
            include.update(glob.glob(line, root_dir=ROOT))
    return sorted(
        p
        for p in include
        if not p.endswith("__init__.py") and not any(fnmatch.fnmatch(p, e) for e in exclude)
    )


def ext_modules() -> list[object]:
    if os.environ.get("FIRSTTOKEN_MYPYC", "") != "1":
        return []
    from mypyc.build import mypycify

    paths = compiled_paths()
    hashes = {p: hashlib.sha256((ROOT / p).read_bytes()).hexdigest() for p in paths}
    (ROOT / "router" / "compiled_sources.json").write_text(json.dumps(hashes, indent=1) + "\n")
    return list(mypycify(paths, opt_level="3", group_name="router._native"))


if __name__ == "__main__":  # how setuptools runs it; tests import compiled_paths()
    setup(ext_modules=ext_modules())
