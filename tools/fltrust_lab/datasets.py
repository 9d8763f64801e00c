"""CSV inputs for the edge nodes: the shipped NAB series and cleaned copies of shared data.

The two NAB series in ``data/nab/`` are replayed in place, labelled by their
anomaly windows. TON_IoT and SKAB may not be copied into the repository, so
they are read from the shared data folder (``../shared/data`` by default) and
written as cleaned CSV files into the run folder:

- TON_IoT: the files carry a UTF-8 byte order mark and whitespace padding that
  differs between normal and attack rows, so every field is stripped and
  ``true``/``false``/``on``/``off`` become 1/0. Rows are sorted by the parsed
  date and time, because the files are grouped by attack type, and every
  ``step``-th row is kept so that a replay fits a short run.
- SKAB: semicolon-separated with spaces in a column name and labels written as
  ``0.0``/``1.0``; the copy uses commas, snake_case names and 0/1 labels.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import SHIPPED_NAB_DIR

NAB_FILES = {
    "ambient": "ambient_temperature_system_failure.csv",
    "machine": "machine_temperature_system_failure.csv",
}
NAB_WINDOWS_FILE = "combined_windows.json"

TON_IOT_FILES = {
    "thermostat": ("Train_Test_IoT_Thermostat.csv", ("current_temperature", "thermostat_status")),
    "motion_light": ("Train_Test_IoT_Motion_Light.csv", ("motion_status", "light_status")),
}
TON_IOT_BOOLEANS = {"true": 1, "false": 0, "on": 1, "off": 0}
TON_IOT_DATE_FORMAT = "%d-%b-%y %H:%M:%S"

SKAB_FEATURES = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)


class DataMissingError(FileNotFoundError):
    """A data file that a scenario needs does not exist."""


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
            (data_dir / "ton_iot" / name).is_file() for name, _ in TON_IOT_FILES.values()
        ),
        "skab": (data_dir / "skab" / "valve1").is_dir(),
    }


def _require(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise DataMissingError(f"data file not found: {path}. {hint}")
    return path


# NAB.


def nab_windows(series: str, nab_dir: Path = SHIPPED_NAB_DIR) -> list[tuple[str, str]]:
    """Return the anomaly windows of a shipped NAB series as (start, end) timestamps."""
    path = _require(nab_dir / NAB_WINDOWS_FILE, "The NAB files ship in data/nab/ of the repository")
    windows = json.loads(path.read_text())[f"realKnownCause/{NAB_FILES[series]}"]
    return [(start, end) for start, end in windows]


def nab_labels(series: str, nab_dir: Path = SHIPPED_NAB_DIR) -> list[int]:
    """Return the 0/1 label of every row of a NAB series, 1 inside an anomaly window.

    The window bounds carry microseconds (``.000000``) and the rows do not, so
    both are compared as parsed datetimes, ends included.
    """
    windows = [
        (datetime.fromisoformat(start), datetime.fromisoformat(end))
        for start, end in nab_windows(series, nab_dir)
    ]
    path = _require(
        nab_dir / NAB_FILES[series], "The NAB files ship in data/nab/ of the repository"
    )
    labels = []
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            stamp = datetime.fromisoformat(row["timestamp"])
            labels.append(int(any(start <= stamp <= end for start, end in windows)))
    return labels


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
    if series not in NAB_FILES:
        raise ValueError(f"invalid NAB series {series!r}, expected one of {', '.join(NAB_FILES)}")
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
    labels = nab_labels(series, nab_dir)
    with (nab_dir / NAB_FILES[series]).open(newline="") as source:
        rows = list(csv.DictReader(source))[start_row:end_row]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(["timestamp", "value", "label"])
        for index, row in enumerate(rows, start=start_row):
            writer.writerow([row["timestamp"], row["value"], labels[index]])
    return DeviceData(
        path=out_path,
        value_columns=("value",),
        timestamp_column="timestamp",
        n_rows=len(rows),
        n_anomalies=sum(labels[start_row : start_row + len(rows)]),
        description=f"NAB {NAB_FILES[series]} rows {start_row}-{start_row + len(rows)}",
        label_column="label",
    )


# TON_IoT.


def _ton_iot_number(value: str, column: str, path: Path, line: int) -> float:
    text = value.strip()
    if text.lower() in TON_IOT_BOOLEANS:
        return TON_IOT_BOOLEANS[text.lower()]
    try:
        return float(text)
    except ValueError as err:
        raise ValueError(f"{path}:{line}: column {column!r} is not a number: {value!r}") from err


def clean_ton_iot(device: str, data_dir: Path, out_dir: Path, step: int = 1) -> DeviceData:
    """Write a cleaned, time-sorted copy of one TON_IoT device file and return its replay.

    ``device`` is ``"thermostat"`` or ``"motion_light"``. Every ``step``-th row
    of the sorted file is kept. The sort is stable, so rows that share a second
    keep their file order.
    """
    if device not in TON_IOT_FILES:
        raise ValueError(
            f"invalid TON_IoT device {device!r}, expected one of {', '.join(TON_IOT_FILES)}"
        )
    if step < 1:
        raise ValueError(f"step must be at least 1, got {step}")
    file_name, features = TON_IOT_FILES[device]
    path = _require(
        data_dir / "ton_iot" / file_name, "Pass --data with the folder that contains ton_iot/"
    )
    rows: list[tuple[datetime, list[float], int]] = []
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        for line, raw in enumerate(reader, start=2):
            record = {key.strip(): (value or "").strip() for key, value in raw.items()}
            stamp = datetime.strptime(f"{record['date']} {record['time']}", TON_IOT_DATE_FORMAT)
            values = [_ton_iot_number(record[name], name, path, line) for name in features]
            rows.append((stamp, values, int(_ton_iot_number(record["label"], "label", path, line))))
    rows.sort(key=lambda row: row[0])
    thinned = rows[::step]

    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"ton_iot_{device}.csv"
    with out_path.open("w", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(["timestamp", *features, "label"])
        for stamp, values, label in thinned:
            writer.writerow([stamp.isoformat(sep=" "), *(f"{v:g}" for v in values), label])
    return DeviceData(
        path=out_path,
        value_columns=features,
        timestamp_column="timestamp",
        n_rows=len(thinned),
        n_anomalies=sum(label for _, _, label in thinned),
        description=f"TON_IoT {file_name}, sorted by time, 1 row in {step} kept",
        label_column="label",
    )


# SKAB.


def _snake_case(name: str) -> str:
    name = re.sub(r"RMS$", "_rms", name.replace(" ", "_"))
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().replace("__", "_")


def skab_feature_names() -> tuple[str, ...]:
    """Return the SKAB sensor columns as the snake_case names the cleaned copies use."""
    return tuple(_snake_case(name) for name in SKAB_FEATURES)


def clean_skab(experiment: str, data_dir: Path, out_dir: Path) -> DeviceData:
    """Write a comma-separated copy of one SKAB experiment and return its replay.

    ``experiment`` is a path below ``skab/``, such as ``"valve1/1"``.
    """
    path = _require(
        data_dir / "skab" / f"{experiment}.csv", "Pass --data with the folder that contains skab/"
    )
    features = skab_feature_names()
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"skab_{experiment.replace('/', '_')}.csv"
    n_rows = 0
    n_anomalies = 0
    with path.open(newline="") as source, out_path.open("w", newline="") as target:
        reader = csv.DictReader(source, delimiter=";")
        writer = csv.writer(target)
        writer.writerow(["timestamp", *features, "label"])
        for raw in reader:
            label = int(float(raw["anomaly"]) != 0)
            writer.writerow([raw["datetime"], *(raw[name] for name in SKAB_FEATURES), label])
            n_rows += 1
            n_anomalies += label
    return DeviceData(
        path=out_path,
        value_columns=features,
        timestamp_column="timestamp",
        n_rows=n_rows,
        n_anomalies=n_anomalies,
        description=f"SKAB {experiment}.csv",
        label_column="label",
    )
