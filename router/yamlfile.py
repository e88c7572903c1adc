"""YAML files as pydantic models, with every problem located by file:line and field.

`parse_yaml_model` validates YAML text as a model and turns each validation error
into a `ConfigIssue` naming the file, the line of the offending YAML node and the
field path (`routes[0].targets[1]`), so a caller can print all of them at once.
Used by policy files (`router.config`) and simulator scenarios (`router.sim`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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


def line_for(lines: Mapping[Path_, int], loc: Sequence[str | int]) -> int | None:
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


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
            issues.append(ConfigIssue(file, line_for(lines, loc), fmt_path(loc), msg))
        raise ConfigError(issues) from exc


def read_text(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(p), None, "", f"cannot read: {exc.strerror}")]) from exc


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
