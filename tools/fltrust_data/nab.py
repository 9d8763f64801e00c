"""NAB realKnownCause series with point labels taken from their anomaly windows.

Each series is a CSV file with the columns ``timestamp,value``. NAB keeps the
labels apart, in ``combined_windows.json``: anomaly windows ``[start, end]``
keyed by ``realKnownCause/<file name>``. A row is an anomaly when its timestamp
lies inside a window, ends included. The window bounds carry microseconds
(``.000000``) and the rows do not, so both are compared as parsed datetimes.

Rows stay in file order. In ``machine_temperature_system_failure.csv`` the
clock goes back 55 minutes once, so 12 timestamps repeat. Each of those rows
is labelled by its own timestamp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from ._files import (
    DataMissingError,
    parse_number,
    parse_timestamp,
    read_csv,
    require_data_file,
)

NAB_FOLDER = "nab-realKnownCause"
NAB_WINDOWS_KEY_PREFIX = "realKnownCause/"

Window = tuple[datetime, datetime]


@dataclass(frozen=True)
class NabSeries:
    """One NAB series in file order, with a 0/1 label per row.

    Attributes:
        name: file name without ``.csv``, such as ``machine_temperature_system_failure``.
        timestamps: timestamp of every row, without time zone.
        values: float64 array of shape (n_rows,).
        labels: int64 array of shape (n_rows,), 1 inside an anomaly window.
        windows: the anomaly windows as (start, end) datetimes.
    """

    name: str
    timestamps: tuple[datetime, ...]
    values: np.ndarray
    labels: np.ndarray
    windows: tuple[Window, ...]


def read_nab_windows(windows_path: Path, file_name: str) -> tuple[Window, ...]:
    """Read the anomaly windows of one series from a ``combined_windows.json`` file.

    Raises:
        DataMissingError: when ``windows_path`` is not a file.
        ValueError: when the file has no entry for ``file_name`` or a bound is
            not an ISO date and time.
    """
    if not windows_path.is_file():
        raise DataMissingError(f"data file not found: {windows_path}")
    key = f"{NAB_WINDOWS_KEY_PREFIX}{file_name}"
    all_windows = json.loads(windows_path.read_text(encoding="utf-8"))
    if key not in all_windows:
        raise ValueError(f"{windows_path}: no anomaly windows for {key!r}")
    windows = []
    for start, end in all_windows[key]:
        try:
            windows.append((datetime.fromisoformat(start), datetime.fromisoformat(end)))
        except ValueError as err:
            raise ValueError(
                f"{windows_path}: invalid window [{start!r}, {end!r}] for {key!r}"
            ) from err
    return tuple(windows)


def read_nab_file(csv_path: Path, windows_path: Path) -> NabSeries:
    """Read a NAB series and label its rows with the windows stored under its file name.

    Raises:
        DataMissingError: when either file is missing.
        ValueError: when a row has an invalid timestamp or value, or the windows
            file has no entry for the series.
    """
    windows = read_nab_windows(windows_path, csv_path.name)
    _, rows = read_csv(csv_path, ("timestamp", "value"))
    timestamps = []
    values = []
    for line, row in rows:
        timestamps.append(parse_timestamp(row["timestamp"], csv_path, line, "timestamp"))
        values.append(parse_number(row["value"], csv_path, line, "value"))
    labels = [int(any(start <= stamp <= end for start, end in windows)) for stamp in timestamps]
    return NabSeries(
        name=csv_path.stem,
        timestamps=tuple(timestamps),
        values=np.array(values, dtype=np.float64),
        labels=np.array(labels, dtype=np.int64),
        windows=windows,
    )


def read_nab(data_dir: Path, series: str) -> NabSeries:
    """Read a series from NAB's own layout below ``data_dir/nab-realKnownCause``.

    ``series`` is the file name without ``.csv``, such as
    ``"machine_temperature_system_failure"``.
    """
    csv_path = require_data_file(data_dir, f"{NAB_FOLDER}/data/realKnownCause/{series}.csv")
    windows_path = require_data_file(data_dir, f"{NAB_FOLDER}/labels/combined_windows.json")
    return read_nab_file(csv_path, windows_path)
