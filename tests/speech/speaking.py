"""Real speech for the tests: sentences eSpeak NG says and PocketSphinx follows, and
measures of what came back (words shared, share of voiced frames)."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from router.speech.check import missing

#: sentences PocketSphinx transcribes (nearly) word for word from eSpeak NG's en-us at 130
#: words a minute; on a dozen everyday sentences it averages about half the words
SENTENCES = (
    "i would like to order a pizza",
    "the meeting starts at ten o'clock",
    "i am looking for a good restaurant",
    "there are three people in the room",
)

#: the engines' own tests run only where both engines can
needs_engines = pytest.mark.skipif(
    bool(missing()), reason="local speech engines missing: " + "; ".join(missing())
)


def say(text: str, wpm: int = 130) -> bytes:
    """A WAV file (22050 Hz, 16-bit mono) of eSpeak NG saying `text`."""
    done = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", str(wpm), "--stdin", "--stdout"],
        input=text.encode(),
        capture_output=True,
        check=True,
    )
    return done.stdout


def pcm24(wav: bytes) -> bytes:
    """eSpeak NG's WAV as raw PCM16 at 24 kHz, the Realtime API's input."""
    import soxr

    at = wav.index(b"data") + 8
    rate = int.from_bytes(wav[24:28], "little")
    samples = np.frombuffer(wav[at : len(wav) - (len(wav) - at) % 2], dtype="<i2")
    out: bytes = soxr.resample(samples, rate, 24_000).astype("<i2").tobytes()
    return out


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def shared_words(said: str, heard: str) -> float:
    """The share of the words said that were heard (each word heard counts once)."""
    expected, got = words(said), words(heard)
    hits = 0
    for word in expected:
        if word in got:
            got.remove(word)
            hits += 1
    return hits / len(expected) if expected else 1.0


def voiced_share(pcm: bytes, rate: int, frame_ms: int = 20, rms: float = 300.0) -> float:
    """The share of `frame_ms` frames of 16-bit PCM louder than `rms`."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)
    size = rate * frame_ms // 1000
    frames = samples[: len(samples) // size * size].reshape(-1, size)
    if not len(frames):
        return 0.0
    loud = np.sqrt((frames**2).mean(axis=1)) > rms
    return float(loud.mean())
