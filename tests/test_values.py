"""`@value` records: equal and hashed by their fields, and frozen to the type checker."""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import field
from pathlib import Path

from router.policy.base import Candidate
from router.values import value


@value
class Point:
    x: int
    tags: tuple[str, ...] = field(default=())


def test_a_value_is_equal_and_hashed_by_its_fields_and_pickles() -> None:
    assert Point(1) == Point(1, ())
    assert Point(1) != Point(2)
    assert len({Point(1), Point(1), Point(2, ("a",))}) == 2
    assert pickle.loads(pickle.dumps(Point(3, ("b",)))) == Point(3, ("b",))
    assert not hasattr(Point(1), "__dict__")  # slotted


def test_the_type_checker_refuses_an_assignment_to_a_field(tmp_path: Path) -> None:
    snippet = tmp_path / "assign.py"
    snippet.write_text(
        "from router.policy.base import Candidate\n"
        "def move(c: Candidate) -> None:\n"
        "    c.name = 'elsewhere'\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent", str(snippet)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 1, done.stdout
    assert 'Property "name" defined in "Candidate" is read-only' in done.stdout
    assert Candidate.__hash__ is not None
