"""Logs for operators: what changed and what went wrong, not what is polled.

    setup_logging("info", "json")      # once, by `firsttoken serve`
    log_turn(result, client="voice-app", request_id="...", enabled=True)

At INFO the router says what an operator acts on (start, reload, drain, a target
failing, a stream cut); background polling (engine scrapes through httpx,
aiohttp's and Redis' own chatter) shows only at DEBUG. `server.access_log: true`
adds one INFO line per turn (`firsttoken.access`), with the route, target,
outcome, TTFT, attempts, hedge and fallback flags and the client key's *name*
(never the key). With `--log-format json` every line, uvicorn's included, is one
JSON object: `time`, `level`, `logger`, `message`, and a turn's fields as keys.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from router.turn.types import TurnResult

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

#: libraries whose INFO lines are per request of background polling (an engine's
#: /metrics four times a second): shown only when the router logs at DEBUG
CHATTY = ("httpx", "httpcore", "aiohttp.access", "aiohttp.client", "redis", "hpack")

access_log = logging.getLogger("firsttoken.access")
_turn_log = logging.getLogger("firsttoken.server")

#: the attribute of a LogRecord that carries structured fields (`extra={FIELDS: {...}}`)
FIELDS = "fields"

_RESERVED = frozenset(("time", "level", "logger", "message", "exc"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a record's structured fields become keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, Mapping):
            out.update((k, v) for k, v in fields.items() if k not in _RESERVED)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler `setup_logging` installs (and replaces when called again)."""


def setup_logging(level: str, fmt: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger for the process; a second call replaces the first's
    handler (and leaves any other alone, such as a test runner's)."""
    handler = _Handler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    quiet_below = logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
    for name in CHATTY:
        logging.getLogger(name).setLevel(quiet_below)


def turn_fields(
    result: TurnResult, *, client: str | None, request_id: str, status: int
) -> dict[str, Any]:
    return {
        "route": result.route,
        "target": result.target,
        "outcome": result.outcome,
        "status": status,
        "ttft_ms": None if result.ttft_s is None else round(result.ttft_s * 1000, 1),
        "attempts": result.attempts,
        "hedged": result.hedged,
        "fell_back": result.fell_back,
        "client": client,
        "request_id": request_id,
    }


def log_turn(
    result: TurnResult,
    *,
    client: str | None,
    request_id: str,
    status: int = 200,
    enabled: bool,
) -> None:
    """The turn's one line: INFO on `firsttoken.access` when the access log is on,
    else DEBUG on `firsttoken.server`."""
    logger, level = (access_log, logging.INFO) if enabled else (_turn_log, logging.DEBUG)
    if not logger.isEnabledFor(level):
        return
    fields = turn_fields(result, client=client, request_id=request_id, status=status)
    text = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
    logger.log(level, "turn %s", text, extra={FIELDS: fields})


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
