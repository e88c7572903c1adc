"""`firsttoken serve`'s logs as an operator reads them: polling stays at DEBUG, the
access log is one line per turn, `--log-format json` is one object per line."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from router.sim.behaviour import Behaviour
from router.sim.engine import EngineParams
from router.sim.ports import free_port
from router.sim.vllm import VllmSim
from tests.e2e.harness import LoopThread, target_yaml
from tests.e2e.test_serve import Served

SECRET = "sk-logs-test-0123456789abcdef"


@pytest.fixture
def engine(loop_thread: LoopThread) -> Iterator[VllmSim]:
    params = EngineParams(max_num_seqs=4, step_s=0.002, step_s_per_seq=0.0)
    sim = VllmSim(params, Behaviour(tokens=5), model="sim-llama")
    loop_thread.run(sim.start())
    yield sim
    loop_thread.run(sim.stop())


def policy(tmp_path: Path, engine: VllmSim, *, access_log: bool) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"server: {{access_log: {str(access_log).lower()}, drain_s: 0}}\n"
        "signals: {engine_scrape_interval_s: 0.05}\n"  # twenty scrapes a second
        "auth:\n  keys:\n    - {name: voice-app, key_env: LOGS_TEST_KEY}\n"
        f"targets:\n{target_yaml('local', engine.base_url, kind='vllm')}\n"
        "routes:\n  - name: chat\n    targets: [local]\n"
    )
    return path


def serve_and_talk(path: Path, *args: str) -> list[str]:
    """Serve, stream one turn, ask one unary and one of an unknown route, let the
    scraper run, stop: the log."""
    served = Served(path, free_port(), *args, env={"LOGS_TEST_KEY": SECRET})
    try:
        served.wait_ready()
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=SECRET, max_retries=0)
        messages: list[openai.types.chat.ChatCompletionMessageParam] = [
            {"role": "user", "content": "hi"}
        ]
        for _ in client.chat.completions.create(model="chat", messages=messages, stream=True):
            pass
        client.chat.completions.create(model="chat", messages=messages)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="chat-fats", messages=messages)
        client.close()
        time.sleep(0.5)  # ten more scrapes
        served.proc.send_signal(signal.SIGTERM)
        out, _ = served.proc.communicate(timeout=20)
    finally:
        served.stop()
    return [line for line in out.splitlines() if line.strip()]


def test_json_logs_one_line_per_turn_without_polling_or_the_key(
    engine: VllmSim, tmp_path: Path
) -> None:
    lines = serve_and_talk(
        policy(tmp_path, engine, access_log=True), "--log-level", "info", "--log-format", "json"
    )
    records = [json.loads(line) for line in lines]  # every line, uvicorn's too, is JSON
    assert {"time", "level", "logger", "message"} <= set(records[0])
    turns = [r for r in records if r["logger"] == "firsttoken.access"]
    assert len(turns) == 3, lines
    refused = turns.pop()  # a turn that never reached a target has its line too
    assert (refused["route"], refused["status"], refused["outcome"]) == ("chat-fats", 404, "error")
    assert refused["target"] is None and refused["client"] == "voice-app"
    for turn in turns:
        assert turn["level"] == "info"
        assert (turn["route"], turn["target"], turn["outcome"]) == ("chat", "local", "ok")
        assert (turn["attempts"], turn["hedged"], turn["fell_back"]) == (1, False, False)
        assert turn["client"] == "voice-app"
        assert turn["status"] == 200
    assert turns[0]["ttft_ms"] > 0  # the streamed turn has a first token
    text = "\n".join(lines)
    assert SECRET not in text
    # Forty scrapes of the engine's /metrics ran, and none of them was logged.
    assert "/metrics" not in text
    assert "HTTP Request" not in text


def test_debug_shows_the_polling_and_each_turn(engine: VllmSim, tmp_path: Path) -> None:
    lines = serve_and_talk(policy(tmp_path, engine, access_log=False), "--log-level", "debug")
    text = "\n".join(lines)
    assert f"HTTP Request: GET {engine.url}/metrics" in text
    turns = [line for line in lines if " DEBUG firsttoken.server: turn route=chat" in line]
    assert len(turns) == 3, text
    assert "client=voice-app" in turns[0]
    assert "firsttoken.access" not in text
    assert SECRET not in text
