"""Why a vLLM engine's stats are stale: failed scrapes of its /metrics, counted by reason
(`firsttoken_engine_scrape_failures_total`) and shown beside its age in /admin/targets."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest
from aiohttp import web

from router.config import parse_config
from router.sim.vllm import VllmSim
from tests.e2e.harness import RunningRouter, start_router, stop_router

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def engines(router: RunningRouter) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        targets = (await client.get(f"{router.base_url.removesuffix('/v1')}/admin/targets")).json()
    return {t["name"]: t["engine"] for t in targets["targets"]}


async def failures(router: RunningRouter, target: str, reason: str) -> float:
    value = router.router.metrics.registry.get_sample_value(
        "firsttoken_engine_scrape_failures_total", {"target": target, "reason": reason}
    )
    return value or 0.0


async def test_failed_scrapes_say_why_an_engine_is_stale() -> None:
    # One engine's /metrics is on a port nobody listens on; another's answers 503, then
    # its real page. Each failure is counted by its reason, the admin view shows how many
    # since the last good scrape and why; the first good scrape clears both.
    page: dict[str, str | None] = {"text": None}

    async def metrics(_: web.Request) -> web.Response:
        if page["text"] is None:
            return web.Response(status=503, text="busy")
        return web.Response(text=page["text"])

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with VllmSim(model="m") as sim:
        text = (
            "signals: {engine_scrape_interval_s: 0.05}\n"
            "targets:\n"
            f"  - {{name: refused, kind: vllm, base_url: '{sim.base_url}', model: m,"
            f" metrics_url: 'http://127.0.0.1:{closed_port()}/metrics'}}\n"
            f"  - {{name: busy, kind: vllm, base_url: '{sim.base_url}', model: m,"
            f" metrics_url: 'http://127.0.0.1:{port}/metrics'}}\n"
            "routes:\n  - {name: chat, targets: [refused, busy]}\n"
        )
        router = await start_router(text)
        try:
            for _ in range(200):
                seen = await engines(router)
                if min(e["scrape_failures"] for e in seen.values()) >= 3:
                    break
                await asyncio.sleep(0.02)
            assert seen["refused"]["last_scrape_failure"] == "connect"
            assert seen["busy"]["last_scrape_failure"] == "status"
            assert seen["refused"]["stale"] and seen["busy"]["stale"]
            assert await failures(router, "refused", "connect") >= 3
            assert await failures(router, "busy", "status") >= 3
            assert await failures(router, "busy", "connect") == 0
            async with httpx.AsyncClient() as client:
                page["text"] = (
                    await client.get(f"{sim.base_url.removesuffix('/v1')}/metrics")
                ).text
            for _ in range(200):
                seen = await engines(router)
                if seen["busy"]["scrape_failures"] == 0:
                    break
                await asyncio.sleep(0.02)
            assert seen["busy"]["last_scrape_failure"] is None
            assert seen["busy"]["stale"] is False
            assert seen["refused"]["scrape_failures"] >= 3
        finally:
            await stop_router(router)
            await runner.cleanup()


async def test_a_reload_scrapes_the_engines_it_adds_and_the_urls_it_changes() -> None:
    # A reload adds a vLLM engine and moves another's /metrics: both are scraped from then
    # on (their stats fresh), not left stale, which the policies read as saturated.
    async with VllmSim(model="m") as first, VllmSim(model="m") as second:
        root = first.base_url.removesuffix("/v1")

        def config(*targets: str) -> str:
            return (
                "signals: {engine_scrape_interval_s: 0.05}\ntargets:\n"
                + "".join(f"  - {t}\n" for t in targets)
                + "routes:\n  - {name: chat, targets: [a]}\n"
            )

        a = f"{{name: a, kind: vllm, base_url: '{first.base_url}', model: m"
        router = await start_router(
            config(f"{a}, metrics_url: 'http://127.0.0.1:{closed_port()}/metrics'}}")
        )
        try:
            router.router.reload(
                parse_config(
                    config(
                        f"{a}, metrics_url: '{root}/metrics'}}",
                        f"{{name: b, kind: vllm, base_url: '{second.base_url}', model: m}}",
                    ),
                    "<reloaded>",
                )
            )
            for _ in range(200):
                seen = await engines(router)
                if not seen["a"]["stale"] and not seen["b"]["stale"]:
                    break
                await asyncio.sleep(0.02)
            assert seen["a"]["stale"] is False and seen["b"]["stale"] is False, seen
            assert seen["a"]["scrape_failures"] == 0
        finally:
            await stop_router(router)
