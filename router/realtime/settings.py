"""The YAML of realtime routes: a session's limits and how migration behaves.

    routes:
      - name: voice
        targets: [openai-rt, azure-rt]
        session: {max_duration_s: 7200, max_upstream_s: 3300, idle_s: 120}
        migrate: {regenerate: false, transcribe: gpt-4o-mini-transcribe, input_audio_kib: 320}

`max_upstream_s` keeps each upstream session under a provider's cap (OpenAI ends a
session after 60 minutes), so the router moves the conversation between two
responses instead of being cut mid-answer.

`transcribe` names a transcription model the router asks each upstream to run when
the client asked for no input transcription: the router's copy of the conversation
then has the caller's words, so a migration can replay the user's audio turns as
text. Its events are the router's own (the client, which did not ask, never sees
them); the provider bills the transcription as usual.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionSettings(_Model):
    #: a session longer than this is closed (1008, after an `error` event)
    max_duration_s: float | None = Field(None, gt=0.0)
    #: an upstream session older than this is replaced between two responses
    max_upstream_s: float | None = Field(None, gt=0.0)
    #: no client event for this long closes the session (1000, after an `error` event)
    idle_s: float | None = Field(600.0, gt=0.0)


class MigrateSettings(_Model):
    #: ask the new target again for a response that a migration cut (else it ends failed)
    regenerate: bool = False
    #: transcribe the caller's audio upstream with this model when the client did not ask
    #: for it, so user audio turns can be replayed as text (None: only what the client asks)
    transcribe: str | None = Field(None, min_length=1)
    #: the caller's audio appended since the upstream last committed or cleared its input
    #: buffer, kept up to this many KiB of `input_audio_buffer.append` frames (320: about
    #: 5 s of 24 kHz PCM16) and appended again to the new upstream after a migration, so
    #: a turn the user was speaking is heard whole; the last committed turn is kept as
    #: much, until its transcript, to be replayed as audio if its words are not known;
    #: 0 keeps none
    input_audio_kib: int = Field(320, ge=0, le=16_384)
