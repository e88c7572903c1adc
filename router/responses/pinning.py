"""A Responses request that builds on stored state goes to the target that stored it.

`previous_response_id` and `conversation` name state that lives on one target. When
the router knows the owner (router/responses/owners.py), the request is planned on
that target alone, whatever the route's policy would choose: no fallback, no hedge,
since no other target has the state. What goes wrong says why, in OpenAI's error
shape:

- the owner is not one of the route's targets that serve `/v1/responses` (another
  route's, or removed by a reload): 409 `response_state_elsewhere`;
- the owner is down (breaker open, over a limit, or every attempt failed to reach
  it), or Redis, which would know the owner, cannot be asked: 503
  `response_state_unavailable`, with Retry-After;
- the owner answers with an error of its own (the state expired there: 400
  `previous_response_not_found`): that error, as the target wrote it.

An id no replica remembers (made before the router saw it, or forgotten after
`responses.owner_ttl_s`) routes freely: the target chosen answers it or says it does
not know it. `store: false` answers are not remembered (nothing is stored upstream).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from router.errors import StateConflict, StateUnavailable
from router.responses.owners import IdKind, Owner, OwnerLookupFailed, ResponseOwners

_NAMES: dict[IdKind, str] = {
    "response": "response",
    "conversation": "conversation",
    "chat_completion": "chat completion",
    "realtime_call": "call",
}


@dataclass(frozen=True, slots=True)
class Pin:
    """The stored state a request builds on, and the target that holds it."""

    kind: IdKind
    value: str
    owner: Owner

    @property
    def what(self) -> str:
        return f"{_NAMES[self.kind]} '{self.value[:100]}'"

    def unavailable(self, why: str) -> StateUnavailable:
        return StateUnavailable(
            f"the {self.what} is stored on target '{self.owner.target}', which is "
            f"unavailable ({why}); its state cannot be read elsewhere: retry later"
        )


def state_of(previous_response_id: str | None, conversation: str | None) -> tuple[IdKind, str]:
    if previous_response_id is not None:
        return "response", previous_response_id
    assert conversation is not None
    return "conversation", conversation


async def find_pin(
    owners: ResponseOwners, previous_response_id: str | None, conversation: str | None
) -> Pin | None:
    """The owner of the state a request builds on; None if it builds on none, or on an
    id no replica remembers."""
    if previous_response_id is None and conversation is None:
        return None
    kind, value = state_of(previous_response_id, conversation)
    return await lookup_pin(owners, kind, value)


async def lookup_pin(owners: ResponseOwners, kind: IdKind, value: str) -> Pin | None:
    """The owner of one id; None if no replica remembers it (a 503 if Redis cannot say)."""
    try:
        owner = await owners.lookup(kind, value)
    except OwnerLookupFailed as exc:
        raise StateUnavailable(
            f"the target that stored the {_NAMES[kind]} '{value[:100]}' cannot be looked up "
            f"({exc}); retry later"
        ) from exc
    return Pin(kind, value, owner) if owner is not None else None


def pinned_targets(pin: Pin, route: str, served: Sequence[str]) -> tuple[str, ...]:
    """The one target to plan on, or a 409 if the route cannot reach it."""
    if pin.owner.target not in served:
        raise StateConflict(
            f"the {pin.what} is stored on target '{pin.owner.target}', which route "
            f"'{route}' does not serve /v1/responses with (it was made on route "
            f"'{pin.owner.route}'): send the follow-up to that route"
        )
    return (pin.owner.target,)
