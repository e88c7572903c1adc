"""What the runtime's background work stands on: warming upstreams before traffic, and
guarding the tasks that must never end (an engine scraper, the retirer, the Redis
link, the SIGHUP watcher): one that ends or dies calls `on_dead` with the reason,
and the router takes the process down (`Router.die`), so Kubernetes restarts it
rather than keep a live process that never turns ready again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

import anyio

from router.turn.types import TargetRuntime

log = logging.getLogger("firsttoken")

#: the longest a target's warm-up may hold back readiness
WARM_UP_S = 10.0


async def guarded(
    on_dead: Callable[[str], None], name: str, fn: Callable[..., Awaitable[object]], *args: object
) -> None:
    """Run one background task; if it ever ends or dies, `on_dead(reason)`."""
    try:
        await fn(*args)
        reason = f"background task '{name}' ended"
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:
        log.critical("background task '%s' died", name, exc_info=exc)
        reason = f"background task '{name}' died: {type(exc).__name__}: {exc}"
    on_dead(reason)


async def warm_up(targets: Iterable[TargetRuntime]) -> None:
    """Pay each upstream's first-call cost (litellm: ~0.4 s) before traffic does."""
    for t in targets:
        with anyio.move_on_after(WARM_UP_S) as scope:
            try:
                await t.upstream.warm_up()
            except Exception as exc:  # a failed warm-up only costs the first turn
                log.warning("warm-up of %s failed: %s", t.config.name, type(exc).__name__)
        if scope.cancelled_caught:
            log.warning("warm-up of %s took over %gs; going on", t.config.name, WARM_UP_S)


async def while_needed(
    interval_s: float,
    needed: Callable[[], bool],
    wake: asyncio.Event,
    fn: Callable[[], Awaitable[object]],
) -> None:
    """`fn()` every `interval_s` while `needed()`, forever; otherwise asleep until `wake`
    is set (an idle router has no timer for it)."""
    while True:
        await wake.wait()
        wake.clear()
        while needed():
            await anyio.sleep(interval_s)
            await fn()
