"""``${VAR}`` and ``${VAR:-default}`` in a config's string values, from the environment (keys are names, left alone).

A variable that is not set (and has no default) is a problem at the field that
names it; the field becomes empty, and every other problem of the file is
still found and reported with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from gateway.config.checks import Loc, Problem

__all__ = ["expand"]

_VARIABLE: Final = re.compile(r"\$\{(?:([^}]*)\})?")
_REFERENCE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def expand(node: Any, env: Mapping[str, str], loc: Loc = ()) -> tuple[Any, list[Problem]]:
    """The data with every string expanded, and the problems of its references."""
    problems: list[Problem] = []
    return _expand(node, env, loc, problems), problems


def _expand(node: Any, env: Mapping[str, str], loc: Loc, problems: list[Problem]) -> Any:
    if isinstance(node, str):
        return _expand_string(node, env, loc, problems)
    if isinstance(node, dict):
        return {key: _expand(value, env, (*loc, key), problems) for key, value in node.items()}
    if isinstance(node, list):
        items = [_expand(value, env, (*loc, index), problems) for index, value in enumerate(node)]
        if loc in (("server", "api_keys"), ("server", "admin_keys")):
            # A key variable that is set but empty means "no such key", so `${KEY:-}` can switch auth off.
            items = [new for old, new in zip(node, items, strict=True) if not (new == "" and old != "")]
        return items
    return node


def _expand_string(text: str, env: Mapping[str, str], loc: Loc, problems: list[Problem]) -> str:
    def substitute(match: re.Match[str]) -> str:
        body = match.group(1)
        if body is None:
            problems.append(Problem(loc, "expected '}' to close '${'"))
            return ""
        reference = _REFERENCE.fullmatch(body)
        if reference is None:
            problems.append(Problem(loc, f"expected ${{NAME}} or ${{NAME:-default}}, got {match.group(0)!r}"))
            return ""
        name, default = reference.groups()
        value = env.get(name)
        if value is None or (value == "" and default is not None):  # shell `:-` semantics
            if default is None:
                problems.append(Problem(loc, f"environment variable {name} is not set"))
                return ""
            return default
        return value

    return _VARIABLE.sub(substitute, text)
