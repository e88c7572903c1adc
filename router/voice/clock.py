"""One clock per user turn of a cascade, from the end of speech to the first audio sent.

The session marks each moment as it happens (the first mark of a name wins, so a
fallback or a hedge counts from its first attempt):

    speech_end        the last voiced frame arrived (or the manual commit)
    committed         the VAD decided the turn is over, the utterance is committed
    stt_sent          the utterance went to the stt route
    stt_done          its transcript came back
    llm_sent          the chat turn went to the llm route
    llm_first_token   the LLM's first token (for the record: voices wait for a clause)
    llm_first_clause  the first speakable clause is complete
    tts_sent          that clause went to the tts route
    tts_first_audio   the TTS's first audio bytes came back
    first_audio_sent  the first `response.output_audio.delta` was written to the client

and the stages are the spans between them:

    vad_hangover     speech_end -> committed (the silence window, mostly; under semantic
                     VAD the pause, the reading of the words and the wait they asked for)
    stt              stt_sent -> stt_done (~0 under semantic VAD: the reading is reused)
    llm_ttft         llm_sent -> llm_first_clause (for a text-only answer, to the first
                     token): the LLM's own time to something the TTS can speak
    tts_first_audio  tts_sent -> tts_first_audio
    overhead         the rest of the voice-to-voice latency: FirstToken's own share
                     (routing, encoding, resampling, queueing between the stages)

`voice_to_voice` is speech_end -> first_audio_sent; the stages add up to it. A stage
whose marks are missing (no STT for a text item, no TTS for a text answer) is 0.
"""

from __future__ import annotations

from typing import Literal, Protocol, get_args

from router.clock import Clock

Stage = Literal["vad_hangover", "stt", "llm_ttft", "tts_first_audio", "overhead"]
STAGES: tuple[Stage, ...] = get_args(Stage)
Mark = Literal[
    "speech_end",
    "committed",
    "stt_sent",
    "stt_done",
    "llm_sent",
    "llm_first_token",
    "llm_first_clause",
    "tts_sent",
    "tts_first_audio",
    "first_audio_sent",
    "first_text_sent",
]

_SPANS: dict[Stage, tuple[Mark, Mark]] = {
    "vad_hangover": ("speech_end", "committed"),
    "stt": ("stt_sent", "stt_done"),
    "llm_ttft": ("llm_sent", "llm_first_clause"),
    "tts_first_audio": ("tts_sent", "tts_first_audio"),
}


class VoiceClock:
    __slots__ = ("_clock", "marks")

    def __init__(self, clock: Clock, speech_end_at: float | None = None) -> None:
        self._clock = clock
        self.marks: dict[Mark, float] = {}
        self.marks["speech_end"] = clock() if speech_end_at is None else speech_end_at

    def now(self) -> float:
        return self._clock()

    def mark(self, name: Mark, at: float | None = None) -> None:
        """Note that `name` happened now (or `at`); later marks of the same name are ignored."""
        if name not in self.marks:
            self.marks[name] = self._clock() if at is None else at

    def span(self, start: Mark, end: Mark) -> float:
        a, b = self.marks.get(start), self.marks.get(end)
        return 0.0 if a is None or b is None else max(0.0, b - a)

    def voice_to_voice(self) -> float | None:
        """End of the user's speech to the first audio frame sent, in seconds."""
        if "first_audio_sent" not in self.marks:
            return None
        return self.span("speech_end", "first_audio_sent")

    def stages(self) -> dict[Stage, float] | None:
        """Seconds per stage, adding up to the voice-to-voice latency (or, for a text-only
        answer, to the first text sent); None before either."""
        end: Mark = "first_audio_sent" if "first_audio_sent" in self.marks else "first_text_sent"
        if end not in self.marks:
            return None
        total = self.span("speech_end", end)
        out: dict[Stage, float] = {}
        for stage, (a, b) in _SPANS.items():
            spoken = stage != "llm_ttft" or "llm_first_clause" in self.marks
            out[stage] = self.span(a, b if spoken else "llm_first_token")
        out["overhead"] = max(0.0, total - sum(out.values()))
        return out


#: what became of the words read at a semantic VAD pause: the turn's transcript, talked
#: over (the caller went on, or the buffer was committed or cleared by hand), or failed
Reading = Literal["ended", "talked_over", "failed"]


class VoiceObserver(Protocol):
    """What a cascade reports (`router.voice_metrics.VoiceMetrics` implements it)."""

    def observe(self, target: str, clock: VoiceClock) -> None:
        """A voice turn answered: its clock, with every stage marked."""
        ...

    def barge_in(self, target: str, seconds: float) -> None:
        """A response cut by the caller: from the decision to every upstream closed."""
        ...

    def reading(self, target: str, outcome: Reading) -> None:
        """Semantic VAD read the words at a pause; this became of them."""
        ...
