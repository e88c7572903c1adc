"""What a target serves: the OpenAI endpoints it answers, by kind and by declaration.

    targets:
      - name: embedder
        kind: vllm
        base_url: http://10.0.0.5:8000/v1
        model: bge-small
        capabilities: [embeddings]      # a vLLM started with an embedding model

Each kind has defaults (`DEFAULTS`) and a set it may declare (`ALLOWED`). A request
goes only to a route's targets that serve its endpoint; a route none of whose targets
serves it is a 400 that names the route and the endpoint (`not_served`), and
`/v1/models` lists what each route serves.

Defaults, and why:

- `openai` (OpenAI, Azure, Groq, OpenRouter, ...): chat, completions, responses,
  embeddings and moderations: OpenAI serves all five; a provider that lacks one
  answers 404 or 400, which a fallback passes over. Declare fewer to keep such
  requests from being tried. Only this kind serves moderations.
- `vllm`: chat, completions, responses. A vLLM server runs one model: one that
  generates, or one that embeds (declare `[embeddings]` for that one).
- `litellm`: chat and responses. litellm serves the Responses API for every
  provider: through the provider's own (OpenAI, Azure, xAI, `hosted_vllm/`), which
  stores responses for `previous_response_id`, or through its bridge to chat
  completions (Anthropic, Gemini, Bedrock, ...), which stores none, so such a
  target answers fresh requests and refuses follow-ups
  (router/upstream/litellm_responses.py). Embeddings are declared, as for vLLM: a
  litellm model either generates or embeds (`capabilities: [embeddings]` for
  `cohere/embed-english-v3.0`, `gemini/text-embedding-004`, ...). No legacy
  completions: litellm would turn a prompt into a chat turn and back.
- `realtime` and `cascade` serve Realtime sessions, `stt` and `tts` the audio
  endpoints; their kind is what they serve.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from router.errors import BadRequest

Capability = Literal[
    "chat", "completions", "responses", "embeddings", "moderations", "realtime", "stt", "tts"
]

#: the order capabilities are listed in (YAML, /v1/models, messages)
ORDER: tuple[Capability, ...] = (
    "chat",
    "completions",
    "responses",
    "embeddings",
    "moderations",
    "realtime",
    "stt",
    "tts",
)

#: the endpoint a client calls for each capability
PATHS: Mapping[Capability, str] = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
    "moderations": "/v1/moderations",
    "realtime": "/v1/realtime",
    "stt": "/v1/audio/transcriptions",
    "tts": "/v1/audio/speech",
}

DEFAULTS: Mapping[str, tuple[Capability, ...]] = {
    "openai": ("chat", "completions", "responses", "embeddings", "moderations"),
    "vllm": ("chat", "completions", "responses"),
    "litellm": ("chat", "responses"),
    "realtime": ("realtime",),
    "cascade": ("realtime",),
    "stt": ("stt",),
    "tts": ("tts",),
}

ALLOWED: Mapping[str, frozenset[Capability]] = {
    "openai": frozenset({"chat", "completions", "responses", "embeddings", "moderations"}),
    "vllm": frozenset({"chat", "completions", "responses", "embeddings"}),
    "litellm": frozenset({"chat", "responses", "embeddings"}),
    "realtime": frozenset({"realtime"}),
    "cascade": frozenset({"realtime"}),
    "stt": frozenset({"stt"}),
    "tts": frozenset({"tts"}),
}


def ordered(capabilities: Iterable[Capability]) -> list[Capability]:
    present = set(capabilities)
    return [c for c in ORDER if c in present]


def declared_problem(kind: object, declared: object) -> str | None:
    """Why a target of `kind` cannot declare `declared` (YAML, before validation)."""
    if declared is None or not isinstance(kind, str) or kind not in ALLOWED:
        return None
    if not isinstance(declared, list) or not declared:
        return "capabilities is a non-empty list"
    wrong = [c for c in declared if c not in ALLOWED[kind]]
    if wrong:
        allowed = ", ".join(ordered(ALLOWED[kind]))
        return f"a '{kind}' target cannot serve {', '.join(map(str, wrong))} (it may: {allowed})"
    return None


def not_served(route: str, capability: Capability, served: Iterable[Capability]) -> BadRequest:
    """The 400 for a request to a route that serves nothing for its endpoint."""
    listed = ", ".join(PATHS[c] for c in ordered(served)) or "nothing"
    return BadRequest(
        f"the route '{route}' serves no {PATHS[capability]} requests: none of its targets "
        f"declares '{capability}' (it serves: {listed})"
    )
