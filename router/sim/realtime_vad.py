"""Server VAD for the simulator: speech is PCM energy over a threshold.

Each appended chunk of 16-bit mono PCM is one decision: its RMS, as a fraction
of full scale, against `threshold * 0.2` (OpenAI's `threshold` is a probability
in 0-1; 0.5 maps to an RMS of 0.1 of full scale, about -20 dBFS). Speech starts
at the first loud chunk (its start moved back by `prefix_padding_ms`) and stops
once `silence_duration_ms` of quiet chunks follow it. G.711 audio is counted
(8 kHz, a byte a sample) but never heard as speech: commit it by hand.
"""

from __future__ import annotations

import math
import operator
from array import array
from dataclasses import dataclass
from typing import Literal

Transition = Literal["speech_started", "speech_stopped"]


@dataclass(frozen=True, slots=True)
class VadConfig:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


def pcm16_rms(data: bytes) -> float:
    """RMS of little-endian 16-bit PCM as a fraction of full scale."""
    if len(data) < 2:
        return 0.0
    samples = array("h")
    samples.frombytes(data[: len(data) - len(data) % 2])
    return math.sqrt(sum(map(operator.mul, samples, samples)) / len(samples)) / 32768.0


class EnergyVad:
    """Tracks one input buffer; `feed` returns the transitions a chunk caused."""

    __slots__ = ("_silence_ms", "config", "position_ms", "speaking", "start_ms")

    def __init__(self, config: VadConfig) -> None:
        self.config = config
        self.position_ms = 0.0
        self.speaking = False
        self.start_ms = 0.0
        self._silence_ms = 0.0

    def reset(self) -> None:
        self.speaking = False
        self._silence_ms = 0.0

    def feed(self, rms: float, duration_ms: float) -> Transition | None:
        loud = rms >= self.config.threshold * 0.2
        start = self.position_ms
        self.position_ms += duration_ms
        if loud:
            self._silence_ms = 0.0
            if not self.speaking:
                self.speaking = True
                self.start_ms = max(0.0, start - self.config.prefix_padding_ms)
                return "speech_started"
            return None
        if self.speaking:
            self._silence_ms += duration_ms
            if self._silence_ms >= self.config.silence_duration_ms:
                self.speaking = False
                self._silence_ms = 0.0
                return "speech_stopped"
        return None
