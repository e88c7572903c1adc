"""`firsttoken serve` as a process: SIGHUP reload, SIGTERM drain, metrics port, refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from router.sim.behaviour import Behaviour
from router.sim.openai_server import OpenAISim
from router.sim.ports import free_port
from tests.e2e.harness import LoopThread, target_yaml

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.fixture
def sims(loop_thread: LoopThread) -> Iterator[dict[str, OpenAISim]]:
    made: dict[str, OpenAISim] = {}

    async def up() -> None:
        for name in ("a", "b"):
            made[name] = OpenAISim(Behaviour(ttft_s=0.01, itl_s=0.05, tokens=30), model=name)
            await made[name].start()

    loop_thread.run(up())
    yield made

    async def down() -> None:
        for sim in made.values():
            await sim.stop()

    loop_thread.run(down())


def policy(sims: dict[str, OpenAISim], route: str, server: str = "") -> str:
    targets = "\n".join(target_yaml(n, s.base_url) for n, s in sims.items())
    return f"{server}\ntargets:\n{targets}\nroutes:\n  - name: chat\n    targets: [{route}]\n"


class Served:
    def __init__(
        self, path: Path, port: int, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "router.tools.cli",
                "serve",
                "--config",
                str(path),
                "--port",
                str(port),
                "--log-level",
                "warning",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()[0]
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("the router did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def target_of(url: str) -> str:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=CHAT) as response:
        response.read()
        return response.headers["x-firsttoken-target"]


def test_sighup_reloads_and_sigterm_drains_in_flight_streams(
    sims: dict[str, OpenAISim], tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy(sims, "a", "server: {drain_s: 10}"))
    served = Served(path, free_port())
    try:
        served.wait_ready()
        assert target_of(served.url) == "a"
        path.write_text(policy(sims, "b", "server: {drain_s: 10}"))
        served.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while target_of(served.url) != "b":
            assert time.monotonic() < deadline, "SIGHUP did not reload the policy"

        # Two streams of 30 tokens x 50 ms are in flight when SIGTERM arrives.
        bodies: list[bytes] = []

        def stream() -> None:
            with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=CHAT) as r:
                bodies.append(r.read())

        workers = [threading.Thread(target=stream) for _ in range(2)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 10
        while 'firsttoken_inflight{target="b"} 2.0' not in httpx.get(f"{served.url}/metrics").text:
            assert time.monotonic() < deadline, "the two streams never reached the router"
            time.sleep(0.02)
        served.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while httpx.get(f"{served.url}/readyz").status_code != 503:
            assert time.monotonic() < deadline, "readiness did not turn false"
            time.sleep(0.02)
        refused = httpx.post(f"{served.url}/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "draining"
        assert "retry-after" in refused.headers
        for w in workers:
            w.join(10)
        assert served.proc.wait(10) == 0
        assert len(bodies) == 2
        for body in bodies:
            assert body.endswith(b"data: [DONE]\n\n")
            assert body.count(b'"content":"t') == 30
    finally:
        served.stop()


def test_metrics_on_their_own_port(sims: dict[str, OpenAISim], tmp_path: Path) -> None:
    metrics_port = free_port()
    path = tmp_path / "policy.yaml"
    path.write_text(policy(sims, "a", f"server: {{metrics_port: {metrics_port}, drain_s: 0}}"))
    served = Served(path, free_port())
    try:
        served.wait_ready()
        target_of(served.url)
        scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert scrape.status_code == 200
        assert 'firsttoken_requests_total{outcome="ok",route="chat",target="a"} 1.0' in scrape.text
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/v1/models").status_code == 404
    finally:
        served.stop()


def test_serve_refuses_a_public_bind_without_auth(
    sims: dict[str, OpenAISim], tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy(sims, "a"))
    served = Served(path, free_port(), "--host", "0.0.0.0")
    out, _ = served.proc.communicate(timeout=20)
    assert served.proc.returncode == 1
    assert "refusing to bind 0.0.0.0" in out and "--insecure-public" in out


def test_serve_names_a_missing_secret_and_exits_1(
    sims: dict[str, OpenAISim], tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    text = policy(sims, "a").replace(
        "model: a-model", "model: a-model\n    api_key_env: FT_TEST_MISSING_KEY"
    )
    path.write_text(text)
    served = Served(path, free_port())
    out, _ = served.proc.communicate(timeout=20)
    assert served.proc.returncode == 1
    assert "FT_TEST_MISSING_KEY" in out and "is not set" in out
