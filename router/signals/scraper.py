"""Scraping a vLLM engine's Prometheus `/metrics` every interval (`run`), bounded in
size and time; each good page parsed (`engine.parse_metrics`) goes to the engine's
tracker, each failure is told by its kind (`failure_of`: counted in
`firsttoken_engine_scrape_failures_total` and shown in `/admin/targets`, so a stale
engine says why it is stale)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import anyio
import httpx

from router.signals.engine import EngineSample, parse_metrics
from router.vocabulary import ScrapeFailure

log = logging.getLogger(__name__)

#: the largest /metrics page read (vLLM's is tens of KiB; histograms per LoRA grow it)
MAX_SCRAPE_BYTES = 8 * 1024 * 1024


async def scrape(client: httpx.AsyncClient, url: str, *, timeout_s: float = 1.0) -> EngineSample:
    """Fetch and parse one /metrics page (at most `MAX_SCRAPE_BYTES`); raises
    httpx.HTTPError or ValueError."""
    async with client.stream("GET", url, timeout=timeout_s) as response:
        response.raise_for_status()
        parts: list[bytes] = []
        size = 0
        async for part in response.aiter_bytes():
            size += len(part)
            if size > MAX_SCRAPE_BYTES:
                raise ValueError(f"a /metrics page larger than {MAX_SCRAPE_BYTES} bytes")
            parts.append(part)
    return parse_metrics(b"".join(parts).decode("utf-8", errors="replace"))


def failure_of(exc: Exception) -> ScrapeFailure:
    """What kind of failure a scrape's exception is (`ScrapeFailure`)."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    if isinstance(exc, httpx.HTTPStatusError):
        return "status"
    if isinstance(exc, ValueError):
        return "page"
    if isinstance(exc, httpx.HTTPError):
        return "transport"
    return "unexpected"


async def run(
    client: httpx.AsyncClient,
    url: str,
    interval_s: float,
    sink: Callable[[EngineSample], None],
    *,
    timeout_s: float = 1.0,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    failed: Callable[[ScrapeFailure], None] | None = None,
) -> NoReturn:
    """Scrape `url` every `interval_s` forever, pushing each good sample into `sink`.

    Meant for an anyio task group (`tg.start_soon(run, client, url, 0.25,
    signals.engine_update)`). A failed scrape is logged at debug, told to `failed` (its
    kind), and leaves the old stats to age into staleness; only cancellation ends the
    loop.
    """
    while True:
        try:
            sample = await scrape(client, url, timeout_s=timeout_s)
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("scrape of %s failed: %r", url, exc)
            if failed is not None:
                failed(failure_of(exc))
        except Exception:
            # Any transport's surprise must not end the scraper; it is a bug to see.
            log.warning("scrape of %s failed unexpectedly", url, exc_info=True)
            if failed is not None:
                failed("unexpected")
        else:
            sink(sample)
        await sleep(interval_s)
