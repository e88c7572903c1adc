"""The spoken answer: clauses to TTS while the LLM streams, audio in order, barge-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import pytest

from router.sim.behaviour import Behaviour
from router.sim.tts import TtsParams, TtsSim
from router.upstream.audio import TtsUpstream
from router.voice.clock import VoiceClock
from router.voice.speak import AudioDelta, PieceSpoken, SpeechEvent, SpokenAnswer, TextDelta
from router.voice.truncate import heard_text
from tests.sim.conftest import wait_for

pytestmark = pytest.mark.anyio


@dataclass
class FakeSource:
    """A TTS answer: `chunks` chunks of 10 ms at 24 kHz, every sample equal to `value`."""

    value: int
    chunks: int = 3
    delay_s: float = 0.0
    sample_rate: int = 24_000
    closed: bool = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            await anyio.sleep(self.delay_s)
            yield self.value.to_bytes(2, "little") * 240

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Log:
    lines: list[str] = field(default_factory=list)
    events: list[SpeechEvent] = field(default_factory=list)
    sources: list[FakeSource] = field(default_factory=list)

    async def emit(self, event: SpeechEvent) -> None:
        self.events.append(event)
        if isinstance(event, PieceSpoken):
            self.lines.append(f"played {event.piece.text.strip()!r}")

    def audio_values(self) -> list[int]:
        out: list[int] = []
        for e in self.events:
            if isinstance(e, AudioDelta):
                value = int.from_bytes(e.pcm16[:2], "little")
                if not out or out[-1] != value:
                    out.append(value)
        return out


async def _llm(log: Log, deltas: list[str], gap_s: float = 0.005) -> AsyncIterator[str]:
    for delta in deltas:
        await anyio.sleep(gap_s)
        log.lines.append(f"llm {delta!r}")
        yield delta
    log.lines.append("llm done")


ANSWER = ["Sure, I can book ", "that for you. ", "It is for two ", "people. See you!"]


async def test_the_first_clause_is_spoken_while_the_llm_still_streams() -> None:
    log = Log()
    delays = {"Sure, I can book that for you.": 0.05}

    async def synthesize(text: str) -> FakeSource:
        log.lines.append(f"tts {text!r}")
        source = FakeSource(value=len(log.sources) + 1, delay_s=delays.get(text, 0.0))
        log.sources.append(source)
        return source

    answer = SpokenAnswer(synthesize, log.emit)
    await answer.run(_llm(log, ANSWER))
    first_tts = log.lines.index("tts 'Sure, I can book that for you.'")
    assert first_tts < log.lines.index("llm done")
    assert first_tts < log.lines.index("llm 'people. See you!'")
    # the slow first piece is still played first: audio strictly in order
    assert log.audio_values() == [1, 2, 3]
    assert [e.text for e in log.events if isinstance(e, TextDelta)] == ANSWER
    assert answer.text == "".join(ANSWER)
    assert [p.text.strip() for p in answer.spoken] == [
        "Sure, I can book that for you.",
        "It is for two people.",
        "See you!",
    ]
    assert all(p.audio_ms == 30.0 for p in answer.spoken)
    assert all(s.closed for s in log.sources)


async def test_prefetch_bounds_the_pieces_synthesised_ahead() -> None:
    log = Log()

    async def synthesize(text: str) -> FakeSource:
        log.lines.append(f"tts {text!r}")
        source = FakeSource(value=1, delay_s=0.01)
        log.sources.append(source)
        return source

    await SpokenAnswer(synthesize, log.emit, prefetch=1).run(_llm(log, ANSWER, gap_s=0.0))
    tts = [line for line in log.lines if line.startswith(("tts", "played"))]
    assert tts == [
        "tts 'Sure, I can book that for you.'",
        "played 'Sure, I can book that for you.'",
        "tts 'It is for two people.'",
        "played 'It is for two people.'",
        "tts 'See you!'",
        "played 'See you!'",
    ]


async def test_the_clock_marks_the_stages() -> None:
    now = [0.0]
    clock = VoiceClock(lambda: now[0])

    async def synthesize(text: str) -> FakeSource:
        now[0] += 1.0
        return FakeSource(value=1)

    log = Log()
    await SpokenAnswer(synthesize, log.emit, clock=clock).run(_llm(log, ANSWER))
    assert list(clock.marks) == [
        "speech_end",
        "llm_first_token",
        "llm_first_clause",
        "tts_sent",
        "tts_first_audio",
    ]
    assert clock.span("tts_sent", "tts_first_audio") == 1.0


async def test_barge_in_cancels_the_llm_and_every_tts_request_at_once() -> None:
    async with TtsSim(
        TtsParams(sample_rate=22_050), behaviour=Behaviour(ttft_s=0.005, itl_s=0.05)
    ) as sim:
        tts = TtsUpstream(name="tts", base_url=sim.base_url, model="m", sample_rate=22_050)
        log = Log()
        llm_closed = anyio.Event()

        async def endless_llm() -> AsyncIterator[str]:
            try:
                for delta in ANSWER:
                    yield delta
                await anyio.sleep_forever()  # the LLM keeps generating
            finally:
                llm_closed.set()

        first_audio = anyio.Event()

        async def emit(event: SpeechEvent) -> None:
            await log.emit(event)
            if isinstance(event, AudioDelta):
                first_audio.set()

        answer = SpokenAnswer(lambda text: tts.speak(text, voice="v"), emit)
        async with anyio.create_task_group() as tg:
            tg.start_soon(answer.run, endless_llm())
            await first_audio.wait()
            await anyio.sleep(0.02)
            tg.cancel_scope.cancel()  # the caller started speaking
        assert llm_closed.is_set()
        await wait_for(lambda: all(c.cancelled_at or c.finished_at for c in sim.calls))
        await tts.aclose()
        assert len(sim.calls) == 2  # the piece playing and the one prefetched
        assert all(c.cancelled_at is not None for c in sim.calls)
        # the piece playing was cut short: kept as such, for truncation
        (cut,) = answer.spoken
        assert cut.text == "Sure, I can book that for you." and not cut.complete
        assert 0 < cut.audio_ms < len(cut.text) * 60
        heard = heard_text(answer.spoken, cut.audio_ms)
        assert cut.text.startswith(heard)
        assert len(heard) <= cut.audio_ms / 65 + 1  # at most what that much audio says


async def test_audio_at_another_rate_comes_out_at_24k() -> None:
    async with TtsSim(
        TtsParams(sample_rate=22_050), behaviour=Behaviour(ttft_s=0.001, itl_s=0.0)
    ) as sim:
        tts = TtsUpstream(name="tts", base_url=sim.base_url, model="m", sample_rate=22_050)
        log = Log()
        answer = SpokenAnswer(lambda text: tts.speak(text, voice="v"), log.emit)
        await answer.run(_llm(log, ANSWER, gap_s=0.0))
        await tts.aclose()
    audio = sum(len(e.pcm16) for e in log.events if isinstance(e, AudioDelta))
    # 60 ms a character, at 24 kHz once resampled (each piece within 1 ms)
    spoken = [p.text.strip() for p in answer.spoken]
    expected = sum(len(t) for t in spoken) * 60 * 24 * 2
    assert abs(audio - expected) <= len(spoken) * 48
    for piece in answer.spoken:
        assert piece.audio_ms == pytest.approx(len(piece.text.strip()) * 60, abs=1.0)
