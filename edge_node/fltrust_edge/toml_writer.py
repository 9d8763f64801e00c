"""Serialization of a configuration document to TOML, the format that ``load_config`` reads.

The standard library reads TOML (``tomllib``) but cannot write it. This writer
covers the value types of the node's configuration: strings, booleans,
integers, floats, lists of those, tables and arrays of tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def dumps_toml(document: Mapping[str, Any]) -> str:
    """Return ``document`` as TOML text.

    Raises:
        TypeError: a value has a type that TOML cannot represent here.
    """
    lines: list[str] = []
    _write_table(lines, document, ())
    return "\n".join(lines).lstrip("\n") + "\n"


def _write_table(lines: list[str], table: Mapping[str, Any], path: tuple[str, ...]) -> None:
    # TOML requires a table's own keys before the headers of its sub-tables.
    for key, value in table.items():
        if not _is_table(value) and not _is_table_array(value):
            lines.append(f"{_format_key(key)} = {_format_value(value)}")
    for key, value in table.items():
        child = (*path, key)
        header = ".".join(_format_key(part) for part in child)
        if _is_table(value):
            lines += ["", f"[{header}]"]
            _write_table(lines, value, child)
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{header}]]"]
                _write_table(lines, item, child)


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_table(item) for item in value)


def _format_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _format_string(key)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        # repr gives TOML's forms too: 1e-05, inf and nan.
        return repr(value)
    if isinstance(value, str):
        return _format_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format_value(item) for item in value) + "]"
    raise TypeError(f"cannot write a value of type {type(value).__name__} as TOML")


def _format_string(value: str) -> str:
    """Return a TOML basic string.

    TOML forbids control characters other than tab in basic strings, so they
    are escaped. Other characters are written as they are, and the file is
    UTF-8 as TOML requires.
    """
    parts = []
    for char in value:
        code = ord(char)
        if char in _ESCAPES:
            parts.append(_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(char)
    return '"' + "".join(parts) + '"'
