"""The caller's audio an upstream holds uncommitted, kept to append again after a move.

`input_audio_buffer.append` frames are relayed as they come, and the upstream holds
their audio in its input buffer until it commits it (the client's commit, or server
VAD at the end of speech) or clears it. A migration opens an upstream session whose
buffer is empty: without these frames the turn the user was speaking is lost (under
`turn_detection: null` the client's commit then fails with
`input_audio_buffer_commit_empty`). So the relay keeps the append frames sent since
the upstream last said `input_audio_buffer.committed` or `input_audio_buffer.cleared`,
the oldest dropped first beyond a budget of bytes (`migrate.input_audio_kib`), and a
migration appends them to the new upstream after the conversation. Audio still in
flight when the upstream commits goes with that commit: a move in those few
milliseconds loses it, as before.

While no user turn is open (server VAD heard no speech start; with `turn_detection:
null` a turn opens at the first append) only the last `IDLE_BYTES` are kept: the
silence a server VAD holds between utterances is no turn to carry, and a replay of
seconds of it made every session's move slower (migration p50 58 -> 120 ms for 16
sessions at once in `benchmarks/realtime.py`, whose callers append silence).

The last committed turn is kept too, whole (a turn the budget cut is not), under the
item id the upstream committed it as, until its transcript arrives or the next
commit: a migration before its words are known as text (no transcription asked for,
or a transcript still on its way, as when the upstream stalls right after the
commit) replays it as a user `input_audio` item, so the new target hears what the
user just said. A session so holds at most twice the budget.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque

from router.realtime.wire import parse

#: kept while no user turn is open: about 0.5 s of 24 kHz PCM16 in base64, more than a
#: server VAD's prefix padding (300 ms by default) before the speech it detects
IDLE_BYTES = 32 * 1024


class InputAudio:
    __slots__ = ("_budget", "_bytes", "_cut", "_frames", "_turn")

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._frames: deque[str] = deque()
        self._bytes = 0
        #: frames of the user's turn were dropped past the budget: it is not whole
        self._cut = False
        #: the last committed turn: its item id and append frames
        self._turn: tuple[str, tuple[str, ...]] | None = None

    def appended(self, frame: str, turn_open: bool) -> None:
        """An append frame on its way upstream, `turn_open` if the user has the turn."""
        if not self._budget:
            return
        self._frames.append(frame)
        self._bytes += len(frame)
        budget = self._budget if turn_open else min(self._budget, IDLE_BYTES)
        while self._bytes > budget:
            self._bytes -= len(self._frames.popleft())
            self._cut = self._cut or turn_open

    def consumed(self) -> None:
        """The upstream cleared its buffer: nothing of it is left to carry."""
        self._frames.clear()
        self._bytes = 0
        self._cut = False

    def committed(self, item_id: str | None) -> None:
        """The upstream committed its buffer as the user item `item_id`: those frames
        are the last committed turn now (if whole), the buffer empty."""
        whole = item_id is not None and bool(self._frames) and not self._cut
        self._turn = (item_id, tuple(self._frames)) if whole and item_id else None
        self.consumed()

    def transcribed(self, item_id: str) -> None:
        """The turn's words arrived as text: a replay carries them, not its audio."""
        if self._turn is not None and self._turn[0] == item_id:
            self._turn = None

    def turn_audio(self) -> dict[str, str]:
        """{item id: base64 audio} of the last committed turn still kept, for a replay
        (decoded and joined once, at a migration; empty if a frame is unreadable)."""
        if self._turn is None:
            return {}
        item_id, frames = self._turn
        pcm = []
        for frame in frames:
            event = parse(frame)
            audio = event.get("audio") if event is not None else None
            if not isinstance(audio, str):
                return {}
            try:
                pcm.append(base64.b64decode(audio, validate=True))
            except (binascii.Error, ValueError):
                return {}
        return {item_id: base64.b64encode(b"".join(pcm)).decode("ascii")}

    def frames(self) -> list[str]:
        """The append frames whose audio the upstream holds uncommitted, oldest first."""
        return list(self._frames)
