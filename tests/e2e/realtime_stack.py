"""The realtime end-to-end rig: two Realtime simulators behind a router with client
keys (`config`), as the `stack` fixture (tests/e2e/conftest.py) starts it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from openai import AsyncOpenAI

from router.sim.realtime import RealtimeSim
from router.sim.realtime_behaviour import RealtimeBehaviour
from tests.e2e.harness import RunningRouter, start_router, stop_router

KEY = "sk-client-voice"
LIMITED = "sk-client-limited"
TEXT_ONLY = "sk-client-text"
MINUTES = "sk-client-minutes"
UPSTREAM_KEY = "sk-upstream"
USER = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}


def config(a: RealtimeSim, b: RealtimeSim, extra_route: str = "") -> str:
    price = (
        "{audio_input: 32, audio_output: 64, text_input: 4, text_output: 24, cached_input: 0.4,"
        " transcription: {per_minute: 0.006}}"
    )
    return f"""
auth:
  admin_key_env: KEY_ADMIN
  keys:
    - {{name: voice, key_env: KEY_VOICE}}
    - {{name: limited, key_env: KEY_LIMITED, max_sessions: 1}}
    - {{name: text, key_env: KEY_TEXT, routes: [chat]}}
    - {{name: minutes, key_env: KEY_MINUTES, session_minutes: 0.01}}
targets:
  - {{name: rt-a, kind: realtime, base_url: '{a.base_url}', model: gpt-realtime,
      api_key_env: UPSTREAM, price: {price}, timeouts: {{connect_s: 0.5}}}}
  - {{name: rt-b, kind: realtime, base_url: 'ws://127.0.0.1:{b.port}/v1', model: gpt-realtime,
      api_key_env: UPSTREAM, price: {price}, headers: {{x-team: voice}}}}
  - {{name: text-sim, kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m}}
routes:
  - {{name: voice, targets: [rt-a, rt-b], policy: {{type: ordered}}, session: {{idle_s: 5}}}}
  - {{name: chat, targets: [text-sim]}}
{extra_route}"""


ENVIRON = {
    "KEY_ADMIN": "sk-admin",
    "KEY_VOICE": KEY,
    "KEY_LIMITED": LIMITED,
    "KEY_TEXT": TEXT_ONLY,
    "KEY_MINUTES": MINUTES,
    "UPSTREAM": UPSTREAM_KEY,
}


@dataclass
class Stack:
    a: RealtimeSim
    b: RealtimeSim
    router: RunningRouter

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.router.port}/v1/realtime?model=voice"

    def sdk(self, key: str = KEY) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.router.base_url, api_key=key)

    def metric(self, name: str, **labels: str) -> float:
        value = self.router.router.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


@asynccontextmanager
async def running_stack(
    extra_route: str = "", config_text: Callable[[RealtimeSim, RealtimeSim], str] | None = None
) -> AsyncIterator[Stack]:
    """The two simulators and a router; `config_text` builds its YAML (default: `config`)."""
    behaviour = RealtimeBehaviour(ttfa_s=0.01, response_audio_ms=60)
    async with (
        RealtimeSim(behaviour, api_key=UPSTREAM_KEY) as a,
        RealtimeSim(behaviour, api_key=UPSTREAM_KEY) as b,
    ):
        text = config(a, b, extra_route) if config_text is None else config_text(a, b)
        router = await start_router(text, environ=ENVIRON)
        try:
            yield Stack(a, b, router)
        finally:
            await stop_router(router)
