"""Timestamps of CSV rows and anomaly labels from NAB-style window files."""

from __future__ import annotations

import difflib
import json
import math
from datetime import UTC, datetime
from pathlib import Path


class MissingSeriesError(ValueError):
    """A label windows file has no entry for the requested series."""

    def __init__(self, path: Path, key: str, available: list[str]) -> None:
        """Build the message, with the closest key of the file as a suggestion."""
        message = f"label windows file {path} has no entry {key!r}"
        matches = difflib.get_close_matches(key, available, n=1)
        if matches:
            message += f"; did you mean {matches[0]!r}?"
        super().__init__(message)


def parse_timestamp(text: str) -> float:
    """Return Unix seconds for an ISO 8601 time or a number of Unix seconds.

    Times without a time zone are read as UTC. Raises ValueError otherwise.
    """
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"timestamp is not finite: {text!r}")
    return value


def load_label_windows(path: Path, key: str) -> list[tuple[float, float]]:
    """Read anomaly windows in the format of NAB's ``combined_windows.json``.

    The file maps a series name (``key``) to a list of ``[start, end]`` time
    pairs. A reading is anomalous when its time lies in a window, ends included.
    Only the entry ``key`` is validated.

    Raises:
        MissingSeriesError: the file has no entry ``key``.
        ValueError: the file cannot be read or is not in that format.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read label windows from {path}: {err}") from err
    except RecursionError as err:
        raise ValueError(f"cannot read label windows from {path}: JSON nests too deeply") from err
    if not isinstance(data, dict):
        raise ValueError(f"label windows file {path} is not a JSON object of series names")
    if key not in data:
        raise MissingSeriesError(path, key, sorted(data))
    entries = data[key]
    if not isinstance(entries, list):
        raise ValueError(f"{path}: the entry {key!r} is not a list of [start, end] pairs")
    windows = []
    for index, window in enumerate(entries):
        if not isinstance(window, list) or len(window) != 2:
            raise ValueError(f"{path}: window {index} of {key!r} is not a [start, end] pair")
        try:
            start, end = (parse_timestamp(str(edge)) for edge in window)
        except ValueError as err:
            raise ValueError(f"{path}: window {index} of {key!r}: {err}") from err
        windows.append((start, end))
    return windows
