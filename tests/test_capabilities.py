"""What each target serves, in the policy file: defaults per kind, declarations each
kind may make, and a wrong declaration caught with its line and field."""

from __future__ import annotations

import pytest

from router.config import parse_config
from router.errors import ConfigError

FILE = """\
targets:
  - {name: hosted, kind: openai, base_url: "https://api.example.com/v1", model: m}
  - {name: engine, kind: vllm, base_url: "http://127.0.0.1:8001/v1", model: m}
  - name: embedder
    kind: vllm
    base_url: http://127.0.0.1:8002/v1
    model: bge-small
    capabilities: [embeddings]
  - {name: bridged, kind: litellm, model: "anthropic/claude-3-5-haiku-latest"}
routes:
  - {name: r, targets: [hosted, engine, embedder, bridged]}
"""


def test_each_kind_serves_its_defaults_and_a_declaration_replaces_them() -> None:
    config = parse_config(FILE)
    serves = {t.name: t.serves for t in config.targets}
    assert serves == {
        "hosted": ("chat", "completions", "responses", "embeddings", "moderations"),
        "engine": ("chat", "completions", "responses"),
        "embedder": ("embeddings",),
        "bridged": ("chat", "responses"),
    }


@pytest.mark.parametrize(
    ("declared", "says"),
    [
        (
            "[completions]",
            "a 'litellm' target cannot serve completions (it may: chat, responses, embeddings)",
        ),
        ("[]", "capabilities is a non-empty list"),
        ("[chat, speech]", "a 'litellm' target cannot serve speech"),
    ],
)
def test_a_declaration_the_kind_cannot_serve_is_named_with_its_line(
    declared: str, says: str
) -> None:
    text = FILE.replace(
        'model: "anthropic/claude-3-5-haiku-latest"}',
        f'model: "anthropic/claude-3-5-haiku-latest", capabilities: {declared}}}',
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "policies/x.yaml")
    messages = [str(issue) for issue in info.value.issues]
    assert any(
        m.startswith("policies/x.yaml:9 targets[3].capabilities") and says in m for m in messages
    ), messages
