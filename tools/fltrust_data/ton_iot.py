"""TON_IoT device telemetry, cleaned of the formatting that leaks the label.

The ``Train_Test_IoT_*.csv`` files need these steps before use:

- Every file starts with a UTF-8 byte order mark, so it is read as ``utf-8-sig``.
- Whitespace padding differs between normal and attack rows (the fridge's
  ``temp_condition`` is ``'high  '`` in normal rows and ``'high'`` in attack
  rows), so every name and value is stripped.
- Some columns contain words, and the garage door's ``sphone_signal`` mixes
  ``'true  '``/``'false  '`` in normal rows with ``1``/``0`` in attack rows.
  ``TON_IOT_DEVICES`` lists, per column, the words read as 1 and 0. A
  word in any other column is an error.
- Dates are written ``D-Mon-YY`` (``2-Apr-19``) and the rows are grouped by
  attack type, not by time. Rows are sorted by the parsed date and time. The
  sort is stable, so rows that share a second keep their file order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from ._files import parse_label, parse_number, read_csv, require_data_file

TON_IOT_FOLDER = "ton_iot"
# strptime's %b depends on the LC_TIME locale, so the English month abbreviation
# is replaced by its number and the result parsed with this format.
_NUMERIC_FORMAT = "%d-%m-%y %H:%M:%S"
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
NORMAL_TYPE = "normal"


@dataclass(frozen=True)
class TonIotDevice:
    """One TON_IoT device file and the encoding of its value columns.

    Attributes:
        file_name: file name below ``ton_iot/``.
        columns: the value columns, in the order of the value array.
        words: per column, the lower-case words read as numbers. A
            column without an entry contains only numbers.
    """

    file_name: str
    columns: tuple[str, ...]
    words: Mapping[str, Mapping[str, float]]


TON_IOT_DEVICES = {
    "fridge": TonIotDevice(
        "Train_Test_IoT_Fridge.csv",
        ("fridge_temperature", "temp_condition"),
        {"temp_condition": {"high": 1.0, "low": 0.0}},
    ),
    "garage_door": TonIotDevice(
        "Train_Test_IoT_Garage_Door.csv",
        ("door_state", "sphone_signal"),
        {
            "door_state": {"open": 1.0, "closed": 0.0},
            "sphone_signal": {"true": 1.0, "false": 0.0},
        },
    ),
    "gps_tracker": TonIotDevice("Train_Test_IoT_GPS_Tracker.csv", ("latitude", "longitude"), {}),
    "motion_light": TonIotDevice(
        "Train_Test_IoT_Motion_Light.csv",
        ("motion_status", "light_status"),
        {"light_status": {"on": 1.0, "off": 0.0}},
    ),
    "thermostat": TonIotDevice(
        "Train_Test_IoT_Thermostat.csv", ("current_temperature", "thermostat_status"), {}
    ),
}


@dataclass(frozen=True)
class TonIotData:
    """The rows of one TON_IoT device file, sorted by time.

    Attributes:
        device: key of ``TON_IOT_DEVICES``, such as ``"thermostat"``.
        columns: names of the value columns.
        timestamps: date and time of every row, without time zone.
        values: float64 array of shape (n_rows, len(columns)).
        labels: int64 array of shape (n_rows,), 0 for normal rows and 1 for attacks.
        attack_types: the ``type`` column, ``"normal"`` for normal rows.
    """

    device: str
    columns: tuple[str, ...]
    timestamps: tuple[datetime, ...]
    values: np.ndarray
    labels: np.ndarray
    attack_types: tuple[str, ...]


def read_ton_iot(data_dir: Path, device: str) -> TonIotData:
    """Read and clean one device file from ``data_dir/ton_iot``.

    Raises:
        ValueError: when ``device`` is unknown, or a row has an invalid date,
            time, value or label, or a label that contradicts its ``type``.
        DataMissingError: when ``data_dir`` or the device file is missing.
    """
    if device not in TON_IOT_DEVICES:
        raise ValueError(
            f"invalid TON_IoT device {device!r}, expected one of {', '.join(TON_IOT_DEVICES)}"
        )
    spec = TON_IOT_DEVICES[device]
    path = require_data_file(data_dir, f"{TON_IOT_FOLDER}/{spec.file_name}")
    _, rows = read_csv(path, ("date", "time", *spec.columns, "label", "type"), encoding="utf-8-sig")

    records = []
    for line, row in rows:
        stamp = _parse_timestamp(row["date"], row["time"], path, line)
        values = [
            _parse_value(row[name], spec.words.get(name, {}), path, line, name)
            for name in spec.columns
        ]
        label = parse_label(row["label"], path, line, "label")
        attack_type = row["type"].lower()
        if (label == 0) != (attack_type == NORMAL_TYPE):
            raise ValueError(
                f"{path}:{line}: label {label} contradicts type {row['type']!r}. "
                f"Label 0 must go with type {NORMAL_TYPE!r} and label 1 with an attack type"
            )
        records.append((stamp, values, label, attack_type))
    records.sort(key=lambda record: record[0])

    return TonIotData(
        device=device,
        columns=spec.columns,
        timestamps=tuple(stamp for stamp, _, _, _ in records),
        values=np.array([values for _, values, _, _ in records], dtype=np.float64),
        labels=np.array([label for _, _, label, _ in records], dtype=np.int64),
        attack_types=tuple(attack_type for _, _, _, attack_type in records),
    )


def _parse_timestamp(date: str, time: str, path: Path, line: int) -> datetime:
    day, _, rest = date.partition("-")
    month, _, year = rest.partition("-")
    try:
        numeric = f"{day}-{_MONTHS[month.lower()]}-{year}"
        return datetime.strptime(f"{numeric} {time}", _NUMERIC_FORMAT)
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"{path}:{line}: invalid date or time {date!r} {time!r}, "
            "expected D-Mon-YY (such as 2-Apr-19) and HH:MM:SS"
        ) from err


def _parse_value(
    text: str, words: Mapping[str, float], path: Path, line: int, column: str
) -> float:
    word = text.lower()
    if word in words:
        return words[word]
    if words:
        try:
            return parse_number(text, path, line, column)
        except ValueError as err:
            raise ValueError(
                f"{path}:{line}: column {column!r} is neither a number nor one of "
                f"{', '.join(words)}: {text!r}"
            ) from err
    return parse_number(text, path, line, column)
