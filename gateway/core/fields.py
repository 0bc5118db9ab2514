"""Reading a decoded JSON request field by field, typed, so that any shape in any field is a 400 naming it.

Every front door validates its requests this one way: a ``Field`` is a value
and where it is in the request; its typed reads (``string``, ``integer``,
``array``...) return the value or raise a ``GatewayError`` whose ``param``
names the field. The words are the door's (``Wording``): OpenAI's clients read
``Invalid type for 'input[0].role': expected a string.``, Anthropic's
``messages.0.role: Input should be a valid string``. Nothing is read without a
type check first, so a request translator built on it is total.

A list holds at most ``MAX_ITEMS`` entries, whatever it is (messages, input
items, content blocks, tools): the work a request costs is bounded by that and
by the body's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from typing import Any, Final, Protocol

from gateway.core.errors import GatewayError

__all__ = ["MAX_ITEMS", "Expected", "Field", "Path", "Wording"]

MAX_ITEMS: Final = 100_000
Path = tuple[str | int, ...]


class Expected(Enum):
    """The JSON type a field must have."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    OBJECT = "object"
    ARRAY = "array"


class Wording(Protocol):
    """How a front door's clients are told what is wrong with a field."""

    def where(self, path: Path) -> str:
        """The field's path as the door writes it (``input[0].content``, ``messages.0.content``)."""

    def missing(self, where: str) -> GatewayError: ...

    def wrong_type(self, where: str, expected: Expected) -> GatewayError: ...

    def too_small(self, where: str, minimum: int, expected: Expected) -> GatewayError:
        """A number below ``minimum``, a shorter string, or a list with fewer items."""

    def too_many(self, where: str, maximum: int) -> GatewayError: ...

    def invalid(self, where: str, message: str, code: str) -> GatewayError:
        """Any other problem; ``message`` says it in full, ``where`` is the param."""


def _of_type(value: Any, expected: Expected) -> bool:
    if expected is Expected.STRING:
        return isinstance(value, str)
    if expected is Expected.OBJECT:
        return isinstance(value, dict)
    if expected is Expected.ARRAY:
        return isinstance(value, list)
    if expected is Expected.BOOLEAN:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if expected is Expected.INTEGER:
        return isinstance(value, int)
    return isinstance(value, (int, float))


class Field:
    """A value of a request and its path; ``value`` is None for a field that is absent (or null)."""

    __slots__ = ("path", "value", "wording")

    def __init__(self, value: Any, wording: Wording, path: Path = ()) -> None:
        self.value = value
        self.wording = wording
        self.path = path

    @property
    def where(self) -> str:
        return self.wording.where(self.path)

    @property
    def present(self) -> bool:
        return self.value is not None

    def get(self, key: str) -> Field:
        """The member ``key`` of this object (read ``object()`` first), absent when it has none."""
        value = self.value.get(key) if isinstance(self.value, dict) else None
        return Field(value, self.wording, (*self.path, key))

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and self.value.get(key) is not None

    def members(self) -> list[str]:
        """The names of this object's members (null ones included)."""
        return list(self.value) if isinstance(self.value, dict) else []

    def fail(self, message: str, code: str = "invalid_value") -> GatewayError:
        return self.wording.invalid(self.where, message, code)

    def _typed(self, expected: Expected, required: bool) -> Any:
        if self.value is None:
            if required:
                raise self.wording.missing(self.where)
            return None
        if not _of_type(self.value, expected):
            raise self.wording.wrong_type(self.where, expected)
        return self.value

    def string(self, *, required: bool = False, non_empty: bool = False) -> str | None:
        value: str | None = self._typed(Expected.STRING, required)
        if non_empty and value == "":
            raise self.wording.too_small(self.where, 1, Expected.STRING)
        return value

    def boolean(self, *, required: bool = False) -> bool | None:
        value: bool | None = self._typed(Expected.BOOLEAN, required)
        return value

    def integer(self, *, required: bool = False, minimum: int | None = None) -> int | None:
        value: int | None = self._typed(Expected.INTEGER, required)
        if value is not None and minimum is not None and value < minimum:
            raise self.wording.too_small(self.where, minimum, Expected.INTEGER)
        return value

    def number(self, *, required: bool = False) -> int | float | None:
        value: int | float | None = self._typed(Expected.NUMBER, required)
        return value

    def object(self, *, required: bool = False) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self._typed(Expected.OBJECT, required)
        return value

    def array(self, *, required: bool = False, min_items: int = 0) -> list[Field] | None:
        """The list's entries as fields, or None when absent; at most ``MAX_ITEMS`` of them."""
        value: list[Any] | None = self._typed(Expected.ARRAY, required)
        if value is None:
            return None
        if len(value) < min_items:
            raise self.wording.too_small(self.where, min_items, Expected.ARRAY)
        if len(value) > MAX_ITEMS:
            raise self.wording.too_many(self.where, MAX_ITEMS)
        return [Field(item, self.wording, (*self.path, index)) for index, item in enumerate(value)]

    def entries(self) -> Iterator[Field]:
        """The list's entries (an absent list has none)."""
        yield from self.array() or ()

    def kind(self, *, required: bool = False) -> str | None:
        """The ``type`` of this object (which must be one), a string."""
        self.object(required=True)
        return self.get("type").string(required=required)
