"""One attempt's answer up to its commit point: the events before the first token of
a stream, or a whole unary answer.

Before the commit point each SSE event is parsed as JSON (there are only a few: the
role chunk, Azure's prompt-filter chunk, perhaps an empty delta): a malformed frame,
one past `upstream.max_event_bytes`, an error event or a stream that ends first is
an `UpstreamError`, so the race moves the turn on.
"""

from __future__ import annotations

import json

from router.clock import Clock
from router.errors import UpstreamProtocolError, UpstreamStatusError
from router.signals.attempt import Attempt
from router.turn import sse
from router.turn.types import Primed, TargetRuntime
from router.upstream.base import UpstreamResponse


async def read_to_first_token(
    runtime: TargetRuntime,
    attempt: Attempt,
    response: UpstreamResponse,
    started: float,
    *,
    clock: Clock,
    max_event: int,
) -> Primed:
    """Read a stream up to and including its first token (the head sent at commit)."""
    name = runtime.config.name
    chunks = response.aiter_bytes()
    framer = sse.Framer(max_event)
    head: list[bytes] = []
    async for chunk in chunks:
        try:
            block = framer.feed(chunk)
        except sse.EventTooLarge as exc:
            raise UpstreamProtocolError(f"{name}: {exc}", target=name) from exc
        if not block:
            continue
        events = sse.split_events(block)
        for i, event in enumerate(events):
            try:
                frame, kind, parsed = sse.classify(event)
            except sse.MalformedFrame as exc:
                raise UpstreamProtocolError(f"{name}: {exc}", target=name) from exc
            if frame is sse.Frame.ERROR:
                raise UpstreamStatusError(
                    f"{name}: error event before the first token",
                    target=name,
                    upstream_status=502,
                    body=json.dumps(parsed).encode(),
                )
            if frame is sse.Frame.DONE:
                raise UpstreamProtocolError(f"{name}: stream ended before any token", target=name)
            head.append(event)
            if frame in (sse.Frame.TOKEN, sse.Frame.FINISH):
                rest = b"".join(events[i + 1 :])
                if rest:  # complete events after the first token: keep them first
                    framer = sse.Framer(max_event, rest + framer.pending)
                return Primed(
                    runtime,
                    attempt,
                    response,
                    chunks,
                    b"".join(head),
                    framer,
                    started,
                    clock(),
                    first_kind=kind,
                )
    raise UpstreamProtocolError(f"{name}: stream closed before the first token", target=name)


async def read_whole(
    runtime: TargetRuntime,
    attempt: Attempt,
    response: UpstreamResponse,
    started: float,
    *,
    clock: Clock,
) -> Primed:
    """A unary answer, whole: its commit point is its end."""
    name = runtime.config.name
    body = await response.aread()
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise UpstreamProtocolError(f"{name}: response is not JSON", target=name) from exc
    if not isinstance(parsed, dict) or "choices" not in parsed:
        raise UpstreamProtocolError(f"{name}: response has no choices", target=name)
    usage = parsed.get("usage")
    return Primed(
        runtime,
        attempt,
        response,
        None,
        body,
        None,
        started,
        clock(),
        usage=usage if isinstance(usage, dict) else None,
    )
