"""One attempt up to its commit point (`attempt_to_commit`): the events before the
first token of a stream, or a whole unary answer.

Before the commit point each SSE event is parsed as JSON (there are only a few: the
role chunk, Azure's prompt-filter chunk, perhaps an empty delta): a malformed frame,
one past `upstream.max_event_bytes`, an error event or a stream that ends first is
an `UpstreamError`, so the race moves the turn on. How an event or a body reads
(chat chunks, Responses events, an embeddings body) is the request's `Dialect`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio

from router.clock import Clock
from router.errors import (
    TargetUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamQueued,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.signals.attempt import Attempt
from router.turn import sse
from router.turn.dialect import Dialect
from router.turn.scopes import Deadlines, cancel_scope
from router.turn.types import Primed, TargetRuntime, TurnRequest, close_response
from router.upstream.base import UpstreamRequest, UpstreamResponse


async def read_to_first_token(
    runtime: TargetRuntime,
    attempt: Attempt,
    response: UpstreamResponse,
    started: float,
    dialect: Dialect,
    *,
    clock: Clock,
    max_event: int,
) -> Primed:
    """Read a stream up to and including its first token (the head sent at commit)."""
    name = runtime.config.name
    chunks = response.aiter_bytes()
    framer = sse.Framer(max_event)
    head: list[bytes] = []
    response_id = None
    async for chunk in chunks:
        try:
            block = framer.feed(chunk)
        except sse.EventTooLarge as too_large:  # one name per exception type: mypyc
            raise UpstreamProtocolError(f"{name}: {too_large}", target=name) from too_large
        if not block:
            continue
        events = sse.split_events(block)
        for i, event in enumerate(events):
            try:
                frame, kind, parsed = dialect.classify(event)
            except sse.MalformedFrame as malformed:
                raise UpstreamProtocolError(f"{name}: {malformed}", target=name) from malformed
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
            if parsed is not None and response_id is None:
                response_id = dialect.response_id(parsed)
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
                    response_id=response_id,
                )
    raise UpstreamProtocolError(f"{name}: stream closed before the first token", target=name)


async def read_whole(
    runtime: TargetRuntime,
    attempt: Attempt,
    response: UpstreamResponse,
    started: float,
    dialect: Dialect,
    *,
    clock: Clock,
) -> Primed:
    """A unary answer, whole: its commit point is its end."""
    name = runtime.config.name
    body = await response.aread()
    try:
        whole = dialect.whole(name, body)
    except sse.MalformedFrame as exc:
        raise UpstreamProtocolError(f"{name}: {exc}", target=name) from exc
    return Primed(
        runtime,
        attempt,
        response,
        None,
        body,
        None,
        started,
        clock(),
        usage=whole.usage,
        response_id=whole.response_id,
    )


async def attempt_to_commit(
    runtime: TargetRuntime,
    request: TurnRequest,
    *,
    first_token_s: float,
    clock: Clock,
    max_event: int,
    deadlines: Deadlines,
    scope: anyio.CancelScope | None = None,
    superseded: Callable[[], bool] | None = None,
    moved: Callable[[anyio.CancelScope], bool] | None = None,
) -> Primed | UpstreamError | None:
    """One attempt, up to its commit point: primed, or why it failed (never raised:
    only a cancel leaves it by an exception). `first_token_s` bounds a stream's wait
    for its first token; a unary answer has the target's `total_s`.

    A race passes the `scope` it cancels the attempt by when another wins: the
    deadline is set on it (one cancel scope per attempt, not two), and a cancel
    while `superseded()` says the race is over returns None (the attempt cancelled).
    A cancel for which `moved(scope)` is true returns `UpstreamQueued`: the race took
    the turn out of an engine's queue (`requeue.py`), no fault of the target's."""
    cfg = runtime.config
    # Everything the router does before the send happens before the target's clock
    # starts: the router's own work is never charged to a target.
    upstream_request = UpstreamRequest(
        request.endpoint,
        request.body.for_target(cfg.model),
        request.stream,
        dict(request.forward_headers),
    )
    # A unary answer's latency is a whole generation, not a time to first token.
    attempt = runtime.signals.begin(request.routing.prompt_tokens, measures_ttft=request.stream)
    if not attempt.admitted:
        # Its breaker opened (or its half-open probe was taken) since the plan was made.
        attempt.release()
        return TargetUnavailable(f"{cfg.name}: breaker open", target=cfg.name)
    started = clock()
    response: UpstreamResponse | None = None
    handed_over = False
    deadline = first_token_s
    if not request.stream:
        deadline = cfg.timeouts.total_s
    # A cancel scope, not `anyio.fail_after` (a generator context manager that looks
    # the backend up twice more), and its deadline kept by `deadlines` (one timer for
    # every turn's, not one each: scopes.py).
    if scope is None:
        scope = cancel_scope()
    due = deadlines.cancel_after(deadline, scope)
    try:
        with scope:
            response = await runtime.upstream.send(upstream_request)
            attempt.headers(response.headers)
            if request.stream:
                primed = await read_to_first_token(
                    runtime,
                    attempt,
                    response,
                    started,
                    request.dialect,
                    clock=clock,
                    max_event=max_event,
                )
            else:
                primed = await read_whole(
                    runtime, attempt, response, started, request.dialect, clock=clock
                )
        if scope.cancelled_caught:
            if superseded is not None and superseded():
                attempt.cancelled()  # another attempt won the race
                return None
            if moved is not None and moved(scope):
                attempt.cancelled()  # a censored TTFT sample; not a failure
                return UpstreamQueued(
                    f"{cfg.name}: waited in the engine's queue; moved before its first token",
                    target=cfg.name,
                )
            raise TimeoutError
        # The TTFT sample is booked by the commit, after the token is written.
        handed_over = True
        return primed
    except TimeoutError:
        what = "no first token" if request.stream else "no whole answer"
        err = UpstreamTimeout(
            f"{cfg.name}: {what} within {deadline:g}s",
            target=cfg.name,
            phase="first_token" if request.stream else "total",
        )
        attempt.failed(err)
        return err
    except UpstreamError as err:
        err.target = err.target or cfg.name
        attempt.failed(err)
        # Returned as a value, not raised on: its traceback would keep this frame and
        # the upstream's (the request body among their locals) in a reference cycle
        # until the cyclic collector runs, thousands of allocations away.
        err.__traceback__ = None
        return err
    except anyio.get_cancelled_exc_class():
        attempt.cancelled()
        raise
    finally:
        deadlines.drop(due)
        if not handed_over:
            attempt.release()
            if response is not None:
                await close_response(response)
