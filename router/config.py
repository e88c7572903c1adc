"""Policy files: frozen pydantic models, validated with file:line errors.

Every problem is reported as a `ConfigIssue` naming the file, the line of the
offending YAML node and the field path (`routes[0].targets[1]`), so `firsttoken
check` can print all of them at once (the YAML side is `router.yamlfile`). The
models of every block of a policy file sit next to the checks across blocks, so one
module shows the whole schema (the realtime route blocks are
`router/realtime/settings.py`).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from router.errors import ConfigError, ConfigIssue
from router.policy.specs import OrderedSpec, PolicySpec
from router.realtime.settings import MigrateSettings, SessionSettings
from router.yamlfile import Path_, fmt_path, line_for, parse_yaml_model, read_text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitsConfig(_Model):
    """The shape a request body may have. Checked before anything walks the body:
    an answer over a limit is a 400 that costs the router next to nothing."""

    #: the deepest nesting of JSON objects and arrays
    max_depth: int = Field(64, ge=2, le=512)
    #: messages in one chat request
    max_messages: int = Field(2048, ge=1)
    #: content parts (text, image, audio, ...) across all messages of one request
    max_content_parts: int = Field(4096, ge=1)
    #: bodies larger than this, or with more JSON values than `inline_values` (counted
    #: from their commas and brackets), are parsed in a worker process, off the event loop
    inline_bytes: int = Field(256 * 1024, ge=0)
    inline_values: int = Field(4096, ge=0)
    #: parse worker processes (bodies past the inline bounds), and how many such bodies
    #: may wait for one before new ones get a 503
    parse_workers: int = Field(1, ge=1, le=16)
    parse_queue: int = Field(8, ge=1)


class CorsConfig(_Model):
    """Browser pages allowed to call the router (their `Origin`); every other page's
    request is refused with a 403."""

    #: exact origins (`https://app.example.com`), or "*" for any page (think twice)
    allow_origins: tuple[str, ...] = Field(min_length=1)
    #: request headers a page may send besides the CORS-safelisted ones
    allow_headers: tuple[str, ...] = (
        "authorization",
        "content-type",
        "x-request-id",
        "x-session-id",
    )
    #: how long a browser may cache a preflight answer
    max_age_s: int = Field(600, ge=0)

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for origin in v:
            if origin != "*" and (
                not origin.startswith(("http://", "https://")) or origin.endswith("/")
            ):
                raise ValueError(
                    f"'{origin}' is not an origin: scheme://host[:port], no path, or '*'"
                )
        return tuple(o.lower() for o in v)


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
    limits: LimitsConfig = LimitsConfig()
    #: Host header values served besides the bound address, localhost, 127.0.0.1 and
    #: [::1] (ports are not compared): names (`router.example.com`, `*.example.com`),
    #: IP networks (`10.0.0.0/8`: probes and scrapers that address a pod by its IP), or
    #: "*" for any. Everything else is refused (DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()
    #: browser pages allowed to call the router; without it every request that carries
    #: an Origin header is refused
    cors: CorsConfig | None = None

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for entry in v:
            if not entry or any(c in entry for c in " ,;@") or entry.startswith("http"):
                raise ValueError(f"'{entry}' is not a host name, *.suffix, IP network or '*'")
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as exc:
                    raise ValueError(f"'{entry}' is not an IP network: {exc}") from None
        return tuple(e.lower() for e in v)


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

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for one turn."""
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


class Timeouts(_Model):
    connect_s: float = Field(2.0, gt=0.0)
    first_token_s: float = Field(5.0, gt=0.0)
    idle_s: float = Field(30.0, gt=0.0)
    total_s: float | None = Field(None, gt=0.0)
    #: a stream slower than this (output tokens per second, after its first token) marks
    #: the target degraded; by default the bar is relative to its own measured pace
    min_tokens_per_s: float | None = Field(None, gt=0.0)


TargetKind = Literal["vllm", "openai", "litellm", "realtime"]


class TargetConfig(_Model):
    name: str = Field(min_length=1)
    kind: TargetKind
    base_url: str | None = None
    model: str = Field(min_length=1)
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
    #: realtime only: extra headers of the upgrade (the key goes in api_key_env)
    headers: dict[str, str] = Field(default_factory=dict)
    #: realtime only: sessions the target may hold at once
    max_sessions: int | None = Field(None, gt=0)

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


class Hedge(_Model):
    #: delay before a second target is started: milliseconds, or `adaptive` (the
    #: running target's predicted TTFT at the SLO's quantile, p90 without an SLO,
    #: but no later than the SLO minus the hedge target's own prediction)
    after_ms: float | Literal["adaptive"] = 250.0
    max_extra: int = Field(1, ge=1, le=3)
    #: extra upstream requests as a fraction of recent turns (a budget): hedges stop
    #: at it; fallbacks are never refused but count against it
    max_rate: float = Field(0.1, gt=0.0, le=1.0)
    #: bounds on the adaptive delay
    min_ms: float = Field(20.0, ge=0.0)
    max_ms: float = Field(5000.0, gt=0.0)


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
    #: share of turns that probe a target other than the best (so recovery is noticed)
    exploration: float = Field(0.02, ge=0.0, le=0.5)
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


def _semantic_issues(cfg: Config, file: str, lines: Mapping[Path_, int]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []

    def issue(loc: Path_, msg: str) -> None:
        issues.append(ConfigIssue(file, line_for(lines, loc), fmt_path(loc), msg))

    seen: set[str] = set()
    for i, t in enumerate(cfg.targets):
        if t.name in seen:
            issue(("targets", i, "name"), f"duplicate target name '{t.name}'")
        seen.add(t.name)
        if t.kind in ("vllm", "openai", "realtime") and t.base_url is None:
            issue(("targets", i), f"a '{t.kind}' target needs base_url")
        if t.kind != "realtime" and t.base_url and t.base_url.startswith("ws"):
            issue(("targets", i, "base_url"), "only a realtime target has a ws(s):// base_url")
    route_names: set[str] = set()
    for i, r in enumerate(cfg.routes):
        if r.name in route_names:
            issue(("routes", i, "name"), f"duplicate route name '{r.name}'")
        route_names.add(r.name)
        for j, name in enumerate(r.targets):
            if name not in seen:
                issue(("routes", i, "targets", j), f"unknown target '{name}'")
        if len(set(r.targets)) != len(r.targets):
            issue(("routes", i, "targets"), "a target is listed twice")
        kinds = {cfg.target(n).kind == "realtime" for n in r.targets if n in seen}
        if len(kinds) > 1:
            issue(("routes", i, "targets"), "a route's targets are all realtime, or none is")
    if cfg.auth is not None:
        key_names: set[str] = set()
        for i, k in enumerate(cfg.auth.keys):
            if k.name in key_names:
                issue(("auth", "keys", i, "name"), f"duplicate key name '{k.name}'")
            key_names.add(k.name)
            for j, route in enumerate(k.routes or ()):
                if route not in route_names:
                    issue(("auth", "keys", i, "routes", j), f"unknown route '{route}'")
    return issues


def parse_config(text: str, file: str = "<config>") -> Config:
    """Validate a policy file's text; raise ConfigError listing every problem."""
    cfg, lines = parse_yaml_model(Config, text, file)
    issues = _semantic_issues(cfg, file, lines)
    if issues:
        raise ConfigError(issues)
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    return parse_config(read_text(path), str(path))


def missing_secrets(cfg: Config, environ: Mapping[str, str]) -> list[str]:
    """Messages for every secret's env var (targets' and clients' keys) that is unset."""
    wanted = [(f"target '{t.name}'", "api_key_env", t.api_key_env) for t in cfg.targets]
    if cfg.auth is not None:
        wanted += [(f"client key '{k.name}'", "key_env", k.key_env) for k in cfg.auth.keys]
        wanted.append(("auth", "admin_key_env", cfg.auth.admin_key_env))
    return [
        f"{who}: environment variable {var} ({field}) is not set"
        for who, field, var in wanted
        if var and not environ.get(var)
    ]
