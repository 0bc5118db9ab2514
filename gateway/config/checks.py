"""Checks across a config's fields, made on the raw data so that they join every other problem of the file.

A route naming a provider or fallback that does not exist, duplicate route or
key names, one key configured twice, a key's glob that matches no route. The
data is not validated yet: a part of the wrong shape is skipped here, since its
own problem says why.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final

__all__ = ["Loc", "Problem", "cross_problems", "glob_problem", "key_digest", "path"]

Loc = tuple[int | str, ...]
SHA256_HEX: Final = re.compile(r"[0-9A-Fa-f]{64}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem of a config: where (``loc``, the path into the data), and what is expected there."""

    loc: Loc
    message: str


def path(loc: Loc) -> str:
    """``("models", 0, "rewrite")`` as ``models[0].rewrite``; odd keys are quoted."""
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad mapping key
            out += " (key)"
        elif isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[\w-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def key_digest(key: str) -> bytes:
    """A client key as the gateway compares it: its SHA-256."""
    return hashlib.sha256(key.encode()).digest()


def glob_problem(glob: str) -> str | None:
    """Why a glob cannot mean what its author wrote, or None; fnmatch would take an unclosed '[' literally."""
    i = 0
    while (i := glob.find("[", i)) != -1:
        j = i + 1
        if glob[j : j + 1] == "!":
            j += 1
        if glob[j : j + 1] == "]":
            j += 1
        end = glob.find("]", j)
        if end == -1:
            return f"expected a ']' to close the '[' at position {i}"
        i = end + 1
    return None


def cross_problems(data: Any) -> list[Problem]:
    return _route_problems(data) + _key_problems(data)


def _route_problems(data: Any) -> list[Problem]:
    """Routes naming a provider or a fallback that does not exist, and duplicate route names."""
    if not isinstance(data, Mapping) or not isinstance(routes := data.get("models"), list | tuple):
        return []
    providers = data.get("providers")
    providers = providers if isinstance(providers, Mapping) and providers else None
    known = ", ".join(map(repr, providers or ()))
    routes = [route if isinstance(route, Mapping) else {} for route in routes]
    names = {name for route in routes if isinstance(name := route.get("name"), str)}
    problems = []
    first: dict[str, int] = {}
    for i, route in enumerate(routes):
        listed = route.get("provider")
        for provider in (listed,) if isinstance(listed, str) else listed if isinstance(listed, list | tuple) else ():
            if providers is not None and isinstance(provider, str) and provider and provider not in providers:
                problems.append(
                    Problem(("models", i, "provider"), f"expected one of the providers {known}, got {provider!r}")
                )
        name = route.get("name")
        if isinstance(name, str) and (earlier := first.setdefault(name, i)) != i:
            problems.append(
                Problem(("models", i, "name"), f"duplicate route name {name!r}, first at models[{earlier}]")
            )
        fallbacks = route.get("fallbacks")
        for j, fallback in enumerate(fallbacks if isinstance(fallbacks, list | tuple) else ()):
            if isinstance(fallback, str) and fallback and (fallback not in names or fallback == name):
                problems.append(
                    Problem(("models", i, "fallbacks", j), f"expected the name of another route, got {fallback!r}")
                )
    return problems


def _key_problems(data: Any) -> list[Problem]:
    """Duplicate key names and keys, and globs that match no route."""
    keys = _read(data, "keys")
    if not isinstance(keys, list | tuple):
        return []
    problems: list[Problem] = []
    seen_names: dict[str, int] = {}
    seen_keys: dict[bytes, str] = {}
    api_keys = _read(_read(data, "server"), "api_keys")
    for i, api_key in enumerate(api_keys if isinstance(api_keys, list | tuple) else ()):
        if isinstance(api_key, str) and api_key:
            seen_keys.setdefault(key_digest(api_key), f"server.api_keys[{i}]")
    routes = _read(data, "models")
    names = [_read(route, "name") for route in routes] if isinstance(routes, list | tuple) else []
    route_names = names if all(isinstance(name, str) for name in names) else []
    for i, entry in enumerate(keys):
        name = _read(entry, "name")
        if isinstance(name, str) and (first := seen_names.setdefault(name, i)) != i:
            problems.append(Problem(("keys", i, "name"), f"duplicate key name {name!r}, first at keys[{first}]"))
        for field, digest in _raw_digests(entry):
            if (earlier := seen_keys.setdefault(digest, f"keys[{i}].{field}")) != f"keys[{i}].{field}":
                problems.append(Problem(("keys", i, field), f"the same key as {earlier}"))
        globs = _read(entry, "models")
        for j, glob in enumerate(globs if isinstance(globs, list | tuple) and route_names else ()):
            if (
                isinstance(glob, str)
                and glob
                and not glob_problem(glob)
                and not any(fnmatchcase(r, glob) for r in route_names)
            ):
                routes_named = ", ".join(map(repr, route_names))
                problems.append(
                    Problem(
                        ("keys", i, "models", j),
                        f"{glob!r} matches no route; expected a glob over the route names {routes_named}",
                    )
                )
    return problems


def _raw_digests(entry: Any) -> Iterator[tuple[str, bytes]]:
    """The SHA-256 of a raw key entry's secret, under the field it came from, when it is readable."""
    key = _read(entry, "key")
    if hasattr(key, "get_secret_value"):
        key = key.get_secret_value()
    if isinstance(key, str) and key:
        yield "key", key_digest(key)
    hexdigest = _read(entry, "key_sha256")
    if isinstance(hexdigest, str) and SHA256_HEX.fullmatch(hexdigest):
        yield "key_sha256", bytes.fromhex(hexdigest)


def _read(node: Any, field: str) -> Any:
    """A field of raw config data: a mapping from YAML, or a model's dump."""
    return node.get(field) if isinstance(node, Mapping) else getattr(node, field, None)
