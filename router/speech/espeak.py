"""Text-to-speech with eSpeak NG: one `espeak-ng` subprocess per request, streamed.

    async with espeak.speak(text, voice="alloy") as speech:   # speech.rate == 22050
        async for pcm in speech:                               # 16-bit mono PCM chunks
            ...

Each request runs `espeak-ng --stdin -b 1 -v VOICE -s WPM --stdout`. The text goes in on
stdin (never on the command line, so no text is ever read as an option); WAV comes out
on stdout as it is synthesised, a few kilobytes at a time (measured: 35 s of speech in
60 ms). The header is read with the standard library's `wave` and dropped; the rest is
16-bit mono PCM at eSpeak NG's 22050 Hz.

Leaving the `async with` before the end (the client went away, a barge-in) kills the
process and reaps it; `killed` counts those. At most `max_processes` run at once and at
most `max_queued` requests wait for one; one more is refused with `EngineBusy`.

Voices: an eSpeak NG language (`en-us`, `en-gb`, `fr` ...), optionally with a variant
(`en-us+f3`), or one of OpenAI's voice names, each mapped to an English variant
(`VOICES`); any other name (another engine's voice, when this one stands in for it)
speaks with `DEFAULT_VOICE`. Speed is OpenAI's `speed` (0.25-4) times `wpm` words a minute, within
eSpeak NG's 80-450.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import subprocess
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from router.errors import BadRequest, EngineBusy, EngineError, EngineMissing

#: eSpeak NG's output rate
ESPEAK_RATE = 22_050
#: slower than eSpeak NG's 175 by default: PocketSphinx (and people) follow it better
DEFAULT_WPM = 130
MIN_WPM, MAX_WPM = 80, 450
#: OpenAI's voice names, so unchanged clients get a voice
VOICES = {
    "alloy": "en-us",
    "marin": "en-us",
    "ash": "en-us+m1",
    "ballad": "en-us+m2",
    "cedar": "en-us+m3",
    "echo": "en-us+m4",
    "verse": "en-us+m5",
    "onyx": "en-us+m7",
    "shimmer": "en-us+f1",
    "coral": "en-us+f2",
    "nova": "en-us+f3",
    "sage": "en-us+f4",
    "fable": "en-gb",
}
#: what a voice unknown here is spoken with
DEFAULT_VOICE = "en-us"
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_VOICE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*(?:\+[A-Za-z0-9_-]{1,32})?$")
_READ = 8192
#: bytes of stderr kept for an error message
_STDERR = 2048


@dataclass(frozen=True, slots=True)
class Voices:
    """What this machine's eSpeak NG speaks: languages and variants (`espeak-ng --voices`)."""

    languages: frozenset[str]
    variants: frozenset[str] = field(default_factory=frozenset)

    def resolve(self, voice: str) -> str:
        """The `-v` argument for a voice name. A name this eSpeak NG lacks (another engine's,
        such as Kokoro's `af_heart`, when this engine stands in for it) gets the default
        voice; a name that cannot be a voice at all is a `BadRequest`."""
        if not _NAME.match(voice):
            raise BadRequest(
                f"a voice is a name of letters, digits and - _ + . such as "
                f"{', '.join(sorted(VOICES)[:3])} or en-us+f3, not {voice[:40]!r}"
            )
        name = VOICES.get(voice.lower(), voice)
        language, _, variant = name.partition("+")
        if (
            not _VOICE.match(name)
            or language not in self.languages
            or (variant and variant not in self.variants)
        ):
            return DEFAULT_VOICE
        return name


class SpokenAudio:
    """The PCM of one request as it is synthesised; iterate it inside `Espeak.speak()`."""

    rate = ESPEAK_RATE

    def __init__(self, process: asyncio.subprocess.Process, voice: str) -> None:
        self._process = process
        #: the eSpeak NG voice speaking
        self.voice = voice
        self.pid = process.pid
        self.bytes_out = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stdout = self._process.stdout
        assert stdout is not None
        header: bytes | None = b""  # until the PCM starts
        while chunk := await stdout.read(_READ):
            if header is not None:
                header += chunk
                offset = _data_offset(header)
                if offset is None:
                    continue
                chunk, header = header[offset:], None
            if chunk:
                self.bytes_out += len(chunk)
                yield chunk
        await self._check_exit()

    async def _check_exit(self) -> None:
        process = self._process
        stderr = process.stderr
        assert stderr is not None
        message = (await stderr.read(_STDERR)).decode(errors="replace").strip()
        code = await process.wait()
        if code != 0:
            raise EngineError(f"espeak-ng exited with status {code}: {message or 'no message'}")


def _data_offset(header: bytes) -> int | None:
    """Where the PCM starts in eSpeak NG's WAV output (None: not all of the header yet).
    The format is checked with `wave`; eSpeak NG writes 16-bit mono, nothing else."""
    at = header.find(b"data", 12)
    if at < 0 or len(header) < at + 8:
        return None
    try:
        with wave.open(io.BytesIO(header), "rb") as reader:
            shape = (reader.getsampwidth(), reader.getnchannels(), reader.getframerate())
    except (wave.Error, EOFError) as exc:
        raise EngineError(f"espeak-ng wrote something that is not a WAV file ({exc})") from exc
    if shape != (2, 1, ESPEAK_RATE):
        raise EngineError(f"espeak-ng wrote WAV of (width, channels, rate) {shape}")
    return at + 8


class Espeak:
    def __init__(
        self,
        *,
        binary: str = "espeak-ng",
        wpm: int = DEFAULT_WPM,
        max_processes: int = 4,
        max_queued: int = 16,
        voices: Voices | None = None,
    ) -> None:
        self.binary = binary
        self.wpm = wpm
        self.max_queued = max_queued
        self.voices = voices or Voices(frozenset({"en-us", "en-gb"}))
        self._slots = asyncio.Semaphore(max_processes)
        self._waiting = 0
        #: processes started, and killed before they finished
        self.started = 0
        self.killed = 0
        self.running = 0
        #: reaps of killed processes still reading their pipes to the end
        self.reaping: set[asyncio.Future[tuple[bytes, bytes]]] = set()

    async def start(self) -> None:
        """Check the program runs, and learn its voices (raises `EngineMissing`)."""
        languages = await self._voices("--voices")
        variants = await self._voices("--voices=variant")
        self.voices = Voices(
            frozenset(languages[0::2]),
            frozenset(f.removeprefix("!v/") for f in variants[1::2]),
        )

    async def _voices(self, flag: str) -> list[str]:
        """(language, file) pairs of a voice listing, flattened."""
        try:
            done = await asyncio.create_subprocess_exec(
                self.binary, flag, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            out, _ = await done.communicate()
        except OSError as exc:
            raise EngineMissing(
                f"eSpeak NG (text-to-speech) cannot run ({exc.strerror}): "
                "apt-get install espeak-ng (macOS: brew install espeak-ng)"
            ) from exc
        pairs: list[str] = []
        for line in out.decode(errors="replace").splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 5:
                pairs += [cols[1], cols[4]]
        return pairs

    def speed_wpm(self, speed: float) -> int:
        return max(MIN_WPM, min(MAX_WPM, round(self.wpm * speed)))

    @contextlib.asynccontextmanager
    async def speak(
        self, text: str, *, voice: str = "alloy", speed: float = 1.0
    ) -> AsyncIterator[SpokenAudio]:
        name = self.voices.resolve(voice)
        if self._slots.locked() and self._waiting >= self.max_queued:
            raise EngineBusy(f"eSpeak NG is busy: {self.max_queued} requests waiting")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            process = await self._spawn(name, self.speed_wpm(speed))
            self.started += 1
            self.running += 1
            try:
                assert process.stdin is not None
                process.stdin.write(text.encode())
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    await process.stdin.drain()  # one that died says why on stderr
                process.stdin.close()
                yield SpokenAudio(process, name)
            finally:
                try:
                    if process.returncode is None:
                        await self._kill(process)
                finally:
                    self.running -= 1
        finally:
            self._slots.release()

    async def _spawn(self, voice: str, wpm: int) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *(self.binary, "--stdin", "-b", "1", "-v", voice, "-s", str(wpm), "--stdout"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise EngineMissing(
                f"eSpeak NG (text-to-speech) cannot run ({exc.strerror}): "
                "apt-get install espeak-ng (macOS: brew install espeak-ng)"
            ) from exc

    async def _kill(self, process: asyncio.subprocess.Process) -> None:
        """The request ended before the audio did: stop synthesising at once. Its pipes
        are read to their end, as asyncio reaps a process only once they are closed (a
        paused stdout, full of audio nobody read, would keep `wait()` waiting)."""
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        self.killed += 1
        # Shielded: aiohttp may cancel a handler again while this `finally` runs, and a
        # reap cut short leaves a paused stdout that never sees its end (an unclosed pipe).
        reap = asyncio.ensure_future(process.communicate())
        self.reaping.add(reap)
        reap.add_done_callback(self.reaping.discard)
        await asyncio.shield(reap)
