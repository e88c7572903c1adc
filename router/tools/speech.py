"""`firsttoken speech serve`: the local speech engines on one port.

    firsttoken speech serve --host 127.0.0.1 --port 8090

starts PocketSphinx at `/v1/audio/transcriptions` and eSpeak NG at `/v1/audio/speech`
(`router.speech`), prints the targets a policy names them by, and serves until Ctrl-C
or SIGTERM (both stop it within a few seconds, a decode in progress or not).
When something is missing it says what, with the command that installs it, and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TextIO

from router.errors import EngineError
from router.speech.check import missing


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    speech = sub.add_parser("speech", help="local speech engines (PocketSphinx, eSpeak NG)")
    commands = speech.add_subparsers(dest="speech_command", required=True)
    serve = commands.add_parser(
        "serve", help="serve /v1/audio/transcriptions and /v1/audio/speech until Ctrl-C"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    serve.add_argument(
        "--stt-workers",
        type=int,
        default=1,
        help="PocketSphinx processes (each decodes one utterance at a time; default 1)",
    )
    serve.add_argument(
        "--wpm",
        type=int,
        default=None,
        help="eSpeak NG's words a minute at speed 1.0 (default 130: clear to PocketSphinx)",
    )
    serve.add_argument("--no-stt", action="store_true", help="serve text-to-speech only")
    serve.add_argument("--no-tts", action="store_true", help="serve speech-to-text only")
    serve.set_defaults(func=cmd_speech_serve)


def cmd_speech_serve(args: argparse.Namespace) -> int:
    if args.no_stt and args.no_tts:
        print("nothing to serve: --no-stt and --no-tts together", file=sys.stderr)
        return 2
    problems = missing(stt=not args.no_stt, tts=not args.no_tts)
    if problems:
        print("cannot start the local speech engines; missing:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it ends
        return asyncio.run(
            serve(
                args.host,
                args.port,
                stt=not args.no_stt,
                tts=not args.no_tts,
                stt_workers=args.stt_workers,
                wpm=args.wpm,
                out=sys.stdout,
            )
        )
    return 0


#: the signals that stop `speech serve` (Ctrl-C, `kill`)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def serve(
    host: str,
    port: int,
    *,
    stt: bool,
    tts: bool,
    stt_workers: int,
    wpm: int | None,
    out: TextIO,
) -> int:
    from router.speech.espeak import DEFAULT_WPM, Espeak
    from router.speech.server import STT_MODEL, TTS_MODEL, SpeechServer
    from router.speech.sphinx import Sphinx

    server = SpeechServer(
        stt=Sphinx(workers=stt_workers) if stt else None,
        tts=Espeak(wpm=wpm or DEFAULT_WPM) if tts else None,
        host=host,
        port=port,
    )
    try:
        await server.start()
    except EngineError as exc:
        print(f"cannot start the local speech engines: {exc.message}", file=sys.stderr)
        return 1
    try:
        base = server.base_url
        print(f"local speech engines on {base}", file=out)
        lines = []
        if stt:
            lines.append(
                f"  - {{name: local-stt, kind: stt, base_url: {base}, model: {STT_MODEL}}}"
            )
        if tts:
            lines.append(
                f"  - {{name: local-tts, kind: tts, base_url: {base}, model: {TTS_MODEL}}}"
            )
        print("as policy targets:\n" + "\n".join(lines), file=out, flush=True)
        # Until Ctrl-C or SIGTERM (`kill`, Kubernetes): either way the server closes, and
        # a decode in progress is not waited for. SIGINT is handled here too, as uvicorn
        # (`firsttoken serve`) does: a process started in the background by a script
        # inherits SIGINT ignored, and `kill -INT` would otherwise leave it running.
        loop = asyncio.get_running_loop()
        stopped = loop.create_future()
        for stop in STOP_SIGNALS:
            loop.add_signal_handler(stop, _set, stopped)
        try:
            await stopped
        finally:
            for stop in STOP_SIGNALS:
                loop.remove_signal_handler(stop)
    finally:
        await server.stop()
    return 0


def _set(stopped: asyncio.Future[None]) -> None:
    if not stopped.done():
        stopped.set_result(None)
