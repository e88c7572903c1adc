"""guidellm, the vLLM project's load tool, through the router (`pytest -m guidellm`).

Runs `benchmarks/guidellm.sh` for a few seconds when guidellm is installed in its
own venv (`.venv-guidellm`, or $GUIDELLM_VENV; the script creates it on first use,
about 6 GB with torch): guidellm probes `/health`, builds synthetic prompts with a
tokenizer made locally, streams chat turns through `firsttoken serve` to a
vLLM-like engine, and every request it sends is answered.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("GUIDELLM_VENV", ROOT / ".venv-guidellm"))


@pytest.mark.guidellm
@pytest.mark.timeout(600)
def test_guidellm_runs_through_the_router_and_every_request_succeeds(tmp_path: Path) -> None:
    if not (VENV / "bin" / "guidellm").exists():
        pytest.skip(f"guidellm is not installed in {VENV} (benchmarks/guidellm.sh creates it)")
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "guidellm.sh"), "--seconds", "4", "--rate", "4",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=540, check=False,
        env={**os.environ, "GUIDELLM_VENV": str(VENV)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    row = re.search(r"^\| firsttoken \| (\d+) / (\d+) \|", done.stdout, re.MULTILINE)
    assert row is not None, done.stdout[-3000:]
    assert int(row.group(1)) > 0 and row.group(2) == "0"
    metrics = json.loads((tmp_path / "firsttoken.json").read_text())["benchmarks"][0]["metrics"]
    assert metrics["request_totals"]["errored"] == 0
    assert metrics["time_to_first_token_ms"]["successful"]["median"] > 0
    assert metrics["output_token_count"]["successful"]["mean"] > 0
