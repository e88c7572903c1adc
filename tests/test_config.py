"""Policy files: every error with file:line and field path; `firsttoken check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import load_config, missing_secrets, parse_config
from router.errors import ConfigError
from router.tools.cli import main

VALID = """\
server: {host: 127.0.0.1, port: 8080}
targets:
  - name: local-a
    kind: vllm
    base_url: http://127.0.0.1:8001/v1
    model: tiny-llama
    price: {input_per_mtok: 0.0, output_per_mtok: 0.0}
    timeouts: {connect_s: 2, first_token_s: 5, idle_s: 30}
  - name: hosted-a
    kind: openai
    base_url: https://api.example.com/v1
    model: gpt-4o-mini
    api_key_env: HOSTED_A_KEY
    price: {input_per_mtok: 0.15, output_per_mtok: 0.60}
routes:
  - name: chat-fast
    targets: [local-a, hosted-a]
    policy: {type: ordered}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "policies/x.yaml")
    return [str(issue) for issue in info.value.issues]


def test_the_issues_example_file_is_valid() -> None:
    cfg = parse_config(VALID)
    assert [t.name for t in cfg.targets] == ["local-a", "hosted-a"]
    assert cfg.target("local-a").engine_metrics_url() == "http://127.0.0.1:8001/metrics"
    assert cfg.routes[0].policy.type == "ordered"


def test_an_unknown_target_is_named_with_its_line_and_path() -> None:
    text = VALID.replace("targets: [local-a, hosted-a]", "targets: [local-a, local-b]")
    assert errors(text) == [
        "policies/x.yaml:17 routes[0].targets[1]: unknown target 'local-b'; did you mean 'local-a'?"
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = (
        VALID.replace("    model: tiny-llama\n", "    model: tiny-llama\n    bogus: 1\n")
        .replace("{type: ordered}", "{type: latency, quantile: 2}")
        .replace("first_token_s: 5", "first_token_s: -1")
    )
    assert errors(text) == [
        "policies/x.yaml:7 targets[0].bogus: unknown key 'bogus'",
        "policies/x.yaml:9 targets[0].timeouts.first_token_s: Input should be greater than 0",
        "policies/x.yaml:19 routes[0].policy.quantile: Input should be less than 1",
    ]


def test_schema_and_cross_reference_errors_come_in_one_pass_in_line_order() -> None:
    # The issue's two rounds: a typo'd policy type and key hid the unknown target.
    text = (
        VALID.replace("targets: [local-a, hosted-a]", "targets: [local-a, hosted-b]")
        .replace("{type: ordered}", "{type: slo_cots}")
        .replace("    model: tiny-llama\n", "    model: tiny-llama\n    expected_ttft: 80\n")
        .replace("kind: openai", "kind: opnai")
    )
    assert errors(text) == [
        "policies/x.yaml:7 targets[0].expected_ttft: unknown key 'expected_ttft'; "
        "did you mean 'expected_ttft_ms'?",
        "policies/x.yaml:11 targets[1].kind: Input should be 'vllm', 'openai', 'litellm', "
        "'realtime', 'stt', 'tts' or 'cascade'; did you mean 'openai'?",
        "policies/x.yaml:18 routes[0].targets[1]: unknown target 'hosted-b'; "
        "did you mean 'hosted-a'?",
        "policies/x.yaml:19 routes[0].policy.type: unknown type 'slo_cots'; "
        "did you mean 'slo_cost'?",
    ]


def test_a_yaml_syntax_error_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(VALID.replace("    model: gpt-4o-mini\n", "    model: gpt-4o-mini\n  bad\n"))
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"{path}:14: invalid YAML: could not find expected ':' (column 16), "
        "while scanning a simple key at line 13"
    )
    assert "<unicode string>" not in err


def test_a_duplicate_key_is_an_error_not_a_silent_overwrite() -> None:
    text = VALID.replace("    model: tiny-llama\n", "    model: tiny-llama\n    model: other\n")
    assert errors(text) == ["policies/x.yaml:7 targets[0].model: duplicate key (first at 6)"]


def test_an_unknown_policy_type_and_bad_yaml() -> None:
    assert errors(VALID.replace("{type: ordered}", "{type: fastest}")) == [
        "policies/x.yaml:18 routes[0].policy.type: unknown type 'fastest'; expected one of "
        "'ordered', 'round_robin', 'random', 'latency', 'p2c', 'slo_cost', 'weighted'"
    ]
    (issue,) = errors("targets: [\n")
    assert issue.startswith("policies/x.yaml:2: invalid YAML")


def test_duplicate_names_and_a_missing_base_url() -> None:
    text = VALID.replace("name: hosted-a", "name: local-a").replace(
        "    base_url: http://127.0.0.1:8001/v1\n", ""
    )
    assert errors(text) == [
        "policies/x.yaml:3 targets[0]: a 'vllm' target needs base_url",
        "policies/x.yaml:8 targets[1].name: duplicate target name 'local-a'",
        "policies/x.yaml:16 routes[0].targets[1]: unknown target 'hosted-a'",
    ]


def test_secrets_are_named_by_env_var_and_checked_at_start() -> None:
    cfg = parse_config(VALID)
    assert missing_secrets(cfg, {}) == [
        "target 'hosted-a': environment variable HOSTED_A_KEY (api_key_env) is not set"
    ]
    assert missing_secrets(cfg, {"HOSTED_A_KEY": "sk-x"}) == []
    assert errors(VALID.replace("api_key_env: HOSTED_A_KEY", "api_key: sk-inline")) == [
        "policies/x.yaml:13 targets[1].api_key: unknown key 'api_key'; did you mean 'api_key_env'?"
    ]


def test_check_prints_a_summary_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: valid" in out
    assert "chat-fast" in out and "local-a, hosted-a" in out
    assert "warning: target 'hosted-a': environment variable HOSTED_A_KEY" in out


def test_check_prints_every_error_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace("[local-a, hosted-a]", "[local-a, local-b]"))
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:17 routes[0].targets[1]: unknown target 'local-b'; did you mean" in err
    assert main(["check", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_a_route_listing_a_target_twice(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(VALID.replace("[local-a, hosted-a]", "[local-a, local-a]"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [str(i) for i in info.value.issues] == [
        f"{path}:17 routes[0].targets: a target is listed twice"
    ]


# -- target headers and keys from the environment (issue 14) ------------------------------

HEADERS = VALID.replace(
    "    api_key_env: HOSTED_A_KEY\n",
    "    api_key_env: HOSTED_A_KEY\n"
    "    auth_header: api-key\n"
    "    headers: {HTTP-Referer: https://app.example, X-Title: app}\n"
    "    headers_env: {OpenAI-Organization: ORG_ID}\n",
)


def test_a_key_with_a_trailing_newline_is_stripped_and_a_broken_one_is_refused() -> None:
    cfg = parse_config(HEADERS)
    assert missing_secrets(cfg, {"HOSTED_A_KEY": "sk-abc\n", "ORG_ID": "org-1\r\n"}) == []
    problems = missing_secrets(cfg, {"HOSTED_A_KEY": "sk-a\nbc", "ORG_ID": "org-1"})
    assert problems == [
        "target 'hosted-a': environment variable HOSTED_A_KEY (api_key_env) cannot be sent "
        "as a header: it contains a line break or NUL"
    ]
    assert "sk-a" not in problems[0]  # never the value
    assert missing_secrets(cfg, {"HOSTED_A_KEY": "sk"}) == [
        "target 'hosted-a': environment variable ORG_ID (headers_env.OpenAI-Organization) "
        "is not set"
    ]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ("{Host: evil.example}", "the router sets 'Host' itself"),
        ("{'Bad Name': x}", "'Bad Name' is not a valid header name"),
        ('{X-A: "a\\r\\nX-Injected: 1"}', "contains a line break"),
    ],
)
def test_target_headers_are_checked_at_load(headers: str, message: str) -> None:
    text = VALID.replace(
        "    api_key_env: HOSTED_A_KEY\n",
        f"    api_key_env: HOSTED_A_KEY\n    headers: {headers}\n",
    )
    assert any(message in e for e in errors(text))


def test_the_new_keys_have_their_documented_defaults() -> None:
    cfg = parse_config(VALID)
    target = cfg.targets[1]
    assert (target.auth_header, target.headers, target.max_connections) == (
        "authorization",
        {},
        512,
    )
    assert target.timeouts.total_s == 600.0
    assert cfg.signals.max_cooldown_s == 300.0
    assert cfg.upstream.max_event_bytes == 1024 * 1024
    route = cfg.routes[0]
    assert route.first_token_s is None and route.slo is None
