"""Loaders that cut the shared data sets into per-node slices.

Every loader returns ``NodeData``: the features of the rows a node trains on
(normal rows only), and the features and 0/1 labels of the rows it is tested
on. Features come from ``fltrust_core.preprocessing.extract_features``, the
same code the edge node runs, computed over each node's whole series so that
the causal windows of the test rows see the readings before them.

- SKAB (``skab/``): one node per experiment file. It trains on the first
  ``train_rows`` rows, which precede the valve fault in every ``valve1`` file
  (the fault starts at row 566 or later), and is tested on the rest of the
  file. ``anomaly-free.csv`` was recorded in another operating regime (volume
  flow about 125 instead of 32 L/min). It gives an honest node whose data is
  merely different, without labels.
- NAB realKnownCause (``nab-realKnownCause/``): one univariate series cut into
  contiguous time slices of equal length, one per node. A node trains on the
  first ``train_rows`` rows of its slice that lie outside every anomaly window
  and is tested on the remaining rows.
- TON_IoT (``ton_iot/``): the files are cleaned of their formatting leaks
  (byte order mark, whitespace padding that differs between normal and attack
  rows, ``true``/``false`` strings among numbers), and rows are sorted by time.
  Normal and attack rows come from different days, so each node gets one
  contiguous block of normal rows and one of attack rows. It trains on the
  first half of its normal block (at most ``train_rows`` rows) and is tested
  on the second half plus its attack block. The rows are not one time series,
  so features are the raw values of each row, without windows.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

import numpy as np
from fltrust_core.preprocessing import extract_features


class DataMissingError(FileNotFoundError):
    """A data file that a federation needs does not exist."""


@dataclass(frozen=True)
class FeatureSettings:
    """Feature extraction of one device kind, the settings of an edge node's device."""

    smoothing_window: int = 6
    long_window: int = 48
    extra_features: tuple[str, ...] = ("trend", "std")


@dataclass(frozen=True)
class NodeData:
    """The slice of a data set that one simulated node holds.

    Attributes:
        node_id: unique name within a federation.
        kind: device kind; nodes of one kind share a model.
        source: human-readable origin of the slice.
        X_train: ndarray of shape (n_train, n_features), features of normal rows.
        X_test: ndarray of shape (n_test, n_features).
        y_test: ndarray of shape (n_test,) of 0/1 labels, None when the data has none.
        different: True for an honest node whose data comes from another
            operating regime than the rest of its kind.
    """

    node_id: str
    kind: str
    source: str
    X_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray | None
    different: bool = False

    @property
    def labelled(self) -> bool:
        """Whether the test rows have labels of both classes, so that ROC AUC is defined."""
        return self.y_test is not None and 0 < int(self.y_test.sum()) < self.y_test.size

    @property
    def X_anomalous(self) -> np.ndarray:
        """Features of the labelled anomalous test rows, shape (n_anomalies, n_features)."""
        if self.y_test is None:
            return self.X_test[:0]
        return self.X_test[self.y_test == 1]


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataMissingError(
            f"data file not found: {path}; pass --data with the folder that contains "
            "skab/, nab-realKnownCause/ and ton_iot/"
        )
    return path


# SKAB.

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


@cache
def _read_skab(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with _require(path).open(newline="") as file:
        rows = list(csv.DictReader(file, delimiter=";"))
    values = np.array([[float(row[name]) for name in SKAB_COLUMNS] for row in rows])
    if rows and "anomaly" in rows[0]:
        return values, np.array([int(float(row["anomaly"]) != 0) for row in rows])
    return values, None


def skab_node(
    data_dir: Path,
    experiment: str,
    node_id: str,
    settings: FeatureSettings,
    train_rows: int = 400,
    kind: str = "pump",
) -> NodeData:
    """Return the node that watches one SKAB experiment, such as ``"valve1/3"``.

    ``"anomaly-free/anomaly-free"`` gives the node of the other operating
    regime: it has no labels, and its test rows are all normal.
    """
    values, labels = _read_skab(data_dir / "skab" / f"{experiment}.csv")
    features = extract_features(
        values, settings.smoothing_window, settings.long_window, settings.extra_features
    )
    if labels is not None and labels[:train_rows].any():
        raise ValueError(f"SKAB {experiment}: the first {train_rows} rows contain anomalies")
    return NodeData(
        node_id=node_id,
        kind=kind,
        source=f"SKAB {experiment}.csv",
        X_train=features[:train_rows],
        X_test=features[train_rows:],
        y_test=None if labels is None else labels[train_rows:],
        different=labels is None,
    )


# NAB.


@cache
def _read_nab(data_dir: Path, series: str) -> tuple[list[datetime], np.ndarray, np.ndarray]:
    root = data_dir / "nab-realKnownCause"
    path = _require(root / "data" / "realKnownCause" / f"{series}.csv")
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    stamps = [datetime.fromisoformat(row["timestamp"]) for row in rows]
    values = np.array([[float(row["value"])] for row in rows])
    windows_file = _require(root / "labels" / "combined_windows.json")
    windows = [
        (datetime.fromisoformat(start), datetime.fromisoformat(end))
        for start, end in json.loads(windows_file.read_text())[f"realKnownCause/{series}.csv"]
    ]
    # Row timestamps are compared as datetimes with the window ends included;
    # this also handles the rows whose clock went back in machine_temperature.
    labels = np.array(
        [int(any(start <= stamp <= end for start, end in windows)) for stamp in stamps]
    )
    return stamps, values, labels


def nab_nodes(
    data_dir: Path,
    series: str,
    n_nodes: int,
    settings: FeatureSettings,
    train_rows: int = 500,
    kind: str | None = None,
) -> list[NodeData]:
    """Cut one NAB series into ``n_nodes`` contiguous slices of equal length, one per node.

    A slice without an anomaly window gives a node whose test rows are all
    normal: it counts for the false-positive rate but not for ROC AUC.
    """
    _, values, labels = _read_nab(data_dir, series)
    nodes = []
    for index, rows in enumerate(np.array_split(np.arange(labels.size), n_nodes)):
        features = extract_features(
            values[rows], settings.smoothing_window, settings.long_window, settings.extra_features
        )
        slice_labels = labels[rows]
        normal = np.flatnonzero(slice_labels == 0)[:train_rows]
        test = np.setdiff1d(np.arange(rows.size), normal)
        nodes.append(
            NodeData(
                node_id=f"{kind or series}-{index}",
                kind=kind or series,
                source=f"NAB {series}.csv rows {rows[0]}-{rows[-1] + 1}",
                X_train=features[normal],
                X_test=features[test],
                y_test=slice_labels[test],
            )
        )
    return nodes


# TON_IoT.

TON_IOT_FILES = {
    "gps_tracker": ("Train_Test_IoT_GPS_Tracker.csv", ("latitude", "longitude")),
    "thermostat": ("Train_Test_IoT_Thermostat.csv", ("current_temperature", "thermostat_status")),
    "fridge": ("Train_Test_IoT_Fridge.csv", ("fridge_temperature", "temp_condition")),
}
_TON_IOT_WORDS = {"true": 1.0, "false": 0.0, "on": 1.0, "off": 0.0, "high": 1.0, "low": 0.0}


def _ton_iot_number(text: str) -> float:
    value = text.strip().lower()
    if value in _TON_IOT_WORDS:
        return _TON_IOT_WORDS[value]
    return float(value)


@cache
def _read_ton_iot(data_dir: Path, device: str) -> tuple[np.ndarray, np.ndarray]:
    file_name, columns = TON_IOT_FILES[device]
    path = _require(data_dir / "ton_iot" / file_name)
    records = []
    with path.open(newline="", encoding="utf-8-sig") as file:
        for raw in csv.DictReader(file):
            row = {key.strip(): (value or "").strip() for key, value in raw.items()}
            stamp = datetime.strptime(f"{row['date']} {row['time']}", "%d-%b-%y %H:%M:%S")
            values = [_ton_iot_number(row[name]) for name in columns]
            records.append((stamp, values, int(row["label"])))
    # A stable sort keeps the file order of rows that share a second.
    records.sort(key=lambda record: record[0])
    return (
        np.array([values for _, values, _ in records]),
        np.array([label for _, _, label in records]),
    )


def ton_iot_nodes(
    data_dir: Path,
    device: str,
    n_nodes: int,
    train_rows: int = 500,
    kind: str | None = None,
) -> list[NodeData]:
    """Split one TON_IoT device file into ``n_nodes`` nodes of contiguous time blocks."""
    values, labels = _read_ton_iot(data_dir, device)
    normal_blocks = np.array_split(np.flatnonzero(labels == 0), n_nodes)
    attack_blocks = np.array_split(np.flatnonzero(labels == 1), n_nodes)
    nodes = []
    for index, (normal, attack) in enumerate(zip(normal_blocks, attack_blocks, strict=True)):
        n_train = min(train_rows, normal.size // 2)
        train, held_out = normal[:n_train], normal[normal.size // 2 :]
        test = np.concatenate([held_out, attack])
        nodes.append(
            NodeData(
                node_id=f"{kind or device}-{index}",
                kind=kind or device,
                source=f"TON_IoT {TON_IOT_FILES[device][0]} block {index + 1}/{n_nodes}",
                X_train=values[train],
                X_test=values[test],
                y_test=labels[test],
            )
        )
    return nodes
