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
"""

from __future__ import annotations

from collections import deque

#: kept while no user turn is open: about 0.5 s of 24 kHz PCM16 in base64, more than a
#: server VAD's prefix padding (300 ms by default) before the speech it detects
IDLE_BYTES = 32 * 1024


class InputAudio:
    __slots__ = ("_budget", "_bytes", "_frames")

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._frames: deque[str] = deque()
        self._bytes = 0

    def appended(self, frame: str, turn_open: bool) -> None:
        """An append frame on its way upstream, `turn_open` if the user has the turn."""
        if not self._budget:
            return
        self._frames.append(frame)
        self._bytes += len(frame)
        budget = self._budget if turn_open else min(self._budget, IDLE_BYTES)
        while self._bytes > budget:
            self._bytes -= len(self._frames.popleft())

    def consumed(self) -> None:
        """The upstream committed or cleared its buffer: nothing of it is left to carry."""
        self._frames.clear()
        self._bytes = 0

    def frames(self) -> list[str]:
        """The append frames whose audio the upstream holds uncommitted, oldest first."""
        return list(self._frames)
