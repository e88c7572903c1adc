"""A cascade's turn kept within the LLM's context (`router.voice.fit`)."""

from __future__ import annotations

from router.voice.fit import shorter


def test_the_older_half_goes_the_instructions_stay_and_the_rest_starts_with_the_user() -> None:
    system = {"role": "system", "content": "be brief"}
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}
    turns = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "1"},
        {"role": "user", "content": "two"},
        call,
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        {"role": "user", "content": "three"},
    ]
    body = {"model": "chat", "messages": [system, *turns]}
    cut = shorter(body)
    assert cut is not None and cut["model"] == "chat"
    # half of six turns from the end would start at the call's output: it starts at
    # the next user message instead, so no output is left without its call
    assert cut["messages"] == [system, {"role": "user", "content": "three"}]
    assert shorter(cut) is None  # one user turn left: nothing more to drop


def test_a_single_turn_cannot_be_shortened() -> None:
    assert shorter({"messages": [{"role": "user", "content": "hi"}]}) is None
