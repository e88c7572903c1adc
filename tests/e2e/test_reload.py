"""Hot reload: a valid file swaps in atomically, an invalid one changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from router.sim.behaviour import Behaviour
from router.sim.openai_server import OpenAISim
from tests.e2e.harness import (
    LoopThread,
    RunningRouter,
    start_router,
    stop_router,
    target_yaml,
    wait_until,
)

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


class Reloadable:
    def __init__(self, loop: LoopThread, path: Path) -> None:
        self.loop = loop
        self.path = path
        self.sims: dict[str, OpenAISim] = {}
        self.running: RunningRouter | None = None

    def policy(self, route_targets: str) -> str:
        targets = "\n".join(target_yaml(n, s.base_url) for n, s in self.sims.items())
        return f"targets:\n{targets}\nroutes:\n  - name: chat\n    targets: [{route_targets}]\n"

    def write(self, text: str) -> None:
        self.path.write_text(text)

    @property
    def router(self) -> RunningRouter:
        assert self.running is not None
        return self.running


@pytest.fixture
def rig(loop_thread: LoopThread, tmp_path: Path) -> Iterator[Reloadable]:
    rig = Reloadable(loop_thread, tmp_path / "policy.yaml")

    async def up() -> None:
        for name in ("a", "b"):
            rig.sims[name] = OpenAISim(Behaviour(ttft_s=0.01, itl_s=0.02, tokens=25), model=name)
            await rig.sims[name].start()
        rig.write(rig.policy("a"))
        rig.running = await start_router(rig.path.read_text(), config_path=str(rig.path))

    loop_thread.run(up())
    yield rig

    async def down() -> None:
        await stop_router(rig.router)
        for sim in rig.sims.values():
            await sim.stop()

    loop_thread.run(down())


def stream_to(rig: Reloadable) -> tuple[str, str]:
    c = openai.OpenAI(base_url=rig.router.base_url, api_key="unused", max_retries=0)
    with c.chat.completions.with_streaming_response.create(
        model="chat", messages=MESSAGES, stream=True
    ) as response:
        text = "".join(ch.choices[0].delta.content or "" for ch in response.parse() if ch.choices)
        return response.headers["x-firsttoken-target"], text


FULL = "".join(f"t{i} " for i in range(25))


def test_reload_swaps_routes_while_a_stream_finishes_on_the_old_plan(rig: Reloadable) -> None:
    assert stream_to(rig) == ("a", FULL)
    signals_a = rig.loop.call(lambda: rig.router.router.runtime.signals["a"])
    in_flight: list[tuple[str, str]] = []
    worker = threading.Thread(target=lambda: in_flight.append(stream_to(rig)))
    worker.start()
    assert wait_until(rig.loop, lambda: rig.router.router.active_turns > 0)
    rig.write(rig.policy("b, a"))
    response = httpx.post(f"{rig.router.url}/admin/reload", json={})
    assert response.status_code == 200
    assert stream_to(rig)[0] == "b"
    worker.join(10)
    assert in_flight == [("a", FULL)]  # the stream begun before the reload is whole
    # Live signals of a target that still exists survive the reload.
    assert rig.loop.call(lambda: rig.router.router.runtime.signals["a"]) is signals_a


def test_an_invalid_file_is_rejected_with_file_line_errors_and_nothing_changes(
    rig: Reloadable,
) -> None:
    rig.write(rig.policy("a") + "    bogus_key: 1\n")
    response = httpx.post(f"{rig.router.url}/admin/reload", json={})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config"
    assert f"{rig.path}:" in error["message"] and "unknown key 'bogus_key'" in error["message"]
    assert stream_to(rig) == ("a", FULL)  # the old config keeps serving
    scrape = httpx.get(f"{rig.router.url}/metrics").text
    assert 'firsttoken_config_reloads_total{outcome="invalid"} 1.0' in scrape


def test_a_reload_needs_a_json_body_so_no_web_page_can_send_one(rig: Reloadable) -> None:
    rig.write(rig.policy("b"))
    url = f"{rig.router.url}/admin/reload"
    # A form post or a text/plain beacon (no preflight), or an empty JSON POST: refused.
    assert httpx.post(url).status_code == 415
    assert httpx.post(url, content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    empty = httpx.post(url, headers={"content-type": "application/json"})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "invalid_request"
    assert stream_to(rig)[0] == "a"  # nothing was reloaded
    assert httpx.post(url, json={}).status_code == 200
    assert stream_to(rig)[0] == "b"
