"""What the local speech engines need, and the command that installs each missing piece.

Safe to import without the `voice-local` extra: it only looks (`importlib.util.find_spec`,
`shutil.which`), so the CLI, the demo and the tests can say what is missing before
importing an engine.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable

PIP_FIX = "pip install 'firsttoken[voice-local]'"
APT_FIX = "apt-get install espeak-ng (macOS: brew install espeak-ng)"
#: the Python packages of the `voice-local` extra: the recogniser, and what both engines
#: convert sample rates with
STT_PACKAGES = ("pocketsphinx",)
SHARED_PACKAGES = ("soxr", "numpy")


def missing(
    *,
    stt: bool = True,
    tts: bool = True,
    binary: str = "espeak-ng",
    which: Callable[[str], str | None] = shutil.which,
    has_module: Callable[[str], bool] = lambda name: importlib.util.find_spec(name) is not None,
) -> list[str]:
    """One line per missing piece, naming the engine and its fix; empty when all is there."""
    problems = []
    packages = (STT_PACKAGES if stt else ()) + (SHARED_PACKAGES if stt or tts else ())
    absent = [name for name in packages if not has_module(name)]
    if absent:
        problems.append(f"Python packages {', '.join(absent)} (speech engines): {PIP_FIX}")
    if tts and which(binary) is None:
        problems.append(f"eSpeak NG, the `{binary}` program (text-to-speech): {APT_FIX}")
    return problems
