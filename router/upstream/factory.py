"""Which `Upstream` a target gets: OpenAI-compatible targets the raw relay, litellm
targets litellm (imported only when such a target exists, and a clear error naming
the extra to install when it is missing)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from router.config import Config, TargetConfig
from router.errors import ConfigError, ConfigIssue
from router.targetsettings import secret
from router.upstream.base import Upstream, UpstreamSetup
from router.upstream.openai import OpenAIUpstream

HOSTED_EXTRA = "pip install 'firsttoken[hosted]'"


def import_litellm_upstream() -> type[Upstream]:
    """router.upstream.litellm, and litellm itself (a second or more: call it off the
    event loop), or a ConfigError that says what to install."""
    try:
        from router.upstream.litellm import LitellmUpstream, load_litellm

        load_litellm()
    except ImportError as exc:
        raise ConfigError(
            [
                ConfigIssue(
                    "<config>",
                    None,
                    "",
                    f"a 'litellm' target needs litellm, which is not installed ({exc.name}): "
                    f"{HOSTED_EXTRA}",
                )
            ]
        ) from exc
    return LitellmUpstream


def default_upstream(config: TargetConfig, setup: UpstreamSetup) -> Upstream:
    if config.kind == "litellm":
        return import_litellm_upstream()(config, setup)  # type: ignore[call-arg]
    return OpenAIUpstream(config, setup)


def setup_for(
    config: Config,
    target: TargetConfig,
    environ: Mapping[str, str],
    on_connection: Callable[[bool], None] | None = None,
) -> UpstreamSetup:
    """A target's secrets from the environment (whitespace stripped; `missing_secrets`
    has checked them) and the config's bounds."""
    headers = dict(target.headers)
    for name, var in target.headers_env.items():
        value = secret(environ, var)
        if value is not None:
            headers[name] = value
    return UpstreamSetup(
        api_key=secret(environ, target.api_key_env),
        headers=headers,
        max_body_bytes=config.upstream.max_body_bytes,
        keepalive_s=config.upstream.keepalive_s,
        on_connection=on_connection,
    )
