"""WebRTC calls on the simulated Realtime server: the SDP exchange and the call's actions.

    POST /v1/realtime/calls                         a multipart form (sdp, session) or
                                                    application/sdp -> 201, an SDP
                                                    answer, Location
    POST /v1/realtime/calls/{call_id}/{action}      accept | reject | refer | hangup -> 200

As OpenAI's (its WebRTC guide and the SDK's `realtime.calls`): the answer is
`application/sdp` with `Location: /v1/realtime/calls/{call_id}`; a call needs a model
(`session.model`, or `?model=` with the bare SDP) and an offer that is SDP (`v=0`
first). No media flows: the simulator answers the offer, records the call and what was
done to it (`calls`), and applies the server's fault (`refuse`, `slow_upgrade`) to the
exchange as it does to an upgrade. The forms are read by aiohttp. Only the two shapes
OpenAI documents are taken (the SDK's form, whose parts are `application/sdp` and
`application/json`, and the guide's bare SDP): a JSON body is refused, so a client that
would only work against a lenient server fails here first.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from router.sim.realtime_behaviour import RealtimeBehaviour

ACTIONS = frozenset({"accept", "reject", "refer", "hangup"})


@dataclass(slots=True)
class CallRecord:
    id: str
    #: the offer's content type, as sent
    content_type: str
    sdp: str
    #: the session configuration sent with the offer
    session: dict[str, Any]
    #: request headers, names lower-cased
    headers: dict[str, str]
    #: (action, its JSON body), in order
    actions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.json_response(body, status=status)


def answer_sdp(n: int) -> str:
    return (
        f"v=0\r\no=- {n} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
        "a=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n"
    )


class SimCalls:
    """The calls of one simulated server."""

    def __init__(
        self,
        behaviour: Callable[[], RealtimeBehaviour],
        authorised: Callable[[web.Request], bool],
        max_records: int = 10_000,
    ) -> None:
        self._behaviour = behaviour
        self._authorised = authorised
        self.records: deque[CallRecord] = deque(maxlen=max_records)
        self._ids = itertools.count(1)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/realtime/calls", self.create)
        app.router.add_post("/v1/realtime/calls/{call_id}/{action}", self.act)

    def find(self, call_id: str) -> CallRecord | None:
        return next((r for r in self.records if r.id == call_id), None)

    async def create(self, request: web.Request) -> web.Response:
        fault = self._behaviour().fault
        if fault.kind == "refuse":
            return _error(fault.status, fault.message, "simulated_refusal")
        if fault.kind == "slow_upgrade":
            await asyncio.sleep(fault.delay_s)
        if not self._authorised(request):
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        offer = await _offer(request)
        if isinstance(offer, web.Response):
            return offer
        sdp, session = offer
        if not sdp.startswith("v=0"):
            return _error(400, "The SDP offer could not be parsed.", "invalid_offer")
        if not session.get("model"):
            return _error(400, "Missing required parameter: 'session.model'.", "missing_model")
        n = next(self._ids)
        record = CallRecord(
            id=f"rtc_sim{n}{secrets.token_hex(4)}",  # unique across simulators, as a provider's
            content_type=request.content_type,
            sdp=sdp,
            session=session,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.records.append(record)
        return web.Response(
            status=201,
            text=answer_sdp(n),
            content_type="application/sdp",
            headers={"Location": f"/v1/realtime/calls/{record.id}"},
        )

    async def act(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        action, record = request.match_info["action"], self.find(request.match_info["call_id"])
        if action not in ACTIONS:
            return _error(404, f"Invalid URL (POST {request.path})", "unknown_url")
        if record is None:
            return _error(404, "Call not found.", "call_not_found")
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return _error(400, "The body is not JSON.", "invalid_json")
        record.actions.append((action, body if isinstance(body, dict) else {}))
        return web.Response(status=200)


async def _offer(request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
    kind = request.content_type
    if kind == "application/sdp":
        return await request.text(), {"model": request.query.get("model", "")}
    if kind == "multipart/form-data":
        form = await request.post()  # a part that is not text/* comes as bytes
        sdp, text = _text(form.get("sdp")), _text(form.get("session"))
        try:
            session = json.loads(text) if text else {}
        except ValueError:
            return _error(400, "'session' is not JSON.", "invalid_json")
    else:
        return _error(400, f"Unsupported content type {kind}.", "unsupported_content_type")
    if sdp is None or not isinstance(session, dict):
        return _error(400, "Missing required parameter: 'sdp'.", "missing_sdp")
    return sdp, session


def _text(value: object) -> str | None:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else None
