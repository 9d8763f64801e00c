"""Loaders that cut the shared data sets into per-node slices.

The readers of ``fltrust_data`` parse and clean the files, and
``script/bench`` puts ``tools/`` on PYTHONPATH for them.

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
- TON_IoT (``ton_iot/``): ``fltrust_data.read_ton_iot`` cleans the files of
  their formatting leaks (byte order mark, whitespace padding that differs
  between normal and attack rows, words among numbers) and sorts the rows by
  time. Normal and attack rows come from different days, so each node gets one
  contiguous block of normal rows and one of attack rows. It trains on the
  first half of its normal block (at most ``train_rows`` rows) and is tested
  on the second half plus its attack block. The rows are not one time series,
  so features are the raw values of each row, without windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from fltrust_core.preprocessing import extract_features
from fltrust_data import (
    TON_IOT_DEVICES,
    DataMissingError,
    NabSeries,
    SkabExperiment,
    TonIotData,
    read_nab,
    read_skab,
    read_ton_iot,
)

# DataMissingError is re-exported for __main__, which reports it when the data
# folder is incomplete.
__all__ = [
    "DataMissingError",
    "FeatureSettings",
    "NodeData",
    "nab_nodes",
    "skab_node",
    "ton_iot_nodes",
]


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


# The readers are cached per process, because every benchmark task builds its
# federation from the same files.


@cache
def _read_skab(data_dir: Path, experiment: str) -> SkabExperiment:
    return read_skab(data_dir, experiment)


@cache
def _read_nab(data_dir: Path, series: str) -> NabSeries:
    return read_nab(data_dir, series)


@cache
def _read_ton_iot(data_dir: Path, device: str) -> TonIotData:
    return read_ton_iot(data_dir, device)


# SKAB.


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
    experiment_data = _read_skab(data_dir, experiment)
    values, labels = experiment_data.values, experiment_data.labels
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
    series_data = _read_nab(data_dir, series)
    values, labels = series_data.values[:, np.newaxis], series_data.labels
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


def ton_iot_nodes(
    data_dir: Path,
    device: str,
    n_nodes: int,
    train_rows: int = 500,
    kind: str | None = None,
) -> list[NodeData]:
    """Split one TON_IoT device file into ``n_nodes`` nodes of contiguous time blocks."""
    device_data = _read_ton_iot(data_dir, device)
    values, labels = device_data.values, device_data.labels
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
                source=f"TON_IoT {TON_IOT_DEVICES[device].file_name} block {index + 1}/{n_nodes}",
                X_train=values[train],
                X_test=values[test],
                y_test=labels[test],
            )
        )
    return nodes
