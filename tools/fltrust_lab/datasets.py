"""CSV inputs for the edge nodes: the shipped NAB series and cleaned copies of shared data.

The two NAB series in ``data/nab/`` are replayed in place, labelled by their
anomaly windows. TON_IoT and SKAB may not be copied into the repository, so
they are read from the shared data folder (``../shared/data`` by default) with
the readers of ``fltrust_data``, which also clean them, and written as CSV
files into the run folder:

- TON_IoT: sorted by date and time, with word values as 1/0. Every
  ``step``-th row is kept so that a replay fits a short run.
- SKAB: commas instead of semicolons, snake_case column names and 0/1 labels.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fltrust_data import (
    SKAB_COLUMNS,
    SKAB_FOLDER,
    TON_IOT_DEVICES,
    TON_IOT_FOLDER,
    DataMissingError,
    NabSeries,
    read_nab_file,
    read_skab,
    read_ton_iot,
)

from . import SHIPPED_NAB_DIR

NAB_FILES = {
    "ambient": "ambient_temperature_system_failure.csv",
    "machine": "machine_temperature_system_failure.csv",
}
NAB_WINDOWS_FILE = "combined_windows.json"
SHIPPED_NAB_HINT = "The NAB files ship in data/nab/ of the repository"

# The TON_IoT devices of the demo's smart home, keys of fltrust_data.TON_IOT_DEVICES.
TON_IOT_SCENARIO_DEVICES = ("thermostat", "motion_light")


@dataclass(frozen=True)
class DeviceData:
    """A CSV file that one device replays, with its columns and labels.

    Rows ``start_row`` up to ``end_row`` (exclusive, counted after the header)
    are replayed. Labels come from ``label_column`` or, for NAB, from the
    windows in ``label_windows`` under ``label_windows_key``.
    """

    path: Path
    value_columns: tuple[str, ...]
    timestamp_column: str | None
    n_rows: int
    n_anomalies: int
    description: str
    label_column: str | None = None
    label_windows: Path | None = None
    label_windows_key: str | None = None
    delimiter: str = ","
    start_row: int = 0
    end_row: int | None = None

    def source_table(self, rows_per_second: float) -> dict[str, Any]:
        """Return the ``[devices.source]`` table of an edge node configuration."""
        table: dict[str, Any] = {
            "type": "csv",
            "path": str(self.path),
            "value_columns": list(self.value_columns),
            "delimiter": self.delimiter,
            "rows_per_second": round(rows_per_second, 3),
            "start_row": self.start_row,
        }
        if self.end_row is not None:
            table["end_row"] = self.end_row
        if self.timestamp_column is not None:
            table["timestamp_column"] = self.timestamp_column
        if self.label_column is not None:
            table["label_column"] = self.label_column
        if self.label_windows is not None:
            table["label_windows"] = str(self.label_windows)
            table["label_windows_key"] = self.label_windows_key
        return table


def shared_sets_present(data_dir: Path) -> dict[str, bool]:
    """Return which shared data sets the scenarios can use from ``data_dir``."""
    return {
        "ton_iot": all(
            (data_dir / TON_IOT_FOLDER / TON_IOT_DEVICES[device].file_name).is_file()
            for device in TON_IOT_SCENARIO_DEVICES
        ),
        "skab": (data_dir / SKAB_FOLDER / "valve1").is_dir(),
    }


def _require(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise DataMissingError(f"data file not found: {path}. {hint}")
    return path


def _format_reading(value: float) -> str:
    """Format a reading as the shortest text that parses back to the same float.

    Whole numbers are written without ``.0``, as TON_IoT and NAB write them, so
    the 0/1 states of TON_IoT read ``0`` and ``1``.
    """
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


# NAB.


def _read_shipped_nab(series: str, nab_dir: Path) -> NabSeries:
    if series not in NAB_FILES:
        raise ValueError(f"invalid NAB series {series!r}, expected one of {', '.join(NAB_FILES)}")
    return read_nab_file(
        _require(nab_dir / NAB_FILES[series], SHIPPED_NAB_HINT),
        _require(nab_dir / NAB_WINDOWS_FILE, SHIPPED_NAB_HINT),
    )


def nab_labels(series: str, nab_dir: Path = SHIPPED_NAB_DIR) -> list[int]:
    """Return the 0/1 label of every row of a NAB series, 1 inside an anomaly window.

    ``series`` is ``"ambient"`` (office temperature) or ``"machine"`` (industrial
    machine temperature).
    """
    return _read_shipped_nab(series, nab_dir).labels.tolist()


def nab_device(
    series: str,
    start_row: int = 0,
    end_row: int | None = None,
    nab_dir: Path = SHIPPED_NAB_DIR,
) -> DeviceData:
    """Return a replay of rows ``start_row:end_row`` of a shipped NAB series.

    ``series`` is ``"ambient"`` (office temperature) or ``"machine"`` (industrial
    machine temperature).
    """
    labels = nab_labels(series, nab_dir)
    end = len(labels) if end_row is None else min(end_row, len(labels))
    if not 0 <= start_row < end:
        raise ValueError(f"invalid NAB slice {start_row}:{end_row} of {len(labels)} rows")
    return DeviceData(
        path=nab_dir / NAB_FILES[series],
        value_columns=("value",),
        timestamp_column="timestamp",
        n_rows=end - start_row,
        n_anomalies=sum(labels[start_row:end]),
        description=f"NAB {NAB_FILES[series]} rows {start_row}-{end}",
        label_windows=nab_dir / NAB_WINDOWS_FILE,
        label_windows_key=f"realKnownCause/{NAB_FILES[series]}",
        start_row=start_row,
        end_row=end if end_row is not None else None,
    )


def write_nab_slice(
    series: str, out_path: Path, start_row: int, end_row: int, nab_dir: Path = SHIPPED_NAB_DIR
) -> DeviceData:
    """Write rows ``start_row:end_row`` of a NAB series with a ``label`` column.

    The end-to-end tests use these small files.
    """
    nab = _read_shipped_nab(series, nab_dir)
    rows = range(len(nab.labels))[start_row:end_row]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(["timestamp", "value", "label"])
        for index in rows:
            writer.writerow(
                [
                    nab.timestamps[index].isoformat(sep=" "),
                    _format_reading(float(nab.values[index])),
                    int(nab.labels[index]),
                ]
            )
    return DeviceData(
        path=out_path,
        value_columns=("value",),
        timestamp_column="timestamp",
        n_rows=len(rows),
        n_anomalies=int(nab.labels[start_row : start_row + len(rows)].sum()),
        description=f"NAB {NAB_FILES[series]} rows {start_row}-{start_row + len(rows)}",
        label_column="label",
    )


# TON_IoT.


def clean_ton_iot(device: str, data_dir: Path, out_dir: Path, step: int = 1) -> DeviceData:
    """Write a cleaned, time-sorted copy of one TON_IoT device file and return its replay.

    ``device`` is a key of ``fltrust_data.TON_IOT_DEVICES``, such as
    ``"thermostat"`` or ``"motion_light"``. Every ``step``-th row of the sorted
    file is kept.
    """
    if step < 1:
        raise ValueError(f"step must be at least 1, got {step}")
    data = read_ton_iot(data_dir, device)
    kept_rows = range(0, len(data.labels), step)

    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"ton_iot_{device}.csv"
    with out_path.open("w", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(["timestamp", *data.columns, "label"])
        for index in kept_rows:
            writer.writerow(
                [
                    data.timestamps[index].isoformat(sep=" "),
                    *(_format_reading(value) for value in data.values[index].tolist()),
                    int(data.labels[index]),
                ]
            )
    return DeviceData(
        path=out_path,
        value_columns=data.columns,
        timestamp_column="timestamp",
        n_rows=len(kept_rows),
        n_anomalies=int(data.labels[::step].sum()),
        description=(
            f"TON_IoT {TON_IOT_DEVICES[device].file_name}, sorted by time, 1 row in {step} kept"
        ),
        label_column="label",
    )


# SKAB.


def _snake_case(name: str) -> str:
    name = re.sub(r"RMS$", "_rms", name.replace(" ", "_"))
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().replace("__", "_")


def skab_feature_names() -> tuple[str, ...]:
    """Return the SKAB sensor columns as the snake_case names the cleaned copies use."""
    return tuple(_snake_case(name) for name in SKAB_COLUMNS)


def clean_skab(experiment: str, data_dir: Path, out_dir: Path) -> DeviceData:
    """Write a comma-separated copy of one SKAB experiment and return its replay.

    ``experiment`` is a path below ``skab/``, such as ``"valve1/1"``. The copy of
    ``"anomaly-free/anomaly-free"``, which has no labels, has no label column.
    """
    data = read_skab(data_dir, experiment)
    features = skab_feature_names()
    labelled = data.labels is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"skab_{experiment.replace('/', '_')}.csv"
    with out_path.open("w", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(["timestamp", *features, *(["label"] if labelled else [])])
        for index, stamp in enumerate(data.timestamps):
            # SKAB writes whole readings as 32.0, and repr keeps that text.
            row = [stamp.isoformat(sep=" "), *(repr(v) for v in data.values[index].tolist())]
            if data.labels is not None:
                row.append(int(data.labels[index]))
            writer.writerow(row)
    return DeviceData(
        path=out_path,
        value_columns=features,
        timestamp_column="timestamp",
        n_rows=len(data.timestamps),
        n_anomalies=0 if data.labels is None else int(data.labels.sum()),
        description=f"SKAB {experiment}.csv",
        label_column="label" if labelled else None,
    )
