"""What runs inside a PocketSphinx worker process (see `router.speech.sphinx`).

Imported only by the pool's worker processes. Its one module-level variable is that
process's decoder: loading the English model takes about 0.4 s, so each worker loads
it once, in the pool's initializer, and keeps it for every utterance it decodes. The
server's own process never holds a decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr
from pocketsphinx import Decoder

#: PocketSphinx's acoustic model: 16 kHz audio, 100 frames a second
SAMPLE_RATE = 16_000
FRAMES_PER_S = 100.0

_decoder: Any = None


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Recognition:
    text: str
    words: tuple[Word, ...]
    #: seconds of audio decoded
    duration_s: float


def load(options: dict[str, Any]) -> None:
    """The pool's initializer: the decoder (the wheel's en-us model unless `options` say)."""
    global _decoder  # noqa: PLW0603 (the worker process's decoder, see the module's docstring)
    _decoder = Decoder(loglevel="FATAL", **options)


def decode(pcm16: bytes, rate: int) -> Recognition:
    """One utterance, 16-bit mono PCM at `rate`, resampled to 16 kHz (libsoxr's high
    quality filter) and decoded whole."""
    decoder = _decoder
    if decoder is None:
        raise RuntimeError("sphinx_worker.decode ran outside a worker whose load() ran")
    pcm16k = pcm16
    if rate != SAMPLE_RATE and pcm16:
        samples = np.frombuffer(pcm16, dtype="<i2")
        pcm16k = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype("<i2").tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm16k, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    words = tuple(
        Word(_spelling(s.word), s.start_frame / FRAMES_PER_S, (s.end_frame + 1) / FRAMES_PER_S)
        for s in decoder.seg()
        if _is_word(s.word)
    )
    text = hypothesis.hypstr if hypothesis is not None else ""
    return Recognition(text, words, len(pcm16k) / 2 / SAMPLE_RATE)


def _is_word(token: str) -> bool:
    """Segments also hold silence and fillers: <s>, </s>, <sil>, [NOISE], ++UH++."""
    return not token.startswith(("<", "[", "++"))


def _spelling(token: str) -> str:
    """A pronunciation variant, `read(2)`, is the word `read`."""
    return token.split("(", 1)[0]
