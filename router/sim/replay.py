"""Replay recorded provider answers byte for byte: the shapes real providers send.

A recording (YAML) holds one or more answers. Each answer has a status, headers and
the body as a list of writes, sent one at a time (so an event, or a CRLF, can be
split across reads as on a real network), framed `chunked`, by `length` or by
`close`; `when` picks an answer by the request's JSON body (`{n: 2}`: Groq's 400 on
`n > 1`). The server is raw asyncio, not an HTTP library, so the bytes on the wire
are exactly the recording's: CR-only line ends, comment lines, an error frame after
the first token.

    description: Groq, x_groq.usage in the last chunk
    answers:
      - when: {n: 2}
        status: 400
        headers: {content-type: application/json}
        framing: length
        writes: ['{"error": {...}}']
      - status: 200
        headers: {content-type: text/event-stream}
        pause_s: 0.002
        writes: ["data: {...}\\n\\n", "data: [DONE]\\n\\n"]

Instead of `writes`, `events` lists SSE events as data (`data:` a mapping, sent as
compact JSON, or a string such as `[DONE]`; `comment:` a comment line; `raw:` exact
bytes), each ended with `line_end` (`lf`, `crlf` or `cr`) and written on its own or,
with `split_every: N`, cut into writes of N bytes.

`firsttoken sim` runs the simulators; this module is for tests and for trying a
router against a provider's shape without its API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Framing = Literal["chunked", "length", "close"]
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    writes: tuple[bytes, ...] = ()
    framing: Framing = "chunked"
    #: seconds between two writes
    pause_s: float = 0.0
    #: answer only requests whose JSON body has these values
    when: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, body: Mapping[str, Any]) -> bool:
        return all(body.get(k) == v for k, v in self.when.items())


@dataclass(frozen=True)
class Recording:
    description: str
    answers: tuple[Answer, ...]

    def answer_for(self, body: Mapping[str, Any]) -> Answer:
        for answer in self.answers:
            if answer.matches(body):
                return answer
        return self.answers[-1]


_LINE_ENDS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def event_bytes(event: Mapping[str, Any], eol: bytes, prefix: bytes = b"data: ") -> bytes:
    """One SSE event of a recording's `events`."""
    if "raw" in event:
        return str(event["raw"]).encode("utf-8")
    if "comment" in event:
        return b": " + str(event["comment"]).encode("utf-8") + eol + eol
    data = event["data"]
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = b"event: " + str(event["event"]).encode() + eol if "event" in event else b""
    return head + prefix + text.encode("utf-8") + eol + eol


def _writes(a: Mapping[str, Any]) -> tuple[bytes, ...]:
    if "events" not in a:
        return tuple(str(w).encode("utf-8") for w in a.get("writes") or ())
    eol = _LINE_ENDS[a.get("line_end", "lf")]
    prefix = str(a.get("data_prefix", "data: ")).encode()
    events = [event_bytes(e, eol, prefix) for e in a["events"]]
    every = a.get("split_every")
    if not every:
        return tuple(events)
    stream = b"".join(events)
    return tuple(stream[i : i + int(every)] for i in range(0, len(stream), int(every)))


def load_recording(path: str | Path) -> Recording:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    answers = tuple(
        Answer(
            status=int(a.get("status", 200)),
            headers={str(k): str(v) for k, v in (a.get("headers") or {}).items()},
            writes=_writes(a),
            framing=a.get("framing", "chunked"),
            pause_s=float(a.get("pause_s", 0.0)),
            when=a.get("when") or {},
        )
        for a in data["answers"]
    )
    return Recording(str(data.get("description", "")), answers)


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 request off a raw connection: its request line, its headers (names
    lower-cased) and its body (Content-Length). Raises IncompleteReadError at EOF."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0], headers, body


@dataclass
class Seen:
    """One request as the replay server received it."""

    line: str
    headers: dict[str, str]
    body: dict[str, Any]


class ReplayServer:
    """Serves a recording on 127.0.0.1; `requests` records what it was sent."""

    def __init__(self, recording: Recording, host: str = "127.0.0.1", port: int = 0) -> None:
        self.recording = recording
        self.host = host
        self.port = port
        self.requests: list[Seen] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line, headers, raw = await read_request(reader)
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                self.requests.append(Seen(line, headers, body if isinstance(body, dict) else {}))
                answer = self.recording.answer_for(self.requests[-1].body)
                if not await self._answer(writer, answer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, answer: Answer) -> bool:
        """Write one answer; whether the connection stays open."""
        reason = _REASONS.get(answer.status, "Status")
        head = [f"HTTP/1.1 {answer.status} {reason}"]
        head += [f"{k}: {v}" for k, v in answer.headers.items()]
        if answer.framing == "chunked":
            head.append("transfer-encoding: chunked")
        elif answer.framing == "length":
            head.append(f"content-length: {sum(len(w) for w in answer.writes)}")
        else:
            head.append("connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        for data in answer.writes:
            if answer.pause_s:
                await writer.drain()
                await asyncio.sleep(answer.pause_s)
            writer.write(
                b"%x\r\n%s\r\n" % (len(data), data) if answer.framing == "chunked" else data
            )
        if answer.framing == "chunked":
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        return answer.framing != "close"
