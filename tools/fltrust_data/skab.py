"""SKAB water-pump experiments: eight sensor columns and 0/1 labels per row.

Each experiment is one semicolon-separated file, such as ``skab/valve1/3.csv``,
with a ``datetime`` column, the sensor columns of ``SKAB_COLUMNS`` (one name
contains spaces) and the labels ``anomaly`` and ``changepoint`` written as
``0.0``/``1.0``. ``anomaly-free/anomaly-free.csv`` has no label columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from ._files import parse_label, parse_number, parse_timestamp, read_csv, require_data_file

SKAB_FOLDER = "skab"
SKAB_COLUMNS = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)


@dataclass(frozen=True)
class SkabExperiment:
    """One SKAB experiment file in file order.

    Attributes:
        name: path below ``skab/`` without ``.csv``, such as ``valve1/3``.
        timestamps: timestamp of every row, without time zone.
        values: float64 array of shape (n_rows, 8), columns in ``SKAB_COLUMNS`` order.
        labels: int64 array of shape (n_rows,) from ``anomaly``, None when the
            file has no label columns.
        changepoints: int64 array of shape (n_rows,) from ``changepoint``, None
            when the file has no such column.
    """

    name: str
    timestamps: tuple[datetime, ...]
    values: np.ndarray
    labels: np.ndarray | None
    changepoints: np.ndarray | None


def read_skab(data_dir: Path, experiment: str) -> SkabExperiment:
    """Read one experiment, such as ``"valve1/3"`` or ``"anomaly-free/anomaly-free"``.

    Raises:
        DataMissingError: when ``data_dir`` or the experiment file is missing.
        ValueError: when a column is missing or a row has an invalid timestamp,
            value or label.
    """
    path = require_data_file(data_dir, f"{SKAB_FOLDER}/{experiment}.csv")
    header, rows = read_csv(path, ("datetime", *SKAB_COLUMNS), delimiter=";")
    label_columns = [name for name in ("anomaly", "changepoint") if name in header]

    timestamps = []
    values = []
    labels: dict[str, list[int]] = {name: [] for name in label_columns}
    for line, row in rows:
        timestamps.append(parse_timestamp(row["datetime"], path, line, "datetime"))
        values.append([parse_number(row[name], path, line, name) for name in SKAB_COLUMNS])
        for name in label_columns:
            labels[name].append(parse_label(row[name], path, line, name))

    return SkabExperiment(
        name=experiment,
        timestamps=tuple(timestamps),
        values=np.array(values, dtype=np.float64),
        labels=_label_array(labels.get("anomaly")),
        changepoints=_label_array(labels.get("changepoint")),
    )


def _label_array(labels: list[int] | None) -> np.ndarray | None:
    return None if labels is None else np.array(labels, dtype=np.int64)
