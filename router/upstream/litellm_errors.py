"""litellm's exceptions (and its transports'), translated into `router.errors`.

`translate` is the one place this happens for `LitellmUpstream`. litellm's own
classification is not trusted on its own: it reports a 529 and a refused
connection alike as a 500 `InternalServerError`. The raw HTTP response of the
call (when one arrived) gives the provider's real status, headers and error
body; otherwise the exception chain says whether it was a timeout or a
connection failure. Messages carried over are scrubbed of the API key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Literal

import httpx

from router.errors import (
    TimeoutPhase,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.upstream.litellm_frames import json_bytes
from router.upstream.openai import retry_after_s
from router.upstream.rejections import rejection_reason

#: "send": before the first content token; "stream": after it
Phase = Literal["send", "stream"]
_REDACTED = "[redacted]"


def chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or during, outermost first."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out and len(out) < 16:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, _REDACTED) if secret else text


def _provider_error(links: list[BaseException], response: httpx.Response | None) -> tuple[str, str]:
    """(type, message) of the provider's error: from its body, else the deepest message."""
    candidates: list[Any] = []
    if response is not None:
        with contextlib.suppress(httpx.ResponseNotRead):
            candidates.append(response.content)
    candidates += [getattr(e, "message", None) for e in reversed(links)]
    for raw in candidates:
        if isinstance(raw, bytes | str) and raw:
            try:
                parsed = httpx.Response(200, content=raw).json()
            except ValueError:
                text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
                return "upstream_error", text[:500]
            err = parsed.get("error") if isinstance(parsed, dict) else None
            if isinstance(err, dict):
                return str(err.get("type") or "upstream_error"), str(err.get("message") or "")[:500]
    return "upstream_error", str(links[0])[:500]


def _is_timeout(e: BaseException) -> bool:
    return isinstance(e, httpx.TimeoutException | TimeoutError) or type(e).__name__ == "Timeout"


def _is_connect(e: BaseException) -> bool:
    return isinstance(e, httpx.TransportError | ConnectionError) or type(e).__name__ in {
        "APIConnectionError",
        "ClientConnectorError",
        "ClientConnectionError",
        "ServerDisconnectedError",
        "ClientPayloadError",
    }


def translate(
    exc: BaseException,
    *,
    target: str,
    phase: Phase,
    response: httpx.Response | None,
    secret: str | None,
    wall_now: float,
) -> UpstreamError:
    """litellm's (and its transports') exceptions, in our tree. The one place.

    `response` is the raw HTTP response of the call, if one arrived: its status is
    the provider's real one (litellm reports a 529 as a 500). `wall_now` (epoch
    seconds) dates a Retry-After.
    """
    links = chain(exc)
    kind = type(exc).__name__
    failed = response is not None and response.status_code >= 300
    if not failed and any(_is_timeout(e) for e in links):
        connect = any(isinstance(e, httpx.ConnectTimeout) for e in links)
        which: TimeoutPhase = (
            "connect" if connect else ("first_token" if phase == "send" else "idle")
        )
        return UpstreamTimeout(f"{target}: {which} timeout ({kind})", target=target, phase=which)
    if not failed and any(_is_connect(e) for e in links):
        where = "cannot connect" if response is None else "connection lost"
        return UpstreamConnectError(f"{target}: {where} ({kind})", target=target)
    status = response.status_code if failed and response is not None else None
    if status is None:
        code = getattr(exc, "status_code", None)
        status = code if isinstance(code, int) and code >= 400 else None
    if status is None:
        _, message = _provider_error(links, None)
        return UpstreamProtocolError(f"{target}: {kind}: {_scrub(message, secret)}", target=target)
    err_type, message = _provider_error(links, response if failed else None)
    message = _scrub(message, secret)
    body = json_bytes({"error": {"message": message, "type": err_type, "code": None}})
    headers: Mapping[str, str] = (
        response.headers
        if failed and response is not None
        else getattr(exc, "litellm_response_headers", None) or {}
    )
    return UpstreamStatusError(
        f"{target}: upstream answered {status} ({err_type})",
        target=target,
        upstream_status=status,
        body=body,
        retry_after_s=retry_after_s(headers, body, wall_now=wall_now),
        # the provider's rate-limit state rides on its 429 (anthropic-ratelimit-*, ...)
        headers={k.lower(): v for k, v in headers.items()},
        rejection=rejection_reason(status, body),
    )
