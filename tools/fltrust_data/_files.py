"""File checks, CSV reading and value parsing that the data set readers share."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path


class DataMissingError(FileNotFoundError):
    """A data folder or data file that a reader needs does not exist."""


def require_data_file(data_dir: Path, relative: str) -> Path:
    """Return ``data_dir / relative``, or raise DataMissingError when it is not a file.

    The message names the data folder when the folder itself is missing, and
    the file otherwise.
    """
    subfolder = relative.split("/", 1)[0]
    if not data_dir.is_dir():
        raise DataMissingError(
            f"data folder not found: {data_dir}. Use the folder that contains {subfolder}/"
        )
    path = data_dir / relative
    if not path.is_file():
        raise DataMissingError(
            f"data file not found: {path}. The data folder {data_dir} must contain {relative}"
        )
    return path


def read_csv(
    path: Path,
    columns: Sequence[str],
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> tuple[tuple[str, ...], list[tuple[int, dict[str, str]]]]:
    """Read a CSV file with a header into its column names and (line number, row) pairs.

    Column names and values are stripped of surrounding whitespace. Blank lines
    are skipped. Line numbers count from 1 at the header, as editors show them.

    Raises:
        DataMissingError: when ``path`` is not a file.
        ValueError: when the file has no header or no data rows, lacks one of
            ``columns``, or has a row with another number of fields than the header.
    """
    if not path.is_file():
        raise DataMissingError(f"data file not found: {path}")
    with path.open(newline="", encoding=encoding) as file:
        reader = csv.reader(file, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: the file is empty, expected a header row")
        names = tuple(name.strip() for name in header)
        missing = [name for name in columns if name not in names]
        if missing:
            raise ValueError(
                f"{path}: missing columns {', '.join(missing)}. The header has {', '.join(names)}"
            )
        rows = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(names):
                raise ValueError(
                    f"{path}:{reader.line_num}: {len(fields)} fields, "
                    f"expected {len(names)} as in the header"
                )
            values = (value.strip() for value in fields)
            rows.append((reader.line_num, dict(zip(names, values, strict=True))))
    if not rows:
        raise ValueError(f"{path}: no data rows below the header")
    return names, rows


def parse_number(text: str, path: Path, line: int, column: str) -> float:
    """Parse a finite number, or raise ValueError naming the file, line and column."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{path}:{line}: column {column!r} is not a finite number: {text!r}")
    return value


def parse_timestamp(text: str, path: Path, line: int, column: str) -> datetime:
    """Parse an ISO timestamp (``YYYY-MM-DD HH:MM:SS``), or raise ValueError naming the place."""
    try:
        return datetime.fromisoformat(text)
    except ValueError as err:
        raise ValueError(
            f"{path}:{line}: invalid {column} {text!r}, expected YYYY-MM-DD HH:MM:SS"
        ) from err


def parse_label(text: str, path: Path, line: int, column: str) -> int:
    """Parse a 0/1 label written as an integer or a float (``1``, ``1.0``)."""
    value = parse_number(text, path, line, column)
    if value not in (0.0, 1.0):
        raise ValueError(f"{path}:{line}: column {column!r} must be 0 or 1, got {text!r}")
    return int(value)
