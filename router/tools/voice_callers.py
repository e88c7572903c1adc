"""Synthetic callers for `firsttoken demo --voice`: people talking to a realtime route.

Each caller holds one Realtime session (the official `openai` SDK's client) and streams
20 ms frames of 24 kHz PCM16 in real time, all the time, as a microphone does: a pause
of silence, an utterance (a sentence eSpeak NG spoke, or a tone when it is not
installed), then silence while the answer comes. With probability `barge_in` it speaks
again while the answer plays (300-700 ms into its audio): the route cancels the answer,
the caller tells it how much it heard (`conversation.item.truncate`), and the new
utterance is a turn of its own.

Per answer it records voice-to-voice latency: the router's own account when a cascade
served it (`response.firsttoken.latency_ms`, with its stages), else as the caller
heard it (the last voiced frame sent to the first audio delta received). With
`save_audio`, both sides go on one timeline per session (24 kHz), for two WAV files
a person can play side by side.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI

FRAME_MS = 20
RATE = 24_000
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
SILENCE = bytes(FRAME_BYTES)
#: what the callers ask of every session: server VAD that waits out a speaker's pauses
SESSION = {
    "type": "realtime",
    "audio": {
        "input": {
            # the caller's words (a turn with none gets no answer: counted apart)
            "transcription": {"model": "gpt-4o-transcribe"},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.3,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 600,
            },
        }
    },
}


@dataclass
class Answer:
    """One response as a caller lived it."""

    status: str = "in_progress"
    #: end of the caller's speech to the first audio: the router's clock, else the caller's
    v2v_ms: float | None = None
    measured_by: str = "caller"
    stages_ms: dict[str, float] = field(default_factory=dict)
    barged_into: bool = False


@dataclass
class Caller:
    number: int
    target: str = "connecting"
    answers: list[Answer] = field(default_factory=list)
    barge_ins: int = 0
    errors: int = 0
    last_error: str = ""
    #: what the caller said and what it heard, on one timeline (when saving audio)
    said: bytearray = field(default_factory=bytearray)
    heard: bytearray = field(default_factory=bytearray)

    @property
    def cancels(self) -> int:
        return sum(a.status == "cancelled" for a in self.answers)

    def done(self) -> list[Answer]:
        return [a for a in self.answers if a.status != "in_progress"]


class _Session:
    """The event side of one caller: what the current answer is doing."""

    def __init__(self, caller: Caller, save: bool) -> None:
        self.caller = caller
        self.save = save
        self.started = time.monotonic()
        self.speech_end: float | None = None
        self.first_audio: float | None = None
        self.answer: Answer | None = None
        self.answer_item: str | None = None
        #: milliseconds of the current answer's audio received (it plays that long)
        self.audio_ms = 0.0
        #: the route heard no words in the last utterance, so no answer is coming
        self.no_words = False

    def _heard(self, pcm: bytes) -> None:
        at = int((time.monotonic() - self.started) * RATE) * 2
        heard = self.caller.heard
        if len(heard) < at:
            heard.extend(bytes(at - len(heard)))
        heard.extend(pcm)

    def on_event(self, event: Any) -> None:
        kind = event.type
        if kind == "response.created":
            self.answer = Answer()
            self.caller.answers.append(self.answer)
            self.first_audio = None
            self.audio_ms = 0.0
        elif kind == "response.output_audio.delta":
            if self.first_audio is None:
                self.first_audio = time.monotonic()
                self.answer_item = event.item_id
                # (an answer that starts before the caller stopped has no voice-to-voice)
                if self.answer is not None and self.speech_end is not None:
                    self.answer.v2v_ms = (self.first_audio - self.speech_end) * 1000
            pcm = base64.b64decode(event.delta)
            self.audio_ms += len(pcm) / 2 / RATE * 1000
            if self.save:
                self._heard(pcm)
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.no_words = not str(event.transcript).strip()
        elif kind == "response.done":
            self._finish(event.response)
        elif kind == "error":
            self.caller.errors += 1
            self.caller.last_error = str(getattr(event.error, "message", event.error))

    def _finish(self, response: Any) -> None:
        answer = self.answer or Answer()
        answer.status = str(response.status)
        extra = (response.model_extra or {}).get("firsttoken") or {}
        latency = extra.get("latency_ms") or {}
        if latency.get("voice_to_voice") is not None:
            answer.v2v_ms = float(latency["voice_to_voice"])
            answer.measured_by = "router"
            answer.stages_ms = {k: float(v) for k, v in latency.items() if k != "voice_to_voice"}


async def call(
    caller: Caller,
    *,
    base_url: str,
    route: str,
    utterances: list[bytes],
    rng: random.Random,
    until: float,
    barge_in: float,
    labels: dict[str, str],
    save_audio: bool = False,
) -> None:
    """One caller's session until the monotonic time `until`; failures are counted."""
    client = AsyncOpenAI(base_url=base_url, api_key="demo", max_retries=0)
    session = _Session(caller, save_audio)
    try:
        async with client.realtime.connect(model=route) as conn:
            created = await conn.recv()
            model = str(getattr(getattr(created, "session", None), "model", "") or "")
            caller.target = labels.get(model, model or "?")
            await conn.session.update(session=SESSION)  # type: ignore[arg-type]

            async def listen() -> None:
                async for event in conn:
                    session.on_event(event)

            reader = asyncio.create_task(listen())
            try:
                await _talk(
                    conn, session, utterances=utterances, rng=rng, until=until, barge_in=barge_in
                )
            finally:
                reader.cancel()
    except Exception as exc:  # a demo caller reports what broke and stops; the run goes on
        caller.errors += 1
        caller.last_error = f"{type(exc).__name__}: {exc}"[:200]
        caller.target = caller.target if caller.target != "connecting" else "failed"


async def _talk(
    conn: Any,
    session: _Session,
    *,
    utterances: list[bytes],
    rng: random.Random,
    until: float,
    barge_in: float,
) -> None:
    clock = _Pacer(conn, session)
    answers = session.caller.answers
    speak_next = True
    while time.monotonic() < until:
        if speak_next:
            await clock.send(SILENCE * rng.randint(20, 60))  # 0.4-1.2 s pause
            if time.monotonic() >= until:  # no new utterance once the time is up
                break
        before = len(answers)  # answers from here on are to this utterance
        session.speech_end = None
        session.no_words = False
        await clock.send(rng.choice(utterances))
        session.speech_end = time.monotonic()
        interrupt = rng.random() < barge_in
        cut_at = rng.uniform(0.3, 0.7)  # seconds into the answer's audio
        speak_next = True
        # silence while the answer comes and plays: until it has been heard to its end,
        # or the caller cuts in (past `until` too: a slow machine's last answer counts)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            current = answers[-1] if len(answers) > before else None
            now = time.monotonic()
            heard_for = now - session.first_audio if session.first_audio is not None else 0.0
            playing = heard_for < session.audio_ms / 1000
            if current is not None and current.status != "in_progress" and not playing:
                break
            if current is None and session.no_words:  # (a cascade answers no silence)
                break
            if interrupt and current is not None and playing and heard_for > cut_at:
                await _barge_in(conn, session)
                speak_next = False  # the interruption is the next utterance
                break
            await clock.send(SILENCE)


async def _barge_in(conn: Any, session: _Session) -> None:
    session.caller.barge_ins += 1
    if session.answer is not None:
        session.answer.barged_into = True
    if session.first_audio is not None and session.answer_item:
        heard_ms = int((time.monotonic() - session.first_audio) * 1000)
        await conn.conversation.item.truncate(
            item_id=session.answer_item, content_index=0, audio_end_ms=heard_ms
        )


class _Pacer:
    """Sends 20 ms frames at real time (absolute deadlines, so no drift)."""

    def __init__(self, conn: Any, session: _Session) -> None:
        self._conn = conn
        self._session = session
        self._next = time.monotonic()

    async def send(self, pcm: bytes) -> None:
        for start in range(0, len(pcm), FRAME_BYTES):
            frame = pcm[start : start + FRAME_BYTES]
            await self._conn.input_audio_buffer.append(audio=base64.b64encode(frame).decode())
            if self._session.save:
                said = self._session.caller.said
                at = int((time.monotonic() - self._session.started) * RATE) * 2
                if len(said) < at:
                    said.extend(bytes(at - len(said)))
                said.extend(frame)
            self._next += FRAME_MS / 1000
            delay = self._next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self._next = time.monotonic()
