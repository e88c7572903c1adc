"""`response_model`: the `model` of answers, seen through the official `openai` SDK."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from router.sim.behaviour import Behaviour
from router.turn.model_name import ModelRename
from tests.e2e.harness import Fleet, LoopThread, start_fleet, stop_fleet

#: what the upstream says it is (the simulator echoes the `model` the target sends)
UPSTREAM = "a-model"
ROUTES = """\
routes:
  - name: chat
    targets: [a]
  - name: voice
    targets: [a]
    response_model: route
"""
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def fleet(loop_thread: LoopThread) -> Iterator[Fleet]:
    fleet = start_fleet(loop_thread, {"a": Behaviour(ttft_s=0.0, itl_s=0.0, tokens=6)}, ROUTES)
    yield fleet
    stop_fleet(fleet)


@pytest.fixture
def client(fleet: Fleet) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fleet.router.base_url, api_key="x", max_retries=0) as c:
        yield c


@pytest.mark.parametrize(("route", "expected"), [("chat", UPSTREAM), ("voice", "voice")])
def test_every_chunk_names_the_model_the_route_promises(
    client: openai.OpenAI, route: str, expected: str
) -> None:
    stream = client.chat.completions.create(
        model=route, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert len(chunks) >= 6  # role, content ..., finish, usage
    assert {c.model for c in chunks} == {expected}
    assert chunks[-1].usage is not None  # the usage chunk was rewritten too


@pytest.mark.parametrize(("route", "expected"), [("chat", UPSTREAM), ("voice", "voice")])
def test_a_unary_answer_names_the_model_the_route_promises(
    client: openai.OpenAI, route: str, expected: str
) -> None:
    answer = client.chat.completions.create(model=route, messages=MESSAGES)
    assert answer.model == expected
    assert answer.choices[0].message.content


def test_the_rename_is_a_bytes_substitution_that_spares_generated_text() -> None:
    head = b'data: {"id":"1","model":"m-1","choices":[{"delta":{"role":"assistant"}}]}\n\n'
    rename = ModelRename.learn(head, 'r"1')
    assert rename is not None
    assert rename(head) == head.replace(b'"model":"m-1"', b'"model":"r\\"1"')
    text = b'data: {"model":"m-1","choices":[{"delta":{"content":"\\"model\\":\\"m-1\\""}}]}\n\n'
    assert rename(text) == text.replace(b'{"model":"m-1"', b'{"model":"r\\"1"', 1)
    assert rename(text).count(b"m-1") == 1  # the one inside the content is left alone
    spaced = b'{"id": "1", "model": "m-1", "choices": []}'
    assert ModelRename.learn(spaced, "r") is not None
    assert ModelRename.learn(b'{"id":"1"}', "r") is None
