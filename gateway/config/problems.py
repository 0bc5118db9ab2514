"""Pydantic's validation errors as a config's problems, in the words a config's author reads.

``expected ..., got ...``: what a field must be, then what was found, unless
that is noise or a secret (keys, URLs that may hold a password, headers).
"""

from __future__ import annotations

from types import NoneType, UnionType
from typing import Any, Final, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from gateway.config.checks import Loc, Problem

__all__ = ["problems_of", "show"]

# Fields whose values must not be echoed back in an error message.
_SECRET_FIELDS: Final = frozenset(
    ("admin_keys", "api_key", "api_keys", "headers", "key", "key_sha256", "state", "state_password")
)
_BOUNDS: Final = frozenset(("greater_than", "greater_than_equal", "less_than", "less_than_equal"))
_EXPECTATIONS: Final = {
    "missing": "required, but missing",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dataclass_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_too_short": "expected a non-empty string",
    "too_short": "expected at least one entry",
}


def problems_of(exc: ValidationError, root: type[BaseModel]) -> list[Problem]:
    """Each error of ``exc`` (validating ``root``) as a problem at its path."""
    problems = []
    for error in exc.errors(include_url=False):
        loc, kind, given = error["loc"], error["type"], error["input"]
        if kind == "too_short" and given:
            continue  # pydantic counts only the valid items; the invalid ones have their own errors
        if kind == "value_error" and not loc:
            # A cross-field check of a config built in code: each line starts with its own path.
            problems += [Problem((), line) for line in str(error["ctx"]["error"]).splitlines()]
            continue
        if kind == "missing_base_url":
            problems.append(Problem((*loc, "base_url"), "required, but missing (or api: demo for the built-in demo)"))
            continue
        if kind == "value_error":
            expected = str(error["ctx"]["error"])
        elif kind in ("literal_error", "enum"):
            expected = "expected one of " + error["ctx"]["expected"].replace("' or '", "', '")
        elif kind == "extra_forbidden":
            model = _model_at(root, loc[:-1])
            expected = "unknown key" + (f"; expected one of: {', '.join(model.model_fields)}" if model else "")
        else:
            phrase = "expected a number" if kind in _BOUNDS else "expected"
            message = error["msg"].split(", got ", 1)[0]  # what was found is said once, below
            expected = _EXPECTATIONS.get(kind) or message.replace("Input should be", phrase, 1)
        problems.append(Problem(tuple(loc), f"{expected}{_got(kind, given, tuple(loc))}"))
    return problems


def _got(kind: str, given: Any, loc: Loc) -> str:
    """What was found instead, unless that is noise or a secret."""
    if kind in ("missing", "extra_forbidden", "too_short"):
        return ""
    if _is_scalar(given):
        return "" if _SECRET_FIELDS.intersection(map(str, loc)) else f", got {show(given)}"
    return f", got {show(given)}" if kind.endswith("_type") else ""


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class an error location points into, found by walking the annotations from the root."""
    node: Any = root
    for part in loc:
        if get_origin(node) is None and isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return None
            node = field.annotation
        elif get_origin(node) in (dict, tuple):
            node = get_args(node)[1 if get_origin(node) is dict else 0]
        else:
            return None
        if get_origin(node) in (Union, UnionType):
            node = next(arg for arg in get_args(node) if arg is not NoneType)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def show(value: Any) -> str:
    """A value as it would be written in YAML, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return repr(value)
    names: dict[type, str] = {dict: "a mapping", list: "a list"}
    return names.get(type(value), type(value).__name__)
