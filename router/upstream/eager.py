"""An upstream request's bytes leave in the step that sends it, on Python 3.11 too.

aiohttp writes a request's head and body in a task of its own (`write_bytes`). On
Python 3.12 and later it starts that task eagerly (`eager_start=True`): the bytes
are written at once, in the sending task's step, and the task ends there. On 3.11
there is no eager start: the write waits for the next turn of the loop, behind
every callback already queued. Under a burst that queue holds the other new
requests' parsing and planning, so each request's bytes wait for the work of every
request that arrived with it (measured at 64 streams: request in to upstream write
p50 0.79 ms, 0.54 with the write in the sending step; benchmarks/RESULTS.md).

`install` gives the serving loop a task factory that does, for that one coroutine
only, what `eager_start` does: run its first step at once, in a context of its own,
and return a finished future when the step finishes it (aiohttp then drops it, as
it drops an eagerly finished task), or a task that carries on from where it
yielded (a paused transport, `100-continue`). Every other coroutine gets the loop's
usual task. The coroutine is recognised by its code object (an identity check per
task created), so an aiohttp whose `write_bytes` moved simply goes back to the
plain task, and tests/upstream/test_eager.py, which sends through the aiohttp we
ship with, fails. Nothing is installed on 3.12 or later, where aiohttp does it
itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from aiohttp.client_reqrep import ClientRequest

#: the coroutine started eagerly: aiohttp's request write (None if aiohttp has none)
_write_bytes = getattr(ClientRequest, "write_bytes", None)
WRITE_CODE: object = getattr(_write_bytes, "__code__", None)

Factory = Callable[..., "asyncio.Future[Any]"]
#: what a task factory is given: a coroutine (or, on 3.11, a generator-based one)
Startable = Coroutine[Any, Any, Any] | Generator[Any, None, Any]


class _Rest:
    """The rest of a coroutine whose first step yielded `pending`: awaited by a task,
    it hands that task what the coroutine yielded and passes back what it is sent
    or thrown, as `await` does."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Startable, pending: object) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        self._pending = None
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancel (or anything thrown): the coroutine's
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = coro.send(value)
            except StopIteration as stop:
                return stop.value


async def _carry_on(rest: _Rest) -> Any:
    return await rest


def _started(
    loop: asyncio.AbstractEventLoop,
    coro: Startable,
    context: contextvars.Context | None,
) -> asyncio.Future[Any]:
    """Run `coro`'s first step now; a finished future if that ended it, else a task
    running the rest in the same context."""
    ctx = context if context is not None else contextvars.copy_context()
    done: asyncio.Future[Any]
    try:
        pending = ctx.run(coro.send, None)
    except StopIteration as stop:
        done = loop.create_future()
        done.set_result(stop.value)
        return done
    except asyncio.CancelledError:
        done = loop.create_future()
        done.cancel()
        return done
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        done = loop.create_future()
        done.set_exception(exc)
        return done
    return asyncio.Task(_carry_on(_Rest(coro, pending)), loop=loop, context=ctx)


def eager_factory(previous: Factory | None, code: object = WRITE_CODE) -> Factory:
    """A task factory that starts the coroutines of `code` eagerly and leaves every
    other one to `previous` (or the plain task)."""

    def factory(
        loop: asyncio.AbstractEventLoop,
        coro: Startable,
        context: contextvars.Context | None = None,
    ) -> asyncio.Future[Any]:
        if code is not None and getattr(coro, "cr_code", None) is code:
            return _started(loop, coro, context)
        if previous is not None:
            if context is None:
                return previous(loop, coro)
            return previous(loop, coro, context=context)
        return asyncio.Task(coro, loop=loop, context=context)

    return factory


def install(loop: asyncio.AbstractEventLoop) -> bool:
    """Start aiohttp's request writes eagerly on `loop`; whether anything was
    installed (not on Python 3.12+, where aiohttp starts them eagerly itself, nor
    with an aiohttp without `ClientRequest.write_bytes`)."""
    if sys.version_info >= (3, 12) or WRITE_CODE is None:
        return False
    loop.set_task_factory(eager_factory(loop.get_task_factory()))
    return True
