"""What OpenAI's speech formats cost the router (router/voice/encode.py): CPU per second
of audio, and how much audio goes in before the first encoded byte comes out.

    .venv/bin/python benchmarks/speech_formats.py [--seconds 20] [--chunk-ms 40] [--rounds 5]

The audio is eSpeak NG's speech from the voice tests (24 kHz, 16-bit mono), repeated to
`--seconds`, pushed in chunks of `--chunk-ms` as a TTS target streams it. CPU is the
process's own time (`time.process_time`), the best of `--rounds` (encoding is
single-threaded here: FFmpeg's encoders run in the calling thread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.voice.encode import CODECS, SpeechEncoder
from tests.voice.audio import speech_24k

RATE = 24_000


def measure(fmt: str, pcm: bytes, chunk: int) -> tuple[float, float, int]:
    """(CPU seconds, ms of audio in before the first byte out, bytes out)."""
    started = time.process_time()
    encoder = SpeechEncoder(fmt, RATE)
    first_ms = -1.0
    size = 0
    for i in range(0, len(pcm), chunk):
        out = encoder.push(pcm[i : i + chunk])
        if out and first_ms < 0:
            first_ms = (i + chunk) / 2 / RATE * 1000
        size += len(out)
    size += len(encoder.flush())
    return time.process_time() - started, first_ms, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--chunk-ms", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    speech = speech_24k()
    pcm = (speech * (int(args.seconds * RATE * 2 / len(speech)) + 1))[
        : int(args.seconds * RATE) * 2
    ]
    chunk = RATE * args.chunk_ms // 1000 * 2
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.2f}; {args.seconds:.0f} s of speech, "
        f"{args.chunk_ms} ms chunks"
    )
    print(
        "| format | CPU us per second of audio | CPU us per chunk "
        "| audio in before the first byte out | kbit/s |"
    )
    print("|---|---|---|---|---|")
    rows = {}
    for fmt in CODECS:
        best = min((measure(fmt, pcm, chunk) for _ in range(args.rounds)), key=lambda r: r[0])
        cpu, first_ms, size = best
        per_s = cpu / args.seconds * 1e6
        chunks = len(pcm) / chunk
        kbps = size * 8 / args.seconds / 1000
        rows[fmt] = {"cpu_us_per_audio_s": per_s, "first_byte_audio_ms": first_ms, "kbit_s": kbps}
        print(
            f"| {fmt} | {per_s:.0f} | {cpu / chunks * 1e6:.0f} | {first_ms:.0f} ms | {kbps:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
