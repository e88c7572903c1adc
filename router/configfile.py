"""YAML files validated by pydantic models, every problem as a file:line `ConfigIssue`.

    data, lines, issues = compose(text, "policies/x.yaml")   # YAML, line of every node
    config, more = validate(Config, data, lines, file)       # pydantic, with suggestions

A YAML syntax error names the file and its line (never PyYAML's "<unicode
string>"); a duplicate key is an issue, not a silent overwrite. A schema problem
is located at the line of the offending node by its field path
(`routes[0].policy.type`); an unknown key, an unknown `type:` tag or an unknown
literal gets a "did you mean" from difflib. Issues come back sorted by file and
line, so `firsttoken check` prints them in reading order, all in one pass.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from router.errors import ConfigError, ConfigIssue

Path_ = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


def fmt_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def sorted_issues(issues: Iterable[ConfigIssue]) -> list[ConfigIssue]:
    """By file, then line (an issue without one first), then field path; no duplicates."""
    unique = dict.fromkeys(issues)
    return sorted(unique, key=lambda i: (i.file, i.line or 0, i.path))


def _yaml_issue(exc: yaml.YAMLError, file: str) -> ConfigIssue:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    message = f"invalid YAML: {problem}"
    if mark is not None:
        message += f" (column {mark.column + 1})"
    if context:
        where = f" at line {context_mark.line + 1}" if context_mark is not None else ""
        message += f", {context}{where}"
    return ConfigIssue(file, mark.line + 1 if mark is not None else None, "", message)


def compose(text: str, file: str) -> tuple[Any, dict[Path_, int], list[ConfigIssue]]:
    """Parse YAML: plain data, the 1-based line of every node by path, and the issues
    found on the way (a duplicate key). A syntax error raises ConfigError."""
    lines: dict[Path_, int] = {}
    issues: list[ConfigIssue] = []

    def walk(node: yaml.Node, path: Path_) -> Any:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in out:
                    first = lines.get((*path, key))
                    issues.append(
                        ConfigIssue(
                            file, line, fmt_path((*path, key)), f"duplicate key (first at {first})"
                        )
                    )
                out[key] = walk(value_node, (*path, key))
                lines[(*path, key)] = line
            return out
        if isinstance(node, yaml.SequenceNode):
            return [walk(child, (*path, i)) for i, child in enumerate(node.value)]
        return yaml.safe_load(yaml.serialize(node))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(exc, file)]) from exc
    if root is None:
        return {}, lines, issues
    return walk(root, ()), lines, issues


def line_for(lines: Mapping[Path_, int], loc: Sequence[str | int]) -> int | None:
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


# -- schema problems -----------------------------------------------------------------


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types an annotation may hold (Annotated, Optional and unions opened)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(tp) for t in _unwrap(arg)]
    return [tp]


def _step(tp: Any, part: str | int) -> Any:
    """The annotation one step down `part` of a pydantic error's location, or None."""
    for option in _unwrap(tp):
        origin = typing.get_origin(option)
        if isinstance(part, int) and origin in (tuple, list):
            return typing.get_args(option)[0]
        if isinstance(part, str) and origin is dict:
            return typing.get_args(option)[1]
        if isinstance(option, type) and issubclass(option, BaseModel) and isinstance(part, str):
            field = option.model_fields.get(part)
            if field is not None:
                return field.annotation
    # A discriminated union: pydantic puts the tag in the location.
    for option in _unwrap(tp):
        if isinstance(option, type) and issubclass(option, BaseModel):
            tag = option.model_fields.get("type")
            if tag is not None and tag.default == part:
                return option
    return None


def _known_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    tp: Any = model
    for part in loc[:-1]:
        tp = _step(tp, part)
        if tp is None:
            return []
    return [
        name
        for option in _unwrap(tp)
        if isinstance(option, type) and issubclass(option, BaseModel)
        for name in option.model_fields
    ]


def _quoted(text: object) -> list[str]:
    return re.findall(r"'([^']*)'", str(text))


def _child(node: Any, part: str | int) -> tuple[bool, Any]:
    if isinstance(node, dict) and part in node:
        return True, node[part]
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return True, node[part]
    return False, None


def data_loc(data: Any, loc: Sequence[str | int]) -> list[str | int]:
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


def validate(
    model: type[M], data: Any, lines: Mapping[Path_, int], file: str
) -> tuple[M | None, list[ConfigIssue]]:
    """`data` as `model`, or every problem pydantic finds, located and explained."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _translate(model, exc, data, lines, file)


def _translate(
    model: type[BaseModel],
    exc: ValidationError,
    data: Any,
    lines: Mapping[Path_, int],
    file: str,
) -> list[ConfigIssue]:
    issues = []
    errors = exc.errors()
    for err in errors:
        loc = data_loc(data, err["loc"])
        if err["type"] == "too_short" and any(
            e is not err and e["loc"][: len(err["loc"])] == err["loc"] for e in errors
        ):
            continue  # an item failed, so the tuple came out short: say it once
        msg = err["msg"]
        ctx = err.get("ctx") or {}
        if err["type"] == "extra_forbidden":
            key = str(loc[-1]) if loc else ""
            msg = f"unknown key '{key}'" + did_you_mean(key, _known_keys(model, err["loc"]))
        elif err["type"] == "union_tag_invalid":
            tag = str(ctx.get("tag", ""))
            field = str(ctx.get("discriminator", "tag")).strip("'")
            msg = f"unknown {field} '{tag}'" + (
                did_you_mean(tag, _quoted(ctx.get("expected_tags", "")))
                or f"; expected one of {ctx.get('expected_tags', '')}"
            )
            loc = [*loc, "type"]
        elif err["type"] == "literal_error":
            msg += did_you_mean(str(err.get("input", "")), _quoted(ctx.get("expected", "")))
        issues.append(ConfigIssue(file, line_for(lines, loc), fmt_path(loc), msg))
    return issues


# -- files ---------------------------------------------------------------------------


def read_text(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(p), None, "", f"cannot read: {exc.strerror}")]) from exc


def load_data(text: str, file: str) -> tuple[dict[str, Any], dict[Path_, int], list[ConfigIssue]]:
    """The YAML as a mapping, the line of every node, and the issues found so far."""
    data, lines, issues = compose(text, file)
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(file, 1, "", "the top level must be a mapping")])
    return data, lines, issues


def parse_yaml_model(model: type[M], text: str, file: str) -> tuple[M, dict[Path_, int]]:
    """Validate YAML text as `model`; every problem becomes a file:line ConfigIssue.
    Returns the model and the line of every node, for checks made after it."""
    data, lines, issues = load_data(text, file)
    valid, schema = validate(model, data, lines, file)
    issues += schema
    if valid is None or issues:
        raise ConfigError(sorted_issues(issues))
    return valid, lines
