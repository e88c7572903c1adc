"""Policy files: frozen pydantic models and YAML loading with file:line errors.

Every problem is reported as a `ConfigIssue` naming the file, the line of the
offending YAML node and the field path (`routes[0].targets[1]`), so `firsttoken
check` can print all of them at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from router.errors import ConfigError, ConfigIssue
from router.policy.specs import OrderedSpec, PolicySpec


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class ClientKey(_Model):
    """One client of the router: its key (by env var or SHA-256), routes and limits."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    key_env: str | None = None
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    #: the routes this key may use (all when absent)
    routes: tuple[str, ...] | None = None
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)

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
    input_per_mtok: float = Field(0.0, ge=0.0)
    output_per_mtok: float = Field(0.0, ge=0.0)

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


TargetKind = Literal["vllm", "openai", "litellm"]


class Probe(_Model):
    """An active probe (router/signals/probe.py); `probe:` may also be true or false."""

    interval_s: float = Field(30.0, gt=0.0)
    max_tokens: int = Field(1, ge=1, le=16)


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
    #: active probes; absent: as its routes say, else on for `vllm` targets only
    probe: Probe | bool | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
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
    #: share of turns that may explore a target other than the policy's choice (one
    #: that might be better and is the least measured); 0 turns exploration off
    exploration: float = Field(0.02, ge=0.0, le=0.5)
    #: active probes for this route's targets that do not say otherwise themselves
    probe: Probe | bool | None = None


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

Path_ = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


def _fmt_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _compose(text: str, file: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML, returning plain data plus the 1-based line of every node by path."""
    lines: dict[Path_, int] = {}

    def walk(node: yaml.Node, path: Path_) -> Any:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = walk(value_node, (*path, key))
                lines[(*path, key)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [walk(child, (*path, i)) for i, child in enumerate(node.value)]
        return yaml.safe_load(yaml.serialize(node))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigIssue(file, line, "", f"invalid YAML: {exc}")]) from exc
    if root is None:
        return {}, lines
    return walk(root, ()), lines


def _line_for(lines: Mapping[Path_, int], loc: Sequence[str | int]) -> int | None:
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _semantic_issues(cfg: Config, file: str, lines: Mapping[Path_, int]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []

    def issue(loc: Path_, msg: str) -> None:
        issues.append(ConfigIssue(file, _line_for(lines, loc), _fmt_path(loc), msg))

    seen: set[str] = set()
    for i, t in enumerate(cfg.targets):
        if t.name in seen:
            issue(("targets", i, "name"), f"duplicate target name '{t.name}'")
        seen.add(t.name)
        if t.kind in ("vllm", "openai") and t.base_url is None:
            issue(("targets", i), f"a '{t.kind}' target needs base_url")
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


def parse_yaml_model(model: type[M], text: str, file: str) -> tuple[M, dict[Path_, int]]:
    """Validate YAML text as `model`; every problem becomes a file:line ConfigIssue.
    Returns the model and the line of every node, for checks made after it."""
    data, lines = _compose(text, file)
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(file, 1, "", "the top level must be a mapping")])
    try:
        return model.model_validate(data), lines
    except ValidationError as exc:
        issues = []
        errors = exc.errors()
        for err in errors:
            loc = _data_loc(data, err["loc"])
            if err["type"] == "too_short" and any(
                e is not err and e["loc"][: len(err["loc"])] == err["loc"] for e in errors
            ):
                continue  # an item failed, so the tuple came out short: say it once
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown key '{loc[-1]}'" if loc else "unknown key"
            issues.append(ConfigIssue(file, _line_for(lines, loc), _fmt_path(loc), msg))
        raise ConfigError(issues) from exc


def read_text(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(p), None, "", f"cannot read: {exc.strerror}")]) from exc


def parse_config(text: str, file: str = "<config>") -> Config:
    """Validate a policy file's text; raise ConfigError listing every problem."""
    cfg, lines = parse_yaml_model(Config, text, file)
    issues = _semantic_issues(cfg, file, lines)
    if issues:
        raise ConfigError(issues)
    return cfg


def _data_loc(data: Any, loc: Sequence[str | int]) -> list[str | int]:
    """pydantic's error location, as a path in the YAML: the tags it inserts for a
    discriminated union (`policy.latency.quantile`) are not keys of the data."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        found, child = _child(node, part)
        if found:
            node = child
        elif i < len(loc) - 1:
            continue  # a union tag: not in the data
        out.append(part)
    return out


def _child(node: Any, part: str | int) -> tuple[bool, Any]:
    if isinstance(node, dict) and part in node:
        return True, node[part]
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return True, node[part]
    return False, None


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
