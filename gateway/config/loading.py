"""Reading a config file: YAML with every value's position, the environment expanded, then validated.

Every problem of the file is reported in one run, each as ``file:line:col:
path: problem`` where the YAML has a position for it (``file: path: problem``
otherwise): syntax, duplicate keys, unset environment variables, values of the
wrong type or range, unknown keys, and the checks across fields.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from gateway.config.checks import Loc, Problem, cross_problems, path
from gateway.config.environment import expand
from gateway.config.problems import problems_of, show
from gateway.config.schema import CHECKED, Config

__all__ = ["ConfigError", "load_config", "parse_config", "validate"]

_UNKNOWN: Final = (float("inf"), 0)


class ConfigError(Exception):
    """A config that cannot be used; the message has one line per problem, each naming the source and the field."""


class _Loader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys, which PyYAML would otherwise let the last one win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Reads and parses a config file; every failure, including I/O, is a ConfigError."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the file ({exc.strerror})") from None
    return parse_config(text, source, env)


def parse_config(text: str, source: str, env: Mapping[str, str] | None = None) -> Config:
    """Parses config text; ``source`` names it in error messages."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with server, providers and models, got {show(data)}")
    data, unset = expand(data, os.environ if env is None else env)
    return validate(data, source, node, unset)


def validate(data: Any, source: str, node: yaml.Node | None = None, found: list[Problem] | None = None) -> Config:
    """The config, or a ConfigError with every problem: those ``found`` before (unset variables), the checks
    across fields, and the schema's (but for fields already reported)."""
    problems = [*(found or ()), *cross_problems(data)]
    try:
        config = Config.model_validate(data, context=CHECKED)
    except ValidationError as exc:
        reported = {problem.loc for problem in found or ()}
        problems += [p for p in problems_of(exc, Config) if not any(p.loc[: len(r)] == r for r in reported)]
    else:
        if not problems:
            return config
    lines = sorted(((_position(node, problem.loc), problem) for problem in problems), key=lambda pair: pair[0])
    raise ConfigError("\n".join(_line(source, where, problem) for where, problem in lines))


def _line(source: str, where: tuple[float, int], problem: Problem) -> str:
    place = source if where == _UNKNOWN else f"{source}:{int(where[0])}:{where[1]}"
    return f"{place}: {path(problem.loc)}: {problem.message}" if problem.loc else f"{place}: {problem.message}"


def _position(node: yaml.Node | None, loc: Loc) -> tuple[float, int]:
    """The line and column of the deepest node of ``loc`` the YAML has (a missing field: its mapping)."""
    if node is None:
        return _UNKNOWN
    found = node
    for part in loc:
        child = None
        if isinstance(found, yaml.MappingNode):
            child = next((value for key, value in found.value if str(key.value) == str(part)), None)
            if child is None:
                break
        elif isinstance(found, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(found.value):
            child = found.value[part]
        else:
            break
        found = child
    return found.start_mark.line + 1, found.start_mark.column + 1
