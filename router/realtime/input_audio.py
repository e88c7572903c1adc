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

The client's own `input_audio_buffer.commit` and `clear` are kept in the same order
among the appends until the upstream answers them (`committed`, `cleared`, or an
error naming them or saying the buffer was empty): one the old upstream never read
(it hung, or died with it in its socket) is sent to the new one where it came, so a
push-to-talk turn is committed and answered there, not lost behind the turn before.
An upstream's answer ends the appends up to the oldest such frame (the ones after it
stay uncommitted); with none (server VAD) it ends them all.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque

from router.realtime.wire import names_event, parse

#: kept while no user turn is open: about 0.5 s of 24 kHz PCM16 in base64, more than a
#: server VAD's prefix padding (300 ms by default) before the speech it detects
IDLE_BYTES = 32 * 1024


class InputAudio:
    __slots__ = ("_budget", "_bytes", "_cut", "_frames", "_marks", "_turn")

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._frames: deque[str] = deque()
        self._bytes = 0
        #: frames of the user's turn were dropped past the budget: it is not whole
        self._cut = False
        #: the last committed turn: its item id and append frames
        self._turn: tuple[str, tuple[str, ...]] | None = None
        #: the client's commits and clears in `_frames` no upstream answered, oldest first
        self._marks: deque[str] = deque()

    def appended(self, frame: str, turn_open: bool) -> None:
        """An append frame on its way upstream, `turn_open` if the user has the turn."""
        if not self._budget:
            return
        self._frames.append(frame)
        self._bytes += len(frame)
        budget = self._budget if turn_open else min(self._budget, IDLE_BYTES)
        while self._bytes > budget:
            dropped = self._frames.popleft()
            self._bytes -= len(dropped)
            self._cut = self._cut or turn_open
            if self._marks and dropped is self._marks[0]:
                self._marks.popleft()

    def marked(self, frame: str) -> None:
        """The client's `input_audio_buffer.commit` or `clear`, on its way upstream."""
        if not self._budget:
            return
        self._frames.append(frame)
        self._bytes += len(frame)
        self._marks.append(frame)

    def consumed(self) -> None:
        """The upstream cleared its buffer: what was appended before the client's clear
        (all of it, if no clear of the client's is out) is not to carry."""
        self._answered()

    def committed(self, item_id: str | None) -> None:
        """The upstream committed its buffer as the user item `item_id`: the frames
        before the client's commit (all of them, if none is out) are the last committed
        turn now (if whole)."""
        cut = self._cut
        audio = self._answered()
        whole = item_id is not None and bool(audio) and not cut
        self._turn = (item_id, tuple(audio)) if whole and item_id else None

    def refused(self, event_id: str | None) -> bool:
        """An error naming the client event `event_id` (None: one saying the buffer was
        empty): True when it answers a commit or clear still out (it is not sent again)."""
        if not self._marks:
            return False
        mark = self._marks[0]
        if event_id is not None:
            found = next((m for m in self._marks if names_event(m, event_id)), None)
            if found is None:
                return False
            mark = found
        self._marks.remove(mark)
        self._frames.remove(mark)
        self._bytes -= len(mark)
        return True

    def _answered(self) -> list[str]:
        """The upstream answered the oldest commit or clear out (or, with none out, its
        own: server VAD): the appends up to it leave the buffer; returns them."""
        audio = []
        mark = self._marks.popleft() if self._marks else None
        while self._frames:
            frame = self._frames.popleft()
            self._bytes -= len(frame)
            if frame is mark:
                break
            audio.append(frame)
        if not self._frames:
            self._cut = False
        return audio

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
        """The append frames whose audio the upstream holds uncommitted, and the
        client's commits and clears among them it did not answer, oldest first."""
        return list(self._frames)
