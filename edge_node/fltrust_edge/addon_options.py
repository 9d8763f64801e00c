"""Typed access to the add-on's options, with errors that name the option.

The Supervisor checks the options against the add-on's schema before it
starts the add-on, but the schema cannot express every rule, and a
hand-written options file passes no check at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class AddonOptionError(ValueError):
    """Invalid add-on options. The message starts with the option's name."""


class OptionReader:
    """One object of the add-on's options, with getters whose errors name the option.

    Empty strings count as not set, so that a text field cleared in the
    add-on's UI means the same as a field never filled in.
    """

    def __init__(self, data: Any, path: str, allowed: Iterable[str]) -> None:
        if not isinstance(data, dict):
            raise AddonOptionError(f"{path or 'options'}: expected an object, got {_type_of(data)}")
        self.data = data
        self.path = path
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise AddonOptionError(f"{self.name(unknown[0])}: unknown option")

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _value(self, key: str, required: bool) -> Any:
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                raise AddonOptionError(f"{self.name(key)}: missing required option")
            return None
        return value

    def _wrong_type(self, key: str, expected: str, secret: bool = False) -> AddonOptionError:
        value_text = "" if secret else f" ({_shorten(self.data[key])})"
        return AddonOptionError(
            f"{self.name(key)}: expected {expected}, got {_type_of(self.data[key])}{value_text}"
        )

    def text(self, key: str, required: bool = False, secret: bool = False) -> Any:
        value = self._value(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._wrong_type(key, "text", secret)
        _check_unicode(self.name(key), value)
        return value

    def integer(self, key: str) -> int | None:
        value = self._value(key, required=False)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise self._wrong_type(key, "an integer")
        return value

    def number(self, key: str) -> float | None:
        value = self._value(key, required=False)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise self._wrong_type(key, "a number")
        return None if value is None else float(value)

    def boolean(self, key: str) -> bool | None:
        value = self._value(key, required=False)
        if value is not None and not isinstance(value, bool):
            raise self._wrong_type(key, "true or false")
        return value

    def port(self, key: str) -> int | None:
        value = self.integer(key)
        if value is not None and not 1 <= value <= 65535:
            raise AddonOptionError(
                f"{self.name(key)}: must be from 1 to 65535, got {_shorten(value)}"
            )
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.text(key)
        if value is not None and value not in choices:
            raise AddonOptionError(
                f"{self.name(key)}: expected one of {', '.join(choices)}, got {_shorten(value)}"
            )
        return value

    def text_list(self, key: str) -> list[str]:
        value = self._value(key, required=False)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._wrong_type(key, "a list of text")
        for index, item in enumerate(value):
            item_name = f"{self.name(key)}[{index}]"
            if not isinstance(item, str):
                raise AddonOptionError(
                    f"{item_name}: expected text, got {_type_of(item)} ({_shorten(item)})"
                )
            if not item:
                raise AddonOptionError(f"{item_name}: must not be empty")
            _check_unicode(item_name, item)
        return value

    def objects(self, key: str, fields: frozenset[str]) -> list[OptionReader]:
        value = self._value(key, required=False)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._wrong_type(key, "a list")
        return [
            OptionReader(item, f"{self.name(key)}[{index}]", fields)
            for index, item in enumerate(value)
        ]


def _check_unicode(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        # JSON can carry a lone surrogate such as "\ud800", which no UTF-8 file can hold.
        raise AddonOptionError(
            f"{name}: invalid Unicode character at position {err.start + 1}"
        ) from err


def _type_of(value: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
    names |= {list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _shorten(value: Any, limit: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
