"""Providers that do not speak OpenAI (Anthropic, Gemini, Bedrock, ...), through litellm.

`LitellmUpstream.send` calls litellm and hands back OpenAI bytes, per endpoint:

- chat: `litellm.acompletion`; `data: {chat.completion.chunk}` frames re-framed
  from litellm's chunks, the usage chunk when the client asked for it, then
  `data: [DONE]`; or one `chat.completion` body;
- responses: `litellm.aresponses`; `event: <type>` + `data: {...}` frames, numbered
  as they leave, ending at `response.completed` (or `incomplete`, `failed`); or one
  `response` object (`litellm_responses`);
- embeddings: `litellm.aembedding`; one embeddings list.

A stream's `send` returns only once its first frame is in, so a 429, 529 or 5xx, a
refused connection and a hang before the first event all surface from `send`,
bounded by the target's `first_token_s`. litellm's exceptions become ours in
`litellm_errors.translate`, before the first token as `send` failures (the turn
falls back) and after it as `stream` failures (the turn ends the stream with an
error in the API's shape); litellm's objects become OpenAI bytes in
`litellm_frames` and `litellm_responses`.

Decisions worth knowing:

- No legacy `/v1/completions`: refused with a non-retryable 400
  (`unsupported_endpoint`): litellm would turn a prompt into a chat turn and back,
  which is not what a `completions` client asked for. A stored response's own calls
  (`GET`, `DELETE /v1/responses/{id}`, `cancel`, `input_items`) go through litellm's
  function for each (`litellm_responses.stored_call`).
- Only OpenAI's own parameters become litellm's keyword arguments (`CHAT_PARAMS`,
  `litellm_responses.PARAMS`, `EMBEDDING_PARAMS`). litellm takes its plumbing as
  keyword arguments too (`api_base`, `api_key`, `mock_response`, ...): passing the
  client's body through would let a client redirect the call and its API key.
- A provider litellm bridges to chat completions stores no responses
  (`stores_responses` is false): a follow-up (`previous_response_id`,
  `conversation`) is refused with a 400 that says so, rather than answered without
  its history as litellm's bridge would without its proxy's database.
- Each target owns one litellm `AsyncHTTPHandler` (one connection pool). Its httpx
  response hook records the raw response of each call: litellm keeps neither the
  provider's real status (a 529 comes back as a 500) nor a way to close a stream's
  connection (`CustomStreamWrapper.aclose` does not reach the socket for
  Anthropic). With the raw response, the real status and headers are known and
  `aclose` cuts the connection, so the provider sees the cancel. (Embeddings go
  through the clients litellm keeps for the provider's SDK.)
- litellm is imported on the first `LitellmUpstream` (it takes a second or more),
  with `LITELLM_LOCAL_MODEL_COST_MAP`, `LITELLM_TELEMETRY` and `LITELLM_LOG` set
  first unless already set, and `suppress_debug_info` on (it prints to stdout).
- The API key is never logged, never in a repr and scrubbed from every message
  carried over from litellm; if litellm's own exception text holds it, the
  exception is not chained (`from None`).

Just over 400 lines with this docstring, kept whole: one upstream is one file
(`upstream/base.py`), and what could leave already has (errors in `litellm_errors`,
chat bytes in `litellm_frames`, Responses and embeddings in `litellm_responses`, the
answers and their stream readers in `litellm_answer`); the rest is the calls.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, NoReturn

import anyio
import httpx

from router.clock import Clock
from router.config import TargetConfig
from router.errors import UpstreamStatusError, UpstreamTimeout
from router.upstream.base import UpstreamRequest, UpstreamSetup
from router.upstream.litellm_answer import (
    LitellmJsonResponse,
    LitellmStreamResponse,
    chat_frames,
    close_stream,
    response_frames,
)
from router.upstream.litellm_errors import Phase, chain, translate
from router.upstream.litellm_frames import (
    completion_payload,
    json_bytes,
    provider_headers,
)
from router.upstream.litellm_responses import (
    STATE_FIELDS,
    embeddings_kwargs,
    embeddings_payload,
    not_stored,
    response_payload,
    responses_kwargs,
    stateless_follow_up,
    stored_call,
)

log = logging.getLogger(__name__)

ENV_DEFAULTS: Mapping[str, str] = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
}

#: OpenAI chat parameters passed on to litellm; anything else in the body is dropped
CHAT_PARAMS: frozenset[str] = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "service_tier",
        "stop",
        "store",
        "temperature",
        "thinking",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "web_search_options",
    }
)
_FRAMING = frozenset({"model", "messages", "stream", "stream_options"})

#: the raw httpx responses of the litellm call running in this context
_responses: ContextVar[list[httpx.Response] | None] = ContextVar(
    "firsttoken_litellm_responses", default=None
)


def load_litellm() -> Any:
    """Import litellm quietly (see the module docstring); cheap after the first call."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import litellm  # lazy: the import costs more than a second

    litellm.suppress_debug_info = True
    return litellm


async def stop_logging_worker() -> None:
    """litellm runs a process-wide logging task on the loop of its first call and
    never stops it; stop it with the target (it starts again on the next call)."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    await GLOBAL_LOGGING_WORKER.stop()


async def _record_response(response: httpx.Response) -> None:
    seen = _responses.get()
    if seen is not None:
        seen.append(response)


class LitellmUpstream:
    """One litellm target: `config.model` is litellm's model name
    (`anthropic/claude-3-5-haiku-20241022`), `config.base_url` its `api_base` (for
    Anthropic the host root; litellm appends `/v1/messages`). With `api_key=None`
    litellm falls back to the provider's usual environment variable."""

    def __init__(
        self,
        config: TargetConfig,
        setup: UpstreamSetup | str | None = None,
        wall_clock: Clock = time.time,
    ) -> None:
        litellm = load_litellm()
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler
        from litellm.responses.main import provider_stores_the_conversation

        if not isinstance(setup, UpstreamSetup):
            setup = UpstreamSetup(api_key=setup)
        self.name = config.name
        self._wall = wall_clock
        self._config = config
        self._api_key = setup.api_key
        self._headers = dict(setup.headers)
        self._acompletion = litellm.acompletion
        self._aresponses = litellm.aresponses
        self._aembedding = litellm.aembedding
        self._litellm = litellm
        self._provider: str = litellm.get_llm_provider(config.model, api_base=config.base_url)[1]
        #: whether the provider keeps responses (litellm_responses: "State")
        self.stores_responses: bool = provider_stores_the_conversation(
            config.model, None, {"api_base": config.base_url}
        )
        t = config.timeouts
        self._http: Any = AsyncHTTPHandler(
            timeout=httpx.Timeout(
                connect=t.connect_s, read=t.idle_s, write=t.idle_s, pool=t.connect_s
            ),
            event_hooks={"response": [_record_response]},
        )

    def __repr__(self) -> str:
        c = self._config
        return f"LitellmUpstream(name={c.name!r}, model={c.model!r}, base_url={c.base_url!r})"

    async def send(self, request: UpstreamRequest) -> LitellmStreamResponse | LitellmJsonResponse:
        if request.endpoint == "completions":
            raise self._unsupported(request)
        if (
            request.endpoint == "responses"
            and not self.stores_responses
            and any(request.body.get(f) is not None for f in STATE_FIELDS)
        ):
            raise stateless_follow_up(self.name, self._config.model, request.body)
        seen: list[httpx.Response] = []
        token = _responses.set(seen)
        try:
            if request.path is not None:
                return await self._stored(request, seen)
            if not request.stream:
                return await self._unary(request, seen)
            deadline = self._config.timeouts.first_token_s
            try:
                with anyio.fail_after(deadline):
                    return await self._open_stream(request, seen)
            except TimeoutError as exc:
                raise UpstreamTimeout(
                    f"{self.name}: no first token within {deadline:g}s",
                    target=self.name,
                    phase="first_token",
                ) from exc
        finally:
            _responses.reset(token)

    async def warm_up(self) -> None:
        """Pay litellm's first-call cost (~0.4 s of lazy imports and provider set-up)
        now rather than in a user's first turn: one `mock_response` call for this
        target's model, which litellm answers without any network or API key."""
        stream = await self._acompletion(
            model=self._config.model,
            messages=[{"role": "user", "content": "warm-up"}],
            mock_response="ok",
            stream=True,
            stream_options={"include_usage": True},
        )
        async for _ in stream:
            pass
        if "responses" in self._config.serves:
            # aresponses imports its MCP gateway on every call (the first costs ~1 s,
            # the loop starved meanwhile); a mock answer returns before that import
            import litellm.responses.mcp.litellm_proxy_mcp_handler  # noqa: F401

            await self._aresponses(model=self._config.model, input="warm-up", mock_response="ok")

    async def aclose(self) -> None:
        await self._http.close()
        await stop_logging_worker()

    # -- internals -----------------------------------------------------------------

    def _unsupported(self, request: UpstreamRequest) -> UpstreamStatusError:
        what = request.path or f"/{request.endpoint}"
        message = (
            f"target '{self.name}' (litellm) serves /v1/chat/completions, /v1/responses "
            f"and /v1/embeddings, not {request.method} /v1{what}"
        )
        return UpstreamStatusError(
            f"{self.name}: unsupported endpoint {request.method} {what}",
            target=self.name,
            upstream_status=400,
            body=json_bytes(
                {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "code": "unsupported_endpoint",
                    }
                }
            ),
        )

    def _plumbing(self, request: UpstreamRequest) -> dict[str, Any]:
        """What every call takes besides the body: litellm's own arguments, never the
        client's."""
        t = self._config.timeouts
        kwargs: dict[str, Any] = dict(
            model=self._config.model,
            api_base=self._config.base_url,
            api_key=self._api_key,
            # per read; the first-token deadline is enforced around `send`
            timeout=t.idle_s if request.stream else t.total_s,
        )
        if request.endpoint != "embeddings":  # litellm embeds through the SDKs' clients
            kwargs["client"] = self._http
        if request.headers or self._headers:
            kwargs["extra_headers"] = {**self._headers, **request.headers}
        return kwargs

    def _kwargs(self, request: UpstreamRequest) -> dict[str, Any]:
        body = request.body
        if request.endpoint == "responses":
            kwargs = responses_kwargs(body)
            if request.stream:
                kwargs["stream"] = True
            return {**kwargs, **self._plumbing(request)}
        if request.endpoint == "embeddings":
            kwargs, dropped = embeddings_kwargs(body)
        else:
            kwargs = {k: v for k, v in body.items() if k in CHAT_PARAMS}
            dropped = sorted(set(body) - CHAT_PARAMS - _FRAMING)
            kwargs.update(messages=body.get("messages"), stream=request.stream)
            if request.stream:
                kwargs["stream_options"] = {"include_usage": True}
        if dropped:
            log.debug("%s: parameters not passed to litellm: %s", self.name, dropped)
        return {**kwargs, **self._plumbing(request)}

    def _raise(self, exc: BaseException, phase: Phase, seen: list[httpx.Response]) -> NoReturn:
        err = translate(
            exc,
            target=self.name,
            phase=phase,
            response=seen[-1] if seen else None,
            secret=self._api_key,
            wall_now=self._wall(),
        )
        key = self._api_key
        if key and any(key in str(e) or key in repr(e.args) for e in chain(exc)):
            raise err from None  # litellm's text holds the key: do not carry it along
        raise err from exc

    async def _unary(
        self, request: UpstreamRequest, seen: list[httpx.Response]
    ) -> LitellmJsonResponse:
        call, payload = {
            "chat": (self._acompletion, completion_payload),
            "responses": (self._aresponses, response_payload),
            "embeddings": (self._aembedding, embeddings_payload),
        }[request.endpoint]
        try:
            response = await call(**self._kwargs(request))
        except Exception as exc:  # the litellm boundary: translated below
            self._raise(exc, "send", seen)
        headers = provider_headers(
            seen[-1].headers if seen else None, getattr(response, "_hidden_params", None)
        )
        return LitellmJsonResponse(json_bytes(payload(response)), headers)

    async def _stored(
        self, request: UpstreamRequest, seen: list[httpx.Response]
    ) -> LitellmJsonResponse:
        """A call on a stored response, through litellm's own function for it."""
        assert request.path is not None
        call = stored_call(request.method, request.path, request.query)
        if call is None:
            raise self._unsupported(request)
        if not self.stores_responses:
            raise not_stored(self.name, self._config.model, request.path)
        name, kwargs = call
        plumbing = self._plumbing(request)
        del plumbing["model"]
        try:
            answer = await getattr(self._litellm, name)(
                **kwargs, **plumbing, custom_llm_provider=self._provider
            )
        except Exception as exc:  # the litellm boundary: translated below
            self._raise(exc, "send", seen)
        headers = provider_headers(
            seen[-1].headers if seen else None, getattr(answer, "_hidden_params", None)
        )
        return LitellmJsonResponse(json_bytes(response_payload(answer)), headers)

    async def _open_stream(
        self, request: UpstreamRequest, seen: list[httpx.Response]
    ) -> LitellmStreamResponse:
        chat = request.endpoint == "chat"
        try:
            call = self._acompletion if chat else self._aresponses
            stream = await call(**self._kwargs(request))
        except Exception as exc:  # the litellm boundary: translated below
            self._raise(exc, "send", seen)
        http = seen[-1] if seen else None
        options = request.body.get("stream_options")
        include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))

        def fail(exc: BaseException, phase: Phase) -> NoReturn:
            self._raise(exc, phase, seen)

        frames = (
            chat_frames(stream, include_usage, fail, self.name)
            if chat
            else response_frames(stream, fail, self.name)
        )
        try:
            first = await frames.__anext__()
        except BaseException:
            await close_stream(frames, stream, http)
            raise
        headers = provider_headers(
            http.headers if http is not None else None, getattr(stream, "_hidden_params", None)
        )
        return LitellmStreamResponse(
            first=first, frames=frames, stream=stream, http_response=http, headers=headers
        )
