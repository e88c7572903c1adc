"""Real servers on 127.0.0.1 for e2e tests: simulator upstreams and the router itself.

Everything runs on one event loop in a background thread, so tests can drive it
with the official `openai` SDK, sync or async, exactly as a user would, and read
the simulators' request records to see what the upstreams saw.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pytest
import uvicorn

from router.config import parse_config
from router.gateway.server import Server
from router.gateway.serving import _config as serving_config
from router.runtime import Router
from router.sim.behaviour import Behaviour
from router.sim.openai_server import OpenAISim
from router.sim.server import SimServer

T = TypeVar("T")

#: litellm 1.106.2 leaves one coroutine of its Anthropic handler un-awaited on the first
#: call of a process (seen with LitellmUpstream alone, too): modules that drive an
#: Anthropic target through litellm mark themselves with these
LITELLM_FIRST_CALL_WARNINGS = [
    pytest.mark.filterwarnings(
        "ignore:coroutine 'AnthropicChatCompletion.completion.<locals>.acompletion_dispatch'"
        " was never awaited:RuntimeWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <coroutine object AnthropicChatCompletion.completion"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]


class LoopThread:
    """An asyncio loop running forever in a daemon thread (tests only)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int:
        """The loop thread's id (`threading.get_ident()` inside it)."""
        assert self._thread.ident is not None
        return self._thread.ident

    @property
    def native_id(self) -> int:
        """The loop thread's id in the kernel (/proc/self/task/ID)."""
        assert self._thread.native_id is not None
        return self._thread.native_id

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll `check` from the test's thread (the servers' loop stays free to answer it,
    e.g. a scrape of the router) until true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def wait_until(loop: LoopThread, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll `predicate` on the servers' loop until true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if loop.call(predicate):
            return True
        time.sleep(0.005)
    return False


@dataclass
class RunningRouter:
    router: Router
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


async def start_router(
    config_text: str, *, environ: Mapping[str, str] | None = None, config_path: str | None = None
) -> RunningRouter:
    config = parse_config(config_text, config_path or "<test>")
    router = Router(config, environ=environ or {}, config_path=config_path)
    app = Server(router, reload=router.reload_from_file)
    # `firsttoken serve`'s own uvicorn settings and HTTP protocol (gateway/serving.py,
    # gateway/protocol.py), so every e2e test runs what users run
    settings = serving_config(app, "127.0.0.1", 0, "warning", "on")
    settings.timeout_graceful_shutdown = 1
    server = uvicorn.Server(settings)
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningRouter(router, server, task, port)


async def stop_router(running: RunningRouter) -> None:
    running.server.should_exit = True
    await asyncio.wait_for(running.task, 10)


@dataclass
class Fleet:
    """Simulators by name plus a router in front of them."""

    loop: LoopThread
    sims: dict[str, SimServer] = field(default_factory=dict)
    running: RunningRouter | None = None

    @property
    def router(self) -> RunningRouter:
        assert self.running is not None
        return self.running

    def sim(self, name: str) -> SimServer:
        return self.sims[name]

    def set_behaviour(self, name: str, behaviour: Behaviour) -> None:
        self.loop.run(self.sims[name].set_behaviour(behaviour))

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        return wait_until(self.loop, predicate, timeout)


def target_yaml(name: str, base_url: str, kind: str = "openai", extra: str = "") -> str:
    lines = [
        f"  - name: {name}",
        f"    kind: {kind}",
        f"    base_url: {base_url}",
        f"    model: {name}-model",
    ]
    lines += [f"    {line}" for line in extra.strip().splitlines()]
    return "\n".join(lines)


def start_fleet(
    loop: LoopThread,
    behaviours: Mapping[str, Behaviour | SimServer],
    routes_yaml: str,
    *,
    target_extra: Mapping[str, str] | None = None,
    kinds: Mapping[str, str] | None = None,
    header: str = "",
    environ: Mapping[str, str] | None = None,
) -> Fleet:
    """Start one simulator per name (an OpenAISim for a bare Behaviour) and a router."""
    fleet = Fleet(loop)

    async def up() -> None:
        for name, behaviour in behaviours.items():
            sim = (
                behaviour
                if isinstance(behaviour, SimServer)
                else OpenAISim(behaviour, model=f"{name}-model")
            )
            await sim.start()
            fleet.sims[name] = sim
        targets = "\n".join(
            target_yaml(
                n, s.base_url, (kinds or {}).get(n, "openai"), (target_extra or {}).get(n, "")
            )
            for n, s in fleet.sims.items()
        )
        text = f"{header}\ntargets:\n{targets}\n{routes_yaml}"
        fleet.running = await start_router(text, environ=environ)

    loop.run(up())
    return fleet


def stop_fleet(fleet: Fleet) -> None:
    async def down() -> None:
        if fleet.running is not None:
            await stop_router(fleet.running)
        for sim in fleet.sims.values():
            await sim.stop()

    fleet.loop.run(down())


# -- any mix of servers (OpenAI-compatible, hosted-like, Anthropic-protocol) ---------------


class Startable(Protocol):
    """A simulator the harness can start and stop (`SimServer`, `AnthropicSim`, ...)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


S = TypeVar("S", bound=Startable)


@dataclass
class MixedFleet:
    """Simulators of any kind by name, and a router whose config was written after they
    started (so it can name their ports)."""

    loop: LoopThread
    servers: dict[str, Startable] = field(default_factory=dict)
    running: RunningRouter | None = None

    @property
    def router(self) -> RunningRouter:
        assert self.running is not None
        return self.running

    def server(self, name: str, kind: type[S]) -> S:
        server = self.servers[name]
        assert isinstance(server, kind)
        return server

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        return wait_until(self.loop, predicate, timeout)


async def warm_up(running: RunningRouter) -> None:
    """Warm every upstream that can be warmed (litellm's first call costs ~0.4 s),
    as the app's lifespan should before it reports ready."""
    for target in running.router.runtime.targets.values():
        warm = getattr(target.upstream, "warm_up", None)
        if warm is not None:
            await warm()


def start_mixed_fleet(
    loop: LoopThread,
    servers: Mapping[str, Startable],
    config: Callable[[Mapping[str, Startable]], str],
    *,
    environ: Mapping[str, str] | None = None,
    warm: bool = True,
) -> MixedFleet:
    """Start `servers`, then a router on `config(servers)` (called once they listen)."""
    fleet = MixedFleet(loop)

    async def up() -> None:
        for name, server in servers.items():
            await server.start()
            fleet.servers[name] = server
        fleet.running = await start_router(config(fleet.servers), environ=environ)
        if warm:
            await warm_up(fleet.running)

    loop.run(up())
    return fleet


def stop_mixed_fleet(fleet: MixedFleet) -> None:
    async def down() -> None:
        if fleet.running is not None:
            await stop_router(fleet.running)
        for server in fleet.servers.values():
            await server.stop()

    fleet.loop.run(down())
