from __future__ import annotations

import io
import itertools
import math
import wave
from array import array

import pytest

from router.voice.codec import AudioFormat, pcm_ms, wav
from router.voice.resample import Resampler
from tests.voice.audio import speech_24k, tone


def _samples(pcm: bytes) -> array[int]:
    out = array("h")
    out.frombytes(pcm)
    return out


@pytest.mark.parametrize("kind", ["audio/pcmu", "audio/pcma"])
def test_g711_round_trip_keeps_the_speech(kind: str) -> None:
    fmt = AudioFormat(kind)  # type: ignore[arg-type]
    down = Resampler(24_000, 8_000)
    pcm8 = down.push(speech_24k()) + down.flush()
    coded = fmt.encode(pcm8)
    assert len(coded) == len(pcm8) // 2  # a byte a sample
    back = _samples(fmt.decode(coded))
    original = _samples(pcm8)
    # G.711 is 8-bit logarithmic: the error stays a few percent of each sample
    worst = max(abs(a - b) - 0.07 * abs(a) for a, b in zip(original, back, strict=True))
    assert worst <= 16
    assert fmt.rate == 8_000 and fmt.duration_ms(8_000) == 1000.0


def test_pcm_is_24k_and_drops_a_half_sample() -> None:
    fmt = AudioFormat()
    assert fmt.rate == 24_000
    assert fmt.decode(b"\x01\x02\x03") == b"\x01\x02"
    assert fmt.duration_ms(48_000) == 1000.0
    assert pcm_ms(32_000, 16_000) == 1000.0


def test_wav_is_a_file_speech_to_text_apis_read() -> None:
    pcm = tone(100)
    with wave.open(io.BytesIO(wav(pcm, 24_000)), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (
            1,
            2,
            24_000,
        )
        assert reader.readframes(reader.getnframes()) == pcm


def _zero_crossings(pcm: bytes) -> int:
    s = _samples(pcm)
    return sum(1 for a, b in itertools.pairwise(s) if (a < 0) != (b < 0))


def test_resampling_keeps_duration_and_pitch() -> None:
    source = tone(1000, rate=22_050, freq=440.0)
    r = Resampler(22_050, 24_000)
    out = r.push(source) + r.flush()
    assert abs(len(out) // 2 - 24_000) <= 24  # one second stays one second (+-1 ms)
    # 440 Hz: 880 zero crossings a second, at either rate
    assert abs(_zero_crossings(out) - 880) <= 4


def test_chunks_of_odd_sizes_resample_like_one_piece() -> None:
    source = tone(500, rate=16_000, freq=300.0)
    whole = Resampler(16_000, 24_000)
    expected = whole.push(source) + whole.flush()
    pieces = Resampler(16_000, 24_000)
    got = b""
    for start in range(0, len(source), 333):  # odd: samples split across chunks
        got += pieces.push(source[start : start + 333])
    got += pieces.flush()
    # libsoxr rounds a chunk's edges a little differently; a misplaced byte would not
    # be off by one but by thousands
    assert len(got) == len(expected)
    assert max(abs(a - b) for a, b in zip(_samples(got), _samples(expected), strict=True)) <= 2


def test_same_rate_passes_through_whole_samples() -> None:
    r = Resampler(24_000, 24_000)
    assert r.push(b"\x01\x02\x03") == b"\x01\x02"
    assert r.push(b"\x04") == b"\x03\x04"
    assert r.flush() == b""
    assert math.isclose(len(tone(20)) / 2, 480)
