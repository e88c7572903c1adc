"""What the client configured for its session, so another target can be told the same.

Each `session.update` the client sends is merged into one configuration (objects
merged key by key, anything else replaced, as the server applies a partial
update). Replay is one `session.update` with the merged result. `model` is left
out of the replay: every target has its own, named in the URL it was opened with.

With a route's `migrate.transcribe`, what goes upstream also asks for input
transcription when the client did not (`transcribing`), and the `session.updated`
coming back is shown to the client without it (`as_client_sees`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from router.realtime.wire import dumps

#: bytes of output audio per millisecond, by format type (24 kHz PCM16, G.711 at 8 kHz)
_BYTES_PER_MS = {"audio/pcm": 48.0, "audio/pcmu": 8.0, "audio/pcma": 8.0}
REPLAY_SESSION_EVENT_ID = "ft_replay_session"


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        old = into.get(key)
        if isinstance(value, Mapping) and isinstance(old, dict):
            _merge(old, value)
        else:
            into[key] = copy.deepcopy(value)


class SessionConfig:
    """The merged `session` of every `session.update` the client sent."""

    __slots__ = ("_session", "auto_responses", "kind", "manual_turns", "updates")

    def __init__(self, initial: Mapping[str, Any] | None = None, kind: str = "realtime") -> None:
        self._session: dict[str, Any] = {}
        #: the session's type, replayed when no update named it (a server requires it)
        self.kind = kind
        self.updates = 0
        #: the client turned server VAD off (`audio.input.turn_detection: null`): it
        #: commits its input audio itself. Absent, a server's default (VAD) applies.
        self.manual_turns = False
        #: the server's VAD asks for a response at each commit (its `create_response`,
        #: true by default; false with `turn_detection: null`)
        self.auto_responses = True
        if initial:  # what an ephemeral key carries: as if the client had sent it first
            self.update(initial)

    @property
    def session(self) -> Mapping[str, Any]:
        return self._session

    def update(self, session: Mapping[str, Any]) -> None:
        _merge(self._session, session)
        self.updates += 1
        audio = self._session.get("audio")
        given = audio.get("input") if isinstance(audio, Mapping) else None
        if isinstance(given, Mapping) and "turn_detection" in given:
            detection = given["turn_detection"]
            self.manual_turns = detection is None
            self.auto_responses = (
                isinstance(detection, Mapping) and detection.get("create_response") is not False
            )

    def hears(self) -> bool:
        """The client asked for input transcripts (`audio.input.transcription` set)."""
        audio = self._session.get("audio")
        given = audio.get("input") if isinstance(audio, Mapping) else None
        return isinstance(given, Mapping) and given.get("transcription") is not None

    def needs_transcription(self, model: str | None) -> bool:
        """The router must ask for transcription itself: a model is named, this is a
        conversation (a transcription session always transcribes) and the client did not."""
        return model is not None and self.kind == "realtime" and not self.hears()

    def transcribing(self, session: Mapping[str, Any], model: str) -> dict[str, Any]:
        """`session` (an update, or the whole configuration) also asking `model` to
        transcribe the input (a copy: the client's configuration is left as it is)."""
        out = copy.deepcopy(dict(session))
        _merge(out, {"audio": {"input": {"transcription": {"model": model}}}})
        return out

    def as_client_sees(self, updated: str) -> str:
        """A `session.updated` without the transcription the router asked for (the
        client's own setting instead); unchanged if it cannot be read."""
        try:
            event = json.loads(updated)
        except (ValueError, RecursionError):
            return updated
        session = event.get("session") if isinstance(event, dict) else None
        audio = session.get("audio") if isinstance(session, dict) else None
        heard = audio.get("input") if isinstance(audio, dict) else None
        if not isinstance(heard, dict) or "transcription" not in heard:
            return updated
        heard["transcription"] = None
        return dumps(event)

    def output_bytes_per_ms(self) -> float:
        """Bytes of output audio per millisecond (PCM16 at 24 kHz unless configured)."""
        audio = self._session.get("audio")
        output = audio.get("output") if isinstance(audio, Mapping) else None
        fmt = output.get("format") if isinstance(output, Mapping) else None
        kind = fmt.get("type") if isinstance(fmt, Mapping) else None
        return _BYTES_PER_MS.get(str(kind), 48.0)

    def applied_to(self, created: str) -> str:
        """A `session.created` event as it would read had the upstream session begun
        with this configuration (unchanged without one, or if it cannot be read)."""
        if not self.updates:
            return created
        try:
            event = json.loads(created)
        except (ValueError, RecursionError):
            return created
        session = event.get("session") if isinstance(event, dict) else None
        if not isinstance(session, dict):
            return created
        _merge(session, {k: v for k, v in self._session.items() if k != "model"})
        return dumps(event)

    def replay_event(self, transcribe: str | None = None) -> str | None:
        """One `session.update` carrying the whole configuration, or None if none was set
        and no transcription must be asked for (`transcribe`: `needs_transcription`)."""
        inject = transcribe if self.needs_transcription(transcribe) else None
        if not self.updates and inject is None:
            return None
        session = {k: v for k, v in self._session.items() if k != "model"}
        if inject is not None:
            session = self.transcribing(session, inject)
        session.setdefault("type", self.kind)
        return dumps(
            {"type": "session.update", "event_id": REPLAY_SESSION_EVENT_ID, "session": session}
        )
