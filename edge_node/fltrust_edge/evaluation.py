"""Detection quality on the labelled test part of CSV replays, written by ``--results``.

For each device, the test part is every replayed row that did not go into the
training buffer. Its rows are scored with the kind's current detector (the
final global model and the locally calibrated threshold) and compared with the
labels from the data. Results are JSON::

    {"node_id": "node-1", "rounds_joined": 3, "rounds": [1, 2, 3],
     "model_version": 3, "devices": {"machine-1": {
        "kind": "temperature", "model": "global", "auc": 0.86, "precision": 0.3,
        "recall": 0.5, "f1": 0.37, "fpr": 0.09, "flag_all_f1": 0.18,
        "n_rows": 21695, "n_anomalies": 2268, "n_train_rows": 1000,
        "threshold": 2.1, "replay_error": null}}}

``rounds`` lists the last 1000 joined rounds at most; ``rounds_joined``
counts all of them. ``replay_error`` is the error that ended a device's replay early, such as an
invalid CSV line, or None when the replay reached the end of its slice.
``auc`` is None when the test part lacks one of the classes; every metric is
None for a device without labels or without a detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

from .state import write_json_atomic


@dataclass(frozen=True)
class DeviceEvaluation:
    """Test rows of one device with their scores."""

    device_id: str
    kind: str
    labels: np.ndarray | None
    scores: np.ndarray | None
    threshold: float | None
    model: str | None
    n_rows: int
    n_train_rows: int
    replay_error: str | None = None


def _rounded(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)


def device_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Return the detection metrics of scores against 0/1 labels.

    A row is flagged when its score is above ``threshold``.
    """
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    flagged = scores > threshold
    n_anomalies = int(labels.sum())
    n_normal = int(labels.size - n_anomalies)
    auc = roc_auc_score(labels, scores) if 0 < n_anomalies < labels.size else None
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, flagged, average="binary", zero_division=0
    )
    false_positives = int(np.sum(flagged & (labels == 0)))
    return {
        "auc": _rounded(auc),
        "precision": _rounded(precision),
        "recall": _rounded(recall),
        "f1": _rounded(f1),
        "fpr": _rounded(false_positives / n_normal) if n_normal else None,
        "flag_all_f1": _rounded(f1_score(labels, np.ones_like(labels), zero_division=0)),
        "n_rows": int(labels.size),
        "n_anomalies": n_anomalies,
        "threshold": _rounded(threshold),
    }


def _empty_metrics(device: DeviceEvaluation) -> dict[str, Any]:
    labels = device.labels
    return {
        "auc": None,
        "precision": None,
        "recall": None,
        "f1": None,
        "fpr": None,
        "flag_all_f1": None,
        "n_rows": device.n_rows,
        "n_anomalies": None if labels is None else int(np.sum(labels)),
        "threshold": _rounded(device.threshold),
    }


def build_results(
    node_id: str,
    rounds_joined: int,
    recent_rounds: list[int],
    model_version: int,
    devices: list[DeviceEvaluation],
) -> dict[str, Any]:
    """Return the results document of a node.

    Parameters:
        node_id: the node's id.
        rounds_joined: number of rounds the node sent an update in.
        recent_rounds: numbers of the most recent of those rounds.
        model_version: version of the node's current global model, 0 for none.
        devices: one evaluation per device.
    """
    entries: dict[str, Any] = {}
    for device in devices:
        scored = (
            device.labels is not None
            and device.scores is not None
            and device.threshold is not None
            and device.n_rows > 0
        )
        if scored:
            metrics = device_metrics(device.labels, device.scores, device.threshold)
        else:
            metrics = _empty_metrics(device)
        entries[device.device_id] = {
            "kind": device.kind,
            "model": device.model,
            **metrics,
            "n_train_rows": device.n_train_rows,
            "replay_error": device.replay_error,
        }
    return {
        "node_id": node_id,
        "rounds_joined": rounds_joined,
        "rounds": sorted(recent_rounds),
        "model_version": model_version,
        "devices": entries,
    }


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write the results document as JSON, replacing the file atomically.

    The directory must exist: a mistyped path is an error, not a new directory tree.
    """
    write_json_atomic(path, results)
