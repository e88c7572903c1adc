"""A cascade's turn kept within the LLM's context (`router.voice.fit`)."""

from __future__ import annotations

from router.voice.fit import retention_ratio, shorter


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


def test_a_retention_ratio_keeps_the_newest_share_of_the_text() -> None:
    system = {"role": "system", "content": "be brief"}
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "x" * 90} for i in range(10)
    ]
    body = {"messages": [system, *turns]}
    cut = shorter(body, 0.8)
    assert cut is not None and cut["messages"][0] == system
    assert cut["messages"][1:] == turns[2:]  # 8 of 10 equal turns: 80 % of the text
    assert shorter(body, 0.3)["messages"][1:] == turns[-2:]  # type: ignore[index]
    # a share that would keep everything still drops the oldest turn (then starts at a user)
    assert shorter(body, 0.99)["messages"][1:] == turns[2:]  # type: ignore[index]
    # the newest turn stays even when it alone is over the share
    long = [*turns[:-2], {"role": "user", "content": "y" * 5000}]
    assert shorter({"messages": long}, 0.5)["messages"] == long[-1:]  # type: ignore[index]


def test_only_a_ratio_between_zero_and_one_is_a_retention_ratio() -> None:
    assert retention_ratio({"type": "retention_ratio", "retention_ratio": 0.8}) == 0.8
    for bad in (
        "auto",
        None,
        {"type": "retention_ratio"},
        {"type": "retention_ratio", "retention_ratio": 1.5},
        {"type": "retention_ratio", "retention_ratio": True},
    ):
        assert retention_ratio(bad) is None
