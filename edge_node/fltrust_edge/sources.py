"""Reading sources: CSV replays and live MQTT sensor topics.

Both produce ``Sample`` objects, one row of raw values per reading in the
order of the device's ``features``. Invalid readings are logged and skipped.
A CSV line that is not UTF-8 or not valid CSV ends that device's replay with
an error (see ``csvfile``), and the node goes on.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .config import CsvSourceConfig, DeviceConfig, MqttSourceConfig
from .csvfile import open_csv, read_records
from .labels import parse_timestamp
from .throttle import ThrottledLogger

_LOGGER = logging.getLogger(__name__)

# Text payloads of switches and binary sensors (ESPHome publishes ON and OFF).
_BOOLEAN_WORDS = {"on": 1.0, "off": 0.0, "true": 1.0, "false": 0.0}
# Maximum duration in seconds of one wait of a CSV replay, far below threading.TIMEOUT_MAX.
MAX_WAIT_STEP = 3600.0

# Largest magnitude of a reading. Far larger ones overflow the squares of the
# moving standard deviation (beyond about 1e154) and swamp every other reading in
# the normalization, so one of them would stop training. No sensor of a home or a
# plant reads near 1e15; a counter that grows that large should be read as a rate.
MAX_READING = 1e15


@dataclass(frozen=True)
class Sample:
    """One reading of a device.

    Attributes:
        device_id: the device that produced the reading.
        values: one raw value per device feature, in the configured order.
        timestamp: Unix time of the reading: the CSV timestamp (naive times
            are read as UTC), the row number without a timestamp column, or
            the arrival time of an MQTT message.
        label: 1 for a labelled anomaly, 0 for normal, None when unlabelled.
        row: the CSV data row number (0 is the first row after the header).
    """

    device_id: str
    values: tuple[float, ...]
    timestamp: float
    label: int | None = None
    row: int | None = None


class CsvReplay:
    """Replays the rows of a CSV file as the readings of one device.

    Rows are numbered from 0 after the header. ``start_row`` and ``end_row``
    select the half-open slice [start_row, end_row), so several nodes can
    replay different parts of one series. Rows with a missing, non-numeric or
    non-finite value, timestamp or label, or a value beyond ``MAX_READING``,
    are skipped and counted.
    """

    def __init__(self, device: DeviceConfig) -> None:
        """Prepare the replay of ``device``, whose source must be a CSV source."""
        if not isinstance(device.source, CsvSourceConfig):
            raise TypeError(f"device {device.id} does not have a CSV source")
        self.device_id = device.id
        self.source: CsvSourceConfig = device.source
        self.skipped_rows = 0
        # Where and why the first skipped row of the last pass was invalid.
        self.first_problem = ""
        # Rows emitted by ``run`` so far, also known after it raised.
        self.emitted = 0
        self._windows: tuple[tuple[float, float], ...] | None = None
        if self.source.label_windows is not None:
            self._windows = self.source.anomaly_windows

    def samples(self) -> Iterator[Sample]:
        """Yield the valid rows of the configured slice in file order.

        Logs a warning with the count of skipped invalid rows, and one when
        ``start_row`` is past the end of the file.

        Raises:
            OSError: the file cannot be opened.
            CsvFormatError: a line is not UTF-8 or not valid CSV.
            ValueError: the header lacks a configured column.
        """
        source = self.source
        self.skipped_rows = 0
        self.first_problem = ""
        data_rows = 0
        with open_csv(source.path) as file:
            records = (fields for _, fields in read_records(file, source.path, source.delimiter))
            header = [name.strip() for name in next(records, [])]
            value_indexes = [header.index(column) for column in source.value_columns]
            timestamp_index = (
                header.index(source.timestamp_column) if source.timestamp_column else None
            )
            label_index = header.index(source.label_column) if source.label_column else None
            for row_number, row in enumerate(records):
                data_rows = row_number + 1
                if row_number < source.start_row:
                    continue
                if source.end_row is not None and row_number >= source.end_row:
                    break
                if not row or all(not cell.strip() for cell in row):
                    continue
                try:
                    yield self._parse_row(
                        row, row_number, value_indexes, timestamp_index, label_index
                    )
                except (ValueError, IndexError) as err:
                    self.skipped_rows += 1
                    if not self.first_problem:
                        self.first_problem = f"row {row_number}: {err}"
        if data_rows <= source.start_row:
            _LOGGER.warning(
                "%s: start_row %s is past the end of %s, which has %s data rows, so no row "
                "was replayed",
                self.device_id,
                source.start_row,
                source.path,
                data_rows,
            )
        if self.skipped_rows:
            _LOGGER.warning(
                "%s: skipped %s invalid %s of %s, the first at %s",
                self.device_id,
                self.skipped_rows,
                "row" if self.skipped_rows == 1 else "rows",
                source.path,
                self.first_problem,
            )

    def _parse_row(
        self,
        row: list[str],
        row_number: int,
        value_indexes: list[int],
        timestamp_index: int | None,
        label_index: int | None,
    ) -> Sample:
        source = self.source
        values = tuple(
            _parse_field(row, index, column, _parse_number)
            for index, column in zip(value_indexes, source.value_columns, strict=True)
        )
        timestamp = (
            float(row_number)
            if timestamp_index is None
            else _parse_field(row, timestamp_index, source.timestamp_column, parse_timestamp)
        )
        label = None
        if label_index is not None:
            label = int(_parse_field(row, label_index, source.label_column, _parse_number) != 0)
        elif self._windows is not None:
            label = int(any(start <= timestamp <= end for start, end in self._windows))
        return Sample(self.device_id, values, timestamp, label, row_number)

    def run(
        self,
        emit: Callable[[Sample], None],
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> int:
        """Emit the rows at the configured pace until the slice ends or ``stop`` is set.

        ``rows_per_second`` spaces the rows evenly. ``speedup`` divides the
        time between consecutive timestamps, and a timestamp that goes
        backwards is replayed without delay. Without either, the pace is one
        row per second. Returns the number of rows emitted, which
        ``emitted`` also holds when the file turns out to be invalid.

        Raises:
            OSError: the file cannot be opened.
            ValueError: see ``samples``.
        """
        source = self.source
        interval = 1.0 / (source.rows_per_second or 1.0)
        start = clock()
        offset = 0.0
        previous: Sample | None = None
        self.emitted = 0
        for sample in self.samples():
            if previous is not None:
                if source.speedup is not None:
                    offset += max(0.0, sample.timestamp - previous.timestamp) / source.speedup
                else:
                    offset += interval
            # A slow pace or a large gap between timestamps can ask for a delay
            # beyond what Event.wait accepts (it raises OverflowError), or an
            # infinite one, so the delay is waited for in steps.
            delay = start + offset - clock()
            while delay > MAX_WAIT_STEP and not stop.is_set():
                stop.wait(MAX_WAIT_STEP)
                delay = start + offset - clock()
            if delay > 0 and stop.wait(delay):
                break
            if stop.is_set():
                break
            emit(sample)
            self.emitted += 1
            previous = sample
        return self.emitted


def _check_reading(number: float, where: str) -> float:
    """Return ``number`` unless it is not finite or beyond ``MAX_READING`` in magnitude."""
    if not math.isfinite(number):
        raise ValueError(f"{where} is not finite: {number}")
    if abs(number) > MAX_READING:
        raise ValueError(f"{where} is out of range: {number:g}, beyond ±{MAX_READING:g}")
    return number


def _parse_field(
    row: list[str], index: int, column: str | None, parse: Callable[[str], float]
) -> float:
    """Return ``parse`` of one cell, naming its column in the error of a missing or bad cell."""
    if index >= len(row):
        raise ValueError(f"column {column!r}: missing")
    try:
        return parse(row[index])
    except ValueError as err:
        raise ValueError(f"column {column!r}: {err}") from err


def _parse_number(text: str) -> float:
    return _check_reading(float(text.strip()), "value")


def extract_value(payload: bytes | str, value_path: str | None = None) -> float:
    """Return the number in an MQTT payload.

    Without ``value_path`` the payload is a plain number (``21.5``, as ESPHome
    publishes). With it, the payload is a JSON object and ``value_path`` names
    the value by dotted keys (``temperature``, ``a.b``). A digit key indexes
    a list. ON/OFF and true/false read as 1 and 0.

    Raises:
        ValueError: the payload is not valid, the path is missing, or the value
            is not a finite number within ``MAX_READING``.
    """
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    except UnicodeDecodeError as err:
        raise ValueError("payload is not UTF-8 text") from err
    text = text.strip()
    if value_path is None:
        return _to_number(_plain_value(text), "payload")
    try:
        value: Any = json.loads(text)
    except ValueError as err:
        raise ValueError("payload is not JSON") from err
    except RecursionError as err:
        raise ValueError("payload nests too deeply") from err
    for key in value_path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise ValueError(f"payload has no value at {value_path!r}")
    return _to_number(value, value_path)


def _plain_value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _to_number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _BOOLEAN_WORDS:
            return _BOOLEAN_WORDS[word]
        try:
            value = float(word)
        except ValueError as err:
            raise ValueError(f"{where} is not a number: {value[:40]!r}") from err
    if not isinstance(value, int | float):
        raise ValueError(f"{where} is not a number: {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError as err:
        # A JSON integer with hundreds of digits does not fit a float.
        raise ValueError(
            f"{where} is out of range: an integer of {len(str(value))} digits"
        ) from err
    return _check_reading(number, where)


class MqttSensor:
    """Turns messages on a device's sensor topics into samples.

    A device with several features may read them from several topics, or from
    one JSON topic with several value paths. Each message updates the features
    it carries. Once every feature has a value, each message emits a sample,
    which repeats the last value of each feature that the message did not carry.
    """

    def __init__(self, device: DeviceConfig) -> None:
        """Prepare the sensor of ``device``, whose source must be an MQTT source."""
        if not isinstance(device.source, MqttSourceConfig):
            raise TypeError(f"device {device.id} does not have an MQTT source")
        self.device_id = device.id
        self.features = device.features
        self._topics = device.source.topics
        self._latest: dict[str, float] = {}
        self._warnings = ThrottledLogger(_LOGGER)
        self.rejected = 0

    @property
    def topics(self) -> tuple[str, ...]:
        """Topics to subscribe to, without duplicates."""
        return tuple(dict.fromkeys(t.topic for t in self._topics))

    def handle(self, topic: str, payload: bytes, now: float) -> Sample | None:
        """Return the sample that a message completes, or None."""
        updated = False
        for entry in self._topics:
            if entry.topic != topic:
                continue
            try:
                self._latest[entry.feature] = extract_value(payload, entry.value_path)
            except ValueError as err:
                self.rejected += 1
                self._warnings.warning(
                    f"{self.device_id}/{entry.feature}",
                    "%s: skipped reading of %s on %s: %s",
                    self.device_id,
                    entry.feature,
                    topic,
                    err,
                )
                continue
            updated = True
        if not updated or len(self._latest) < len(self.features):
            return None
        values = tuple(self._latest[feature] for feature in self.features)
        return Sample(self.device_id, values, now)
