"""Policy files: frozen pydantic models, and the checks of names across a file.

Every problem is reported as a `ConfigIssue` naming the file, the line of the
offending YAML node and the field path (`routes[0].targets[1]`), so `firsttoken
check` can print all of them at once (YAML and schema: `configfile.py`; the
realtime route blocks: `router/realtime/settings.py`; speech and cascade blocks and
their checks: `router/voice/settings.py`). Over 400 lines (about 500): the models of every
kind of target and route stay in one place, so one module shows the whole schema.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.capabilities import DEFAULTS, Capability, declared_problem
from router.configfile import (
    Path_,
    did_you_mean,
    fmt_path,
    line_for,
    load_data,
    parse_yaml_model,
    read_text,
    sorted_issues,
    validate,
)
from router.edge import CorsConfig, LimitsConfig, allowed_hosts
from router.errors import ConfigError, ConfigIssue
from router.policy.specs import OrderedSpec, PolicySpec
from router.realtime.settings import MigrateSettings, SessionSettings
from router.targetsettings import (
    AuthHeader,
    EnvHeaders,
    StaticHeaders,
    UpstreamConfig,
    header_problem,
    secret,
)
from router.vocabulary import SloOn
from router.voice.settings import CascadeSettings, cascade_issues


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GcConfig(_Model):
    """CPython's cyclic garbage collector thresholds (`gc.set_threshold`), set at start.
    CPython's own are `{young: 700, middle: 10, old: 10}`. At 700 the collector took
    5-14 % of the router's CPU at 64-128 streams, with full collections of 6-24 ms; at
    20000 a young collection comes every 10 s or more at those loads, and none of the
    older ones (benchmarks/RESULTS.md, "GC pauses")."""

    #: container allocations (net of frees) between two young collections
    young: int = Field(20000, ge=100)
    #: young collections per collection of the middle generation
    middle: int = Field(10, ge=1)
    #: middle collections per full collection (which also waits until the objects
    #: that survived into the old generation since the last one are a quarter of it)
    old: int = Field(10, ge=1)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    #: serve /metrics on its own port too (e.g. for a scraper on another network)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    #: on SIGTERM: readiness turns false, streams in flight get this long to finish
    drain_s: float = Field(30.0, ge=0.0)
    #: a client must send its request head, and then its body, within this long
    client_timeout_s: float = Field(10.0, gt=0.0)
    #: the largest request head (request line and headers) accepted
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    #: one INFO line per turn (route, target, outcome, TTFT, client key name) on
    #: `firsttoken.access`; off, the same line is logged at DEBUG
    access_log: bool = False
    limits: LimitsConfig = LimitsConfig()
    #: the cyclic garbage collector's thresholds (read at start, not on reload)
    gc: GcConfig = GcConfig()
    #: Host header values served besides the bound address, localhost, 127.0.0.1 and
    #: [::1] (ports are not compared): names (`router.example.com`, `*.example.com`),
    #: IP networks (`10.0.0.0/8`: probes and scrapers that address a pod by its IP), or
    #: "*" for any. Everything else is refused (DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()
    #: browser pages allowed to call the router; without it every request that carries
    #: an Origin header is refused
    cors: CorsConfig | None = None
    #: serve the voice playground at GET /playground (default: only when bound to loopback)
    playground: bool | None = None

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return allowed_hosts(v)


class ClientKey(_Model):
    """One client of the router: its key (by env var or SHA-256), routes and limits."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    key_env: str | None = None
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    #: the routes this key may use (all when absent)
    routes: tuple[str, ...] | None = None
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    #: realtime sessions this key may hold open at once
    max_sessions: int | None = Field(None, gt=0)
    #: minutes of realtime sessions this key may use in any 60 minutes
    session_minutes: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _one_key(self) -> ClientKey:
        if (self.key_env is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key_env or key_sha256")
        return self


class AuthConfig(_Model):
    keys: tuple[ClientKey, ...] = ()
    #: /admin/* needs this key (by env var or SHA-256); without one, /admin is closed
    admin_key_env: str | None = None
    admin_key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    #: signs the ephemeral keys of `POST /v1/realtime/client_secrets`, so that every
    #: replica accepts them; without it each process signs with a random key of its own
    client_secret_key_env: str | None = None


class TranscriptionPrice(_Model):
    """What a realtime target bills for transcribing a session's input audio, at its
    transcription model's prices (not the session model's): per million tokens for a
    model that reports tokens, per minute of audio for one that reports a duration
    (`whisper-1`)."""

    audio_input: float = Field(0.0, ge=0.0)
    text_input: float = Field(0.0, ge=0.0)
    text_output: float = Field(0.0, ge=0.0)
    per_minute: float = Field(0.0, ge=0.0)


class Price(_Model):
    """US dollars per million tokens: `input/output_per_mtok` for text targets; by kind
    of token for realtime targets (cached input tokens are billed once, at
    `cached_input`; reasoning tokens are inside text output)."""

    input_per_mtok: float = Field(0.0, ge=0.0)
    output_per_mtok: float = Field(0.0, ge=0.0)
    audio_input: float = Field(0.0, ge=0.0)
    audio_output: float = Field(0.0, ge=0.0)
    text_input: float = Field(0.0, ge=0.0)
    text_output: float = Field(0.0, ge=0.0)
    cached_input: float = Field(0.0, ge=0.0)
    #: speech targets: STT per minute of audio in, TTS per minute of audio out
    per_minute: float = Field(0.0, ge=0.0)
    #: TTS per million characters of text in (OpenAI's tts-1 bills this way)
    per_mchar: float = Field(0.0, ge=0.0)
    #: text targets: input tokens the provider read from its prompt cache (the usage's
    #: `cached_tokens`), per million; without it they cost `input_per_mtok`
    cached_input_per_mtok: float | None = Field(None, ge=0.0)
    #: realtime targets: transcribing the sessions' input audio (unset: not counted)
    transcription: TranscriptionPrice | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """US dollars for one turn (`cached_tokens` are part of `prompt_tokens`)."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_rate = self.cached_input_per_mtok
        if cached_rate is None:
            cached_rate = self.input_per_mtok
        return (
            (prompt_tokens - cached) * self.input_per_mtok
            + cached * cached_rate
            + completion_tokens * self.output_per_mtok
        ) / 1e6


class Timeouts(_Model):
    connect_s: float = Field(2.0, gt=0.0)
    #: a stream's first token of any kind (content, reasoning, refusal, tool call)
    first_token_s: float = Field(5.0, gt=0.0)
    #: the longest silence between two reads of a stream
    idle_s: float = Field(30.0, gt=0.0)
    #: the whole answer: a stream from its start to its end, a unary answer entirely
    total_s: float = Field(600.0, gt=0.0)
    #: realtime targets: the upstream WebSocket is pinged after this long without a frame
    #: from it, and no pong within half of it is an abnormal close (1006): the session
    #: migrates (None: no pings)
    ping_s: float | None = Field(15.0, gt=0.0)
    #: a stream slower than this (output tokens per second, after its first token) marks
    #: the target degraded; by default the bar is relative to its own measured pace
    min_tokens_per_s: float | None = Field(None, gt=0.0)


TargetKind = Literal["vllm", "openai", "litellm", "realtime", "stt", "tts", "cascade"]
#: targets that hold Realtime sessions: a route may mix them
SESSION_KINDS: frozenset[str] = frozenset({"realtime", "cascade"})
TEXT_KINDS: frozenset[str] = frozenset({"vllm", "openai", "litellm"})


class Probe(_Model):
    """An active probe (router/signals/probe.py); `probe:` may also be true or false."""

    interval_s: float = Field(30.0, gt=0.0)
    max_tokens: int = Field(1, ge=1, le=16)
    #: the longest wait between probes: each probe that answers as the last one did
    #: doubles the wait, up to this (None: 8 x interval_s; set it to interval_s for a
    #: steady pace)
    max_interval_s: float | None = Field(None, gt=0.0)

    @property
    def longest_wait_s(self) -> float:
        """The wait the backoff stops at: never shorter than the interval itself."""
        longest = 8.0 * self.interval_s if self.max_interval_s is None else self.max_interval_s
        return max(longest, self.interval_s)


class TargetConfig(_Model):
    name: str = Field(min_length=1)
    kind: TargetKind
    base_url: str | None = None
    #: the model name sent upstream (every kind but cascade needs one)
    model: str = ""
    api_key_env: str | None = None
    price: Price = Price()
    timeouts: Timeouts = Timeouts()
    #: the prior for TTFT before anything is measured
    expected_ttft_ms: float = Field(500.0, gt=0.0)
    max_context_tokens: int | None = Field(None, gt=0)
    #: local limits, enforced by the router itself
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    #: vLLM only: where its Prometheus metrics live (default: base_url's host + /metrics)
    metrics_url: str | None = None
    #: vLLM only: the engine's --max-num-seqs (learned from its metrics when absent)
    max_num_seqs: int | None = Field(None, gt=0)
    #: active probes; absent: as its routes say, else on for `vllm` targets only
    probe: Probe | bool | None = None
    #: extra headers {Name: value} and {Name: ENV_VAR}, and where the key goes
    #: (router/targetsettings.py); for a realtime target, those of the upgrade
    headers: StaticHeaders = Field(default_factory=dict)
    headers_env: EnvHeaders = Field(default_factory=dict)
    auth_header: AuthHeader = "authorization"
    #: CAs that verify the target's TLS certificate (default: the system's), and the
    #: pool's cap on open connections (past it a turn waits up to `connect_s`)
    ca_file: str | None = None
    max_connections: int = Field(512, ge=1)
    #: realtime only: sessions the target may hold at once
    max_sessions: int | None = Field(None, gt=0)
    #: tts only: the rate of its `pcm` (24000 for OpenAI and Kokoro, 22050 for Piper)
    sample_rate: int = Field(24_000, ge=8000, le=48_000)
    #: cascade only: its stt, llm and tts routes and VAD defaults
    cascade: CascadeSettings | None = None
    #: the endpoints it serves (router/capabilities.py has each kind's defaults)
    capabilities: tuple[Capability, ...] | None = None

    @property
    def serves(self) -> tuple[Capability, ...]:
        """What the target serves: its declaration, else its kind's defaults."""
        return self.capabilities if self.capabilities is not None else DEFAULTS[self.kind]

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("base_url must start with http(s):// (or ws(s):// for realtime)")
        return v.rstrip("/") if v else v

    def engine_metrics_url(self) -> str | None:
        if self.kind != "vllm":
            return None
        if self.metrics_url:
            return self.metrics_url
        assert self.base_url is not None
        root = self.base_url.removesuffix("/v1")
        return f"{root}/metrics"


class Slo(_Model):
    ttft_ms: float = Field(gt=0.0)
    quantile: float = Field(0.9, gt=0.0, lt=1.0)
    on: SloOn = "first_token"


class Hedge(_Model):
    #: delay before a second target is started: milliseconds, or `adaptive` (the
    #: running target's predicted TTFT at the SLO's quantile, p90 without an SLO,
    #: but no later than the SLO minus the hedge target's own prediction)
    after_ms: float | Literal["adaptive"] = 250.0
    max_extra: int = Field(1, ge=1, le=3)
    #: extra upstream requests as a fraction of the last 200 turns (a hard cap over
    #: that window): hedges stop at it; fallbacks are never refused but count against it
    max_rate: float = Field(0.1, gt=0.0, le=1.0)
    #: bounds on the adaptive delay
    min_ms: float = Field(20.0, ge=0.0)
    max_ms: float = Field(5000.0, gt=0.0)
    #: hedge non-streamed turns too (they pay a whole answer per extra request)
    unary: bool = False
    #: hedges to priced targets may add at most this share to the route's spend over
    #: the last 200 turns (expected costs: hedges' against first attempts'); hedges to
    #: free targets are not limited by it; unset: no limit. Turns only (chat,
    #: completions, Responses, embeddings), not speech routes
    max_cost_share: float | None = Field(None, ge=0.0)


class Affinity(_Model):
    enabled: bool = True
    #: how long a conversation remembers the target that served it
    ttl_s: float = Field(600.0, gt=0.0)


class RouteConfig(_Model):
    name: str = Field(min_length=1)
    targets: tuple[str, ...] = Field(min_length=1)
    policy: PolicySpec = OrderedSpec()
    slo: Slo | None = None
    hedge: Hedge | None = None
    affinity: Affinity = Affinity()
    #: share of turns that may explore a target other than the policy's choice (one
    #: that might be better and is the least measured); 0 turns exploration off
    exploration: float = Field(0.02, ge=0.0, le=0.5)
    #: active probes for this route's targets that do not say otherwise themselves
    probe: Probe | bool | None = None
    #: move a streamed turn found waiting in a vLLM engine's queue, before its first token,
    #: to a target predicted to answer sooner (`router/turn/requeue.py`); unset: on for
    #: the policies that predict from the queue (latency, slo_cost, weighted)
    move_queued: bool | None = None
    #: overrides every target's `timeouts.first_token_s` on this route (reasoning models)
    first_token_s: float | None = Field(None, gt=0.0)
    #: the `model` field of answers: the upstream's own (as OpenAI-compatible proxies
    #: do) or this route's name (rewritten as bytes, no JSON parse per chunk)
    response_model: Literal["upstream", "route"] = "upstream"
    #: realtime routes: a session's limits, and migration
    session: SessionSettings = SessionSettings()
    migrate: MigrateSettings = MigrateSettings()


class SignalsConfig(_Model):
    engine_scrape_interval_s: float = Field(0.25, gt=0.0)
    engine_stale_after_s: float = Field(2.0, gt=0.0)
    #: peak-EWMA decay time constant
    ewma_tau_s: float = Field(10.0, gt=0.0)
    #: consecutive failures that open a target's breaker
    breaker_failures: int = Field(3, ge=1)
    breaker_base_s: float = Field(1.0, gt=0.0)
    breaker_max_s: float = Field(60.0, gt=0.0)
    #: a target whose stream slowed to a trickle is avoided this long
    degraded_cooldown_s: float = Field(5.0, ge=0.0)
    #: and the longest a Retry-After or a peer's cooldown benches a target
    max_cooldown_s: float = Field(300.0, gt=0.0)


class ResponsesConfig(_Model):
    """The Responses API's state lives on the target that produced a response: the router
    remembers which one did, per response id (and `conversation` id), to send a
    follow-up (`previous_response_id`), a GET or a DELETE there."""

    #: how long an id's owner is remembered (OpenAI keeps stored responses 30 days)
    owner_ttl_s: float = Field(30 * 86400.0, gt=0.0)
    #: ids remembered in this replica's memory (the oldest go first); with `state:`
    #: they are in Redis too, for `owner_ttl_s`
    max_owners: int = Field(100_000, ge=1)


class StateConfig(_Model):
    """State shared by replicas through Redis (router/replicas): breaker cooldowns and
    global rpm/tpm counters. Without this block every replica keeps its own."""

    #: redis://[:password@]host:port/db, rediss://..., or unix:///path/redis.sock
    redis_url: str = Field(min_length=1)
    #: prepended to every key and channel, so several routers can share one Redis
    key_prefix: str = "firsttoken:"
    #: bound on the per-turn limit check; past it the turn uses local limits
    timeout_ms: float = Field(5.0, gt=0.0, le=1000.0)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return v


class Config(_Model):
    server: ServerConfig = ServerConfig()
    signals: SignalsConfig = SignalsConfig()
    #: shared state between replicas (Redis); optional
    state: StateConfig | None = None
    #: client keys; without this block the router is open (and binds loopback only)
    auth: AuthConfig | None = None
    upstream: UpstreamConfig = UpstreamConfig()
    responses: ResponsesConfig = ResponsesConfig()
    targets: tuple[TargetConfig, ...] = Field(min_length=1)
    routes: tuple[RouteConfig, ...] = Field(min_length=1)

    def target(self, name: str) -> TargetConfig:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    def route(self, name: str) -> RouteConfig | None:
        for r in self.routes:
            if r.name == name:
                return r
        return None


# -- loading ------------------------------------------------------------------------


def _named(items: Any) -> list[tuple[int, Any]]:
    """(index, name) of each mapping in a YAML list, whatever else is wrong with it."""
    if not isinstance(items, list):
        return []
    return [(i, item.get("name")) for i, item in enumerate(items) if isinstance(item, dict)]


def _route_kind(kind: object) -> str:
    """What a route of this kind of target serves: text turns, sessions, stt or tts."""
    if kind in SESSION_KINDS:
        return "session"
    return "text" if kind in TEXT_KINDS else str(kind)


def _target_issues(i: int, target: dict[str, Any], issue: Callable[[Path_, str], None]) -> None:
    """What a target of each kind needs."""
    kind, base_url = target.get("kind"), target.get("base_url")
    if kind in ("vllm", "openai", "realtime", "stt", "tts") and base_url is None:
        issue(("targets", i), f"a '{kind}' target needs base_url")
    if kind != "cascade" and not target.get("model"):
        issue(("targets", i), f"a '{kind}' target needs model")
    if (kind == "cascade") != (target.get("cascade") is not None):
        issue(("targets", i), "a cascade target, and only one, has a cascade: block")
    if kind != "realtime" and isinstance(base_url, str) and base_url.startswith("ws"):
        issue(("targets", i, "base_url"), "only a realtime target has a ws(s):// base_url")
    problem = declared_problem(kind, target.get("capabilities"))
    if problem is not None:
        issue(("targets", i, "capabilities"), problem)


def _cross_references(
    data: dict[str, Any], file: str, lines: Mapping[Path_, int]
) -> list[ConfigIssue]:
    """Names that must agree across the file, checked on the raw YAML so that they are
    reported with the schema's problems in the same pass."""
    issues: list[ConfigIssue] = []

    def issue(loc: Path_, msg: str) -> None:
        issues.append(ConfigIssue(file, line_for(lines, loc), fmt_path(loc), msg))

    targets: list[str] = []
    kinds: dict[str, str] = {}
    cascades: list[tuple[int, dict[str, Any]]] = []
    for i, name in _named(data.get("targets")):
        target = data["targets"][i]
        if isinstance(name, str) and name in targets:
            issue(("targets", i, "name"), f"duplicate target name '{name}'")
        if isinstance(name, str):
            targets.append(name)
            kinds[name] = _route_kind(target.get("kind"))
        _target_issues(i, target, issue)
        block = target.get("cascade")
        cascades += [(i, block)] if isinstance(block, dict) else []
    routes: list[str] = []
    route_kinds: dict[str, set[str]] = {}
    for i, name in _named(data.get("routes")):
        if isinstance(name, str) and name in routes:
            issue(("routes", i, "name"), f"duplicate route name '{name}'")
        if isinstance(name, str):
            routes.append(name)
        listed = data["routes"][i].get("targets")
        if not isinstance(listed, list):
            continue
        for j, target_name in enumerate(listed):
            if isinstance(target_name, str) and target_name not in targets:
                hint = did_you_mean(target_name, targets)
                issue(("routes", i, "targets", j), f"unknown target '{target_name}'{hint}")
        if len(set(map(str, listed))) != len(listed):
            issue(("routes", i, "targets"), "a target is listed twice")
        served = {kinds[n] for n in listed if isinstance(n, str) and n in kinds}
        if isinstance(name, str):
            route_kinds[name] = served
        if len(served) > 1:
            issue(
                ("routes", i, "targets"),
                "a route's targets are all text, all stt, all tts, or all realtime and cascade",
            )
    cascade_issues(cascades, route_kinds, issue)
    auth = data.get("auth")
    keys = auth.get("keys") if isinstance(auth, dict) else None
    key_names: set[str] = set()
    for i, name in _named(keys):
        assert isinstance(keys, list)
        if isinstance(name, str) and name in key_names:
            issue(("auth", "keys", i, "name"), f"duplicate key name '{name}'")
        if isinstance(name, str):
            key_names.add(name)
        allowed = keys[i].get("routes")
        for j, route in enumerate(allowed if isinstance(allowed, list) else ()):
            if isinstance(route, str) and route not in routes:
                hint = did_you_mean(route, routes)
                issue(("auth", "keys", i, "routes", j), f"unknown route '{route}'{hint}")
    return issues


def parse_config(text: str, file: str = "<config>") -> Config:
    """Validate a policy file's text; raise ConfigError listing every problem (schema
    and cross-references together, sorted by line)."""
    data, lines, issues = load_data(text, file)
    cfg, schema = validate(Config, data, lines, file)
    issues += schema + _cross_references(data, file, lines)
    if cfg is None or issues:
        raise ConfigError(sorted_issues(issues))
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    return parse_config(read_text(path), str(path))


def missing_secrets(cfg: Config, environ: Mapping[str, str]) -> list[str]:
    """Messages for every secret's env var that is unset, and every target secret that
    cannot be sent as a header value even after stripping whitespace (never the value)."""
    wanted = [(f"target '{t.name}'", "api_key_env", t.api_key_env) for t in cfg.targets]
    targets = ((f"target '{t.name}'", t.headers_env.items()) for t in cfg.targets)
    wanted += [(who, f"headers_env.{name}", var) for who, env in targets for name, var in env]
    if cfg.auth is not None:
        wanted += [(f"client key '{k.name}'", "key_env", k.key_env) for k in cfg.auth.keys]
        wanted.append(("auth", "admin_key_env", cfg.auth.admin_key_env))
        wanted.append(("auth", "client_secret_key_env", cfg.auth.client_secret_key_env))
    problems = [
        f"{who}: environment variable {var} ({field}) is not set"
        for who, field, var in wanted
        if var and not secret(environ, var)
    ]
    for who, field, var in wanted:
        if var and field.startswith(("api_key_env", "headers_env")):
            problem = header_problem(who, field, var, environ)
            problems += [problem] if problem else []
    return problems


__all__ = ["SloOn", "UpstreamConfig", "parse_yaml_model", "read_text"]  # re-exported
