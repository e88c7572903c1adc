"""A parse worker: a child process that parses large request bodies for the router.

Run as `python -m router.gateway.parse_worker` by `gateway.admission.BodyParser`,
it reads jobs from stdin and writes answers to stdout, one at a time. Every piece
is a 4-byte big-endian length and its bytes: a job is a pickle of `(endpoint,
session_header, limits)` and then the raw body (sent as is, never copied into a
pickle), an answer a pickle of `(True, ParsedRequest)` or `(False, FirstTokenError)`. The
router's own child, over its own pipes: nothing else writes to them (stdout is
moved to a private descriptor and `print` goes to stderr). It exits when stdin
closes. It runs at a lower CPU priority than the router, whose event loop must
win any contest for a core.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import struct
import sys
from typing import BinaryIO

from router.errors import FirstTokenError
from router.gateway.request import parse_request

HEADER = struct.Struct("!I")
log = logging.getLogger("firsttoken.parse_worker")


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload))


def _read(source: BinaryIO) -> bytes | None:
    head = source.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    payload = source.read(size)
    return payload if len(payload) == size else None


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """Answer jobs until `source` ends."""
    while (job := _read(source)) is not None and (raw := _read(source)) is not None:
        endpoint, session_header, limits = pickle.loads(job)
        answer: tuple[bool, object]
        try:
            answer = (True, parse_request(endpoint, raw, session_header, limits))
        except FirstTokenError as err:
            answer = (False, err)
        except Exception:  # a bug of ours: say so, and keep serving
            log.exception("parse worker failed on a body of %d bytes", len(raw))
            answer = (False, FirstTokenError("internal error while parsing the request"))
        payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        sink.write(frame(payload))
        sink.write(payload)
        sink.flush()


def main() -> None:
    with contextlib.suppress(OSError):  # not permitted here: parse at the same priority
        os.nice(10)
    sink = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # nothing but answers may reach the router's pipe
    serve(sys.stdin.buffer, sink)


if __name__ == "__main__":
    main()
