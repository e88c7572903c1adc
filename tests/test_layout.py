"""The rooms of `router/` stay apart, and stay readable.

What a room may import (a turn never imports Prometheus; the metrics import
nothing from the turn), how long a module may grow without saying why, that
`tests/` mirrors the packages of `router/`, and that nothing cites a note a
reader of this repository cannot open.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUTER = ROOT / "router"
#: past this a module says at its top why it is one module
MAX_LINES = 400


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_a_turn_imports_neither_prometheus_nor_the_metrics() -> None:
    code = (
        "import sys, router.turn.relay, router.turn.race\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', "
        "'router.metrics', 'router.gateway', 'router.runtime'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"


def test_the_metrics_import_nothing_from_the_turn() -> None:
    assert not [m for m in _imports(ROUTER / "metrics.py") if m.startswith("router.turn")]


def test_a_module_over_400_lines_says_why_at_its_top() -> None:
    silent = []
    for path in sorted(ROUTER.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_LINES:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if f"{MAX_LINES} lines" not in docstring:
                silent.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not silent, f"split these, or say at their top why not: {silent}"


def test_tests_mirror_the_packages_of_router() -> None:
    packages = {p.parent.name for p in ROUTER.glob("*/__init__.py")}
    mirrored = {p.parent.name for p in (ROOT / "tests").glob("*/__init__.py")}
    assert packages <= mirrored, sorted(packages - mirrored)


def test_no_file_cites_a_note_that_is_not_in_the_repository() -> None:
    cited = re.compile(r"[\w./-]*notes/[\w.-]+\.md")
    missing = []
    folders = ("router", "tests", "benchmarks", "policies", "docs", "deploy")
    files = [ROOT / "README.md", ROOT / "pyproject.toml"]
    files += [p for d in folders for p in (ROOT / d).rglob("*") if p.is_file()]
    for path in files:
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ""}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for name in cited.findall(text):
            if not (ROOT / name).exists():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, missing


#: a path into the repository, as prose and YAML comments cite one
_REPO_PATH = re.compile(
    r"(?<![\w/.-])((?:router|tests|benchmarks|policies|docs|deploy|notes)/[\w./-]*\w)"
)
_LINK = re.compile(r"\]\(([^)#\s]+)")


def test_docs_policies_and_scenarios_cite_only_files_that_exist() -> None:
    """README, docs, policies and scenarios name no file the repository lacks (the
    issue found policies citing a note kept outside it); RESULTS.md, a dated log whose
    old entries name files of their day, is held to its links only."""
    documents = [ROOT / "README.md", ROOT / "deploy" / "README.md"]
    documents += sorted((ROOT / "docs").glob("*.md"))
    for folder in ("policies", "benchmarks/scenarios", "benchmarks/policies", "router/tools/data"):
        documents += sorted((ROOT / folder).glob("*.yaml"))
    missing = []
    for doc in documents:
        for cited in _REPO_PATH.findall(doc.read_text(encoding="utf-8")):
            if not (ROOT / cited).exists() and not (doc.parent / cited).exists():
                missing.append(f"{doc.relative_to(ROOT)}: {cited}")
    for doc in [*documents, ROOT / "benchmarks" / "RESULTS.md"]:
        for link in _LINK.findall(doc.read_text(encoding="utf-8")):
            if not link.startswith(("http://", "https://")) and not (doc.parent / link).exists():
                missing.append(f"{doc.relative_to(ROOT)}: link {link}")
    assert not missing, missing
