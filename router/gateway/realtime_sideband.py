"""`GET /v1/realtime?call_id=ID`: a server's sideband to a WebRTC call, at its target.

A WebRTC call's media flows between the browser and the provider; the call's session
(its events, tool results, `session.update`) is reached over the provider's WebSocket
with `?call_id=` and no model. The router joins it at the target holding the call (the
one it placed the call on, or that answered an action on it), or, for a call it never
saw, at the route's targets in its policy's order until one knows it (a 404 passes it
on; where it opens, it is remembered). It never moves: the media is on that target,
so a failure ends it (an `error` event, then the close), and it is not replaced at
`max_upstream_s`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from router.errors import (
    AllTargetsFailed,
    Draining,
    NoTargetAvailable,
    NotFound,
    UpstreamError,
    UpstreamStatusError,
)
from router.gateway.auth import Client
from router.gateway.realtime_calls import call_holders
from router.realtime.events import MigrationReason
from router.realtime.service import session_limits
from router.realtime.session import Session
from router.realtime.target import Hold, Leg
from router.responses.pinning import Pin
from router.runtime import Router

if TYPE_CHECKING:  # the endpoint's module imports this one
    from router.gateway.realtime import AsgiClientSocket


async def open_sideband(
    router: Router,
    call_id: str,
    socket: AsgiClientSocket,
    client: Client | None,
    model: str | None = None,
) -> Session:
    """The call's session (see the module): at its known target, where any failure is
    the answer, or searched for at the route's targets (`?model=`, else the key's only
    realtime route; `realtime_calls.call_holders`)."""
    if router.draining:
        raise Draining("this replica is shutting down; retry on another")
    known, holders = await call_holders(router, call_id, client, model)
    if not holders:
        raise NoTargetAvailable("no realtime target of the route can be asked for the call")
    route_name = holders[0][0].route
    router.runtime.auth.admit_session(client, route_name)
    events = router.realtime_metrics
    failures: list[UpstreamError] = []
    unasked: list[str] = []  # breaker open: the call may be there
    for owner, target, upstream in holders:
        hold = Hold(target)
        if not hold.admitted:
            hold.release()
            if known:
                raise Pin("realtime_call", call_id, owner).unavailable(
                    "its circuit breaker is open"
                )
            unasked.append(target.name)
            continue
        try:
            conn = await upstream.attach(call_id)
        except UpstreamError as err:
            missing = isinstance(err, UpstreamStatusError) and err.upstream_status == 404
            if known or not missing:  # "not here" says nothing of a searched target
                hold.connect_failed(err)
            hold.release()
            if known and missing:
                raise NotFound(
                    f"the call '{call_id}' has ended, or its target does not know it"
                ) from err
            if known:
                raise AllTargetsFailed("the call's target did not open its session", [err]) from err
            if not missing:
                failures.append(err)
            continue
        except BaseException:
            hold.release()
            raise
        if not known:
            router.owners.remember("realtime_call", call_id, owner)
        break
    else:
        if failures:
            raise AllTargetsFailed("no target opened the call's session", failures)
        if unasked:  # not a 404: the call may be on a target that could not be asked
            raise NoTargetAvailable(
                f"no target that could be asked knows the call '{call_id}'; not asked, their"
                f" circuit breakers open: {', '.join(unasked)}"
            )
        raise NotFound(f"no target of the route '{route_name}' knows the call '{call_id}'")
    hold.connected(conn.connect_s)
    events.upstream_connected(owner.route, target.name, conn.connect_s)

    async def reopen(reason: MigrationReason, old: Leg) -> Leg:
        raise NoTargetAvailable(f"a call's session stays on '{target.name}', with its media")

    route = router.runtime.routes[owner.route]
    return Session(
        route=owner.route,
        client=socket,
        leg=Leg(target, conn, hold, router.clock()),
        reopen=reopen,
        events=events,
        # no move to wait for: a call's session is not replaced at an age; nor moved at
        # all, so nothing of ours is transcribed (the browser's data channel would see it)
        limits=replace(
            session_limits(route.config, client.sessions if client else None),
            max_upstream_s=None,
            transcribe=None,
        ),
        clock=router.clock,
        client_name=client.name if client else None,
    )
