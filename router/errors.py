"""The one exception tree of FirstToken, and its OpenAI-style rendering.

    FirstTokenError
    ├── ConfigError                  a policy file is invalid (carries file:line issues)
    ├── StaleBuild                   a compiled module is older than its source (build.py)
    ├── RequestError                 the client's request is at fault (4xx, never retried)
    │   ├── BadRequest               400 invalid_request_error
    │   │   └── MalformedHttp        400: the HTTP parser refused the request itself
    │   ├── Unauthorized             401
    │   ├── Forbidden                403
    │   │   ├── HostNotAllowed       403: a Host header not on the allow-list (DNS rebinding)
    │   │   └── OriginNotAllowed     403: a browser page's Origin that CORS does not allow
    │   ├── ModelNotFound            404 model_not_found
    │   ├── NotFound                 404: no such endpoint
    │   ├── MethodNotAllowed         405, with the methods the endpoint takes (Allow)
    │   ├── RequestTimeout           408: the request was not sent in time
    │   ├── StateConflict            409: a Responses follow-up whose stored state is on a
    │   │                            target its route does not serve it with
    │   ├── PayloadTooLarge          413
    │   ├── UnsupportedMediaType     415: a POST without an application/json body
    │   ├── ClientRateLimited        429 (a client key over its own limit)
    │   └── HeadersTooLarge          431: the request head is over server.max_header_bytes
    ├── NoTargetAvailable            503: every target of the route was filtered out
    │   └── StateUnavailable         503: the target holding a response's state is down,
    │                                or who holds it cannot be looked up (Redis)
    ├── Draining                     503: this replica is shutting down
    ├── Overloaded                   503: too many large bodies wait for a parse worker
    ├── EngineError                  500: a local speech engine failed (router/speech)
    │   ├── EngineMissing            it cannot start: its package or program is missing
    │   └── EngineBusy               503: its queue is full (Retry-After)
    ├── UpstreamError                one attempt at one target failed (decides fallback)
    │   ├── UpstreamConnectError     could not connect / connection reset
    │   ├── UpstreamTimeout          connect, first-token or idle deadline passed
    │   ├── UpstreamStatusError      a non-2xx status from the target
    │   ├── TargetUnavailable        skipped: its breaker opened since the plan was made
    │   └── UpstreamProtocolError    a malformed frame, or the stream ended early
    └── AllTargetsFailed             every attempt of a turn failed: 502, 504, or the
                                     upstreams' own 4xx when the request was bad (only
                                     its OpenAI error fields, redacted)

Third-party exceptions (httpx, aiohttp, litellm, pydantic) are translated into this
tree in exactly one place each (`upstream/`, `config.py`), always with `from exc`.

Just over 400 lines: the tree is one module so the picture above and the classes
cannot drift apart; each class is a few lines of status, type and code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from router.redact import redact
from router.vocabulary import RejectionReason

#: why an attempt failed, as the breaker and the metrics call it
Cause = Literal["connect", "timeout", "status", "protocol", "error", "breaker_open", "queued"]
#: which deadline an `UpstreamTimeout` missed
TimeoutPhase = Literal["connect", "first_token", "idle", "total"]


class FirstTokenError(Exception):
    """Base of every error FirstToken raises on purpose."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a policy file, located by file, line and field path."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(FirstTokenError):
    status = 400  # as an answer to POST /admin/reload
    type = "invalid_request_error"
    code = "invalid_config"

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class StaleBuild(FirstTokenError):
    """A mypyc extension that was not built from the source beside it (`router/build.py`):
    running it would run code that is no longer in the tree."""

    code = "stale_build"


class RequestError(FirstTokenError):
    status = 400
    type = "invalid_request_error"


class BadRequest(RequestError):
    status = 400
    code = "invalid_request"


class Unauthorized(RequestError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class InvalidValue(BadRequest):
    """A field of a Realtime client event that cannot be honoured (its `error` event's
    code, as OpenAI's)."""

    code = "invalid_value"


class MalformedHttp(BadRequest):
    code = "malformed_http_request"


class Forbidden(RequestError):
    status = 403
    type = "permission_error"
    code = "route_not_allowed"


class HostNotAllowed(Forbidden):
    code = "host_not_allowed"


class OriginNotAllowed(Forbidden):
    code = "origin_not_allowed"


class ModelNotFound(RequestError):
    status = 404
    code = "model_not_found"


class MethodNotAllowed(RequestError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allow: Sequence[str] = ()) -> None:
        super().__init__(message)
        #: the methods the endpoint takes, for the Allow header
        self.allow = tuple(allow)


class NotFound(RequestError):
    status = 404
    code = "not_found"


class RequestTimeout(RequestError):
    status = 408
    code = "request_timeout"


class UpgradeRequired(RequestError):
    """A plain HTTP request at a WebSocket endpoint (`/v1/realtime`)."""

    status = 426
    code = "websocket_required"


class StateConflict(RequestError):
    """The Responses state a request builds on is stored where its route cannot go."""

    status = 409
    code = "response_state_elsewhere"


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    status = 415
    code = "unsupported_media_type"


class HeadersTooLarge(RequestError):
    status = 431
    code = "request_header_fields_too_large"


class ClientRateLimited(RequestError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NoTargetAvailable(FirstTokenError):
    status = 503
    type = "service_unavailable"
    code = "no_target_available"


class StateUnavailable(NoTargetAvailable):
    """The target that stored a response is down (or cannot be found out): the request
    needs that state, so it is not sent anywhere else."""

    code = "response_state_unavailable"


class Draining(FirstTokenError):
    """This replica is shutting down: new turns go elsewhere."""

    status = 503
    type = "service_unavailable"
    code = "draining"


class Overloaded(FirstTokenError):
    """Too many large bodies are waiting for a parse worker: come back in a moment."""

    status = 503
    type = "service_unavailable"
    code = "overloaded"


class EngineError(FirstTokenError):
    """A local speech engine (PocketSphinx, eSpeak NG) failed on a request."""

    status = 500
    type = "server_error"
    code = "engine_error"


class EngineMissing(EngineError):
    """A local speech engine cannot start; the message names what installs it."""

    code = "engine_missing"


class EngineBusy(EngineError):
    """A local speech engine's queue is full: try again in a moment (or elsewhere)."""

    status = 503
    code = "engine_overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamError(FirstTokenError):
    """One attempt at one target failed. `retryable` decides whether the turn moves on."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True
    #: what the breaker and metrics call it: connect, timeout, status, protocol, ...
    cause: ClassVar[Cause] = "error"

    def __init__(self, message: str, *, target: str = "") -> None:
        super().__init__(message)
        self.target = target


class UpstreamConnectError(UpstreamError):
    code = "upstream_connect_error"
    cause: ClassVar[Cause] = "connect"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    cause: ClassVar[Cause] = "timeout"

    def __init__(
        self, message: str, *, target: str = "", phase: TimeoutPhase = "first_token"
    ) -> None:
        super().__init__(message, target=target)
        self.phase = phase


RETRYABLE_STATUSES = frozenset({401, 403, 408, 409, 425, 429})


class UpstreamStatusError(UpstreamError):
    """A non-2xx answer. 3xx (a target is not supposed to redirect), 401/403 (our key),
    408, 429, 5xx and a `rejection` (a 400/404/422 saying this target cannot serve the
    request: unknown model, unsupported parameter) are tried elsewhere; other 4xx mean
    the request itself is bad, so the client gets that status and the error's fields."""

    code = "upstream_status"
    cause: ClassVar[Cause] = "status"

    def __init__(
        self,
        message: str,
        *,
        target: str = "",
        upstream_status: int,
        body: bytes = b"",
        retry_after_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        rejection: RejectionReason | None = None,
    ) -> None:
        super().__init__(message, target=target)
        self.upstream_status = upstream_status
        #: at most the first 64 KiB of the body, the target's own key already removed
        self.body = body
        #: the response's headers, lower-cased (rate-limit state rides on a 429)
        self.headers: Mapping[str, str] = headers or {}
        self.retry_after_s = retry_after_s
        self.rejection = rejection
        # 401/403 mean the router's key for this target is wrong or lacks access:
        # the target's fault, not the client's, so another target may serve the turn.
        self.retryable = (
            upstream_status in RETRYABLE_STATUSES
            or upstream_status >= 500
            or upstream_status < 400
            or rejection is not None
        )
        if upstream_status == 429 and b"insufficient_quota" in body:
            # Out of credit is not transient: retrying it elsewhere is right, waiting is not.
            self.retry_after_s = None


class TargetUnavailable(UpstreamError):
    """The target's breaker closed the door between planning and attempting."""

    code = "target_unavailable"
    cause: ClassVar[Cause] = "breaker_open"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"
    cause: ClassVar[Cause] = "protocol"


class UpstreamQueued(UpstreamError):
    """Not the target's fault: the turn waited in a vLLM engine's queue while another
    target could answer sooner, so it was moved before its first token (see
    `router.turn.requeue`). Never reaches a client unless nothing else could serve."""

    status = 503
    code = "upstream_queued"
    cause: ClassVar[Cause] = "queued"


def _is_client_error(err: UpstreamError) -> bool:
    """A 4xx that says the request is bad, or that this target cannot serve it."""
    return (
        isinstance(err, UpstreamStatusError)
        and 400 <= err.upstream_status < 500
        and (not err.retryable or err.rejection is not None)
    )


def upstream_error_fields(body: bytes) -> dict[str, Any] | None:
    """The OpenAI `error` fields (message, type, code) of an upstream's error body,
    redacted; None if the body has none. vLLM's older flat shape is read too."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    error = parsed.get("error")
    if not isinstance(error, dict):
        error = parsed if parsed.get("object") == "error" else None
    if error is None or not isinstance(error.get("message"), str):
        return None
    fields: dict[str, Any] = {"message": redact(error["message"])}
    for name in ("type", "code"):
        value = error.get(name)
        fields[name] = redact(value)[:100] if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            fields[name] = value
    return fields


class AllTargetsFailed(FirstTokenError):
    """Every attempt failed. The status follows the failures: the upstreams' own 4xx
    when every attempt was refused as a bad request (or one this target cannot serve);
    504 when all timed out; else 502."""

    type = "upstream_error"
    code = "all_targets_failed"

    def __init__(self, message: str, failures: Sequence[UpstreamError]) -> None:
        super().__init__(message)
        self.failures = tuple(failures)
        client = [f for f in self.failures if _is_client_error(f)]
        bad_request = [f for f in client if not f.retryable]
        #: the 4xx the client gets: a bad request (even beside other failures: a
        #: hedge's), or the last refusal when every target refused
        self.client_error: UpstreamStatusError | None = None
        if bad_request:
            self.client_error = bad_request[-1]  # type: ignore[assignment]
        elif client and len(client) == len(self.failures):
            self.client_error = client[-1]  # type: ignore[assignment]
        if self.client_error is not None:
            self.status = self.client_error.upstream_status
            self.type = "invalid_request_error"
            self.code = "upstream_rejected_request"
        elif self.failures and all(isinstance(f, UpstreamTimeout) for f in self.failures):
            self.status = 504
            self.code = "upstream_timeout"
        else:
            self.status = 502

    def to_dict(self) -> dict[str, object]:
        if self.client_error is not None:
            # The upstream's explanation, as its OpenAI error fields only, redacted.
            fields = upstream_error_fields(self.client_error.body)
            if fields is not None:
                return {"error": fields}
        return super().to_dict()
