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
"""

from __future__ import annotations

from collections import deque


class InputAudio:
    __slots__ = ("_budget", "_bytes", "_frames")

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._frames: deque[str] = deque()
        self._bytes = 0

    def appended(self, frame: str) -> None:
        """An append frame on its way upstream."""
        if not self._budget:
            return
        self._frames.append(frame)
        self._bytes += len(frame)
        while self._bytes > self._budget:
            self._bytes -= len(self._frames.popleft())

    def consumed(self) -> None:
        """The upstream committed or cleared its buffer: nothing of it is left to carry."""
        self._frames.clear()
        self._bytes = 0

    def frames(self) -> list[str]:
        """The append frames whose audio the upstream holds uncommitted, oldest first."""
        return list(self._frames)
