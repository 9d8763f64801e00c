"""Per-device runtime state: features, the training buffer, test rows and anomaly state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fltrust_core.preprocessing import FeatureExtractor

from .config import DetectionConfig, DeviceConfig
from .training import Detector


@dataclass(frozen=True)
class Reading:
    """Effect of one sample on a device's state."""

    features: np.ndarray
    training: bool
    buffer_filled: bool
    scored: bool
    anomaly: bool
    state_changed: bool


class DeviceMonitor:
    """Turns one device's samples into features, training rows and anomaly decisions.

    The first ``train_rows`` samples labelled normal (or unlabelled) go into the
    training buffer. Every other sample is a test sample: it is scored when the
    kind has a detector and, for CSV replays, kept with its label for the
    evaluation.
    """

    def __init__(
        self, device: DeviceConfig, detection: DetectionConfig, keep_test_rows: bool
    ) -> None:
        """Prepare the feature extractor and empty buffers."""
        self.device = device
        self.train_rows = detection.train_rows
        self.extractor = FeatureExtractor(
            detection.smoothing_window, detection.long_window, detection.extra_features
        )
        self.keep_test_rows = keep_test_rows
        self._train: list[np.ndarray] = []
        self._test: list[np.ndarray] = []
        self._test_labels: list[int | None] = []
        self.anomaly = False
        self.score = 0.0
        self.threshold = 0.0
        self.replay_ended = False

    @property
    def n_train(self) -> int:
        """Number of samples in the training buffer."""
        return len(self._train)

    @property
    def n_features(self) -> int | None:
        """Number of features per row, None before the first training row."""
        return int(self._train[0].shape[0]) if self._train else None

    @property
    def n_test(self) -> int:
        """Number of test samples kept for the evaluation."""
        return len(self._test)

    def restore_training(self, rows: np.ndarray) -> None:
        """Replace the training buffer with saved rows, at most ``train_rows`` of them."""
        self._train = [np.array(row, dtype=float) for row in rows[: self.train_rows]]

    def training_data(self) -> np.ndarray:
        """Return a copy of the training buffer, shape (n_train, n_features)."""
        if not self._train:
            return np.empty((0, 0))
        return np.vstack(self._train)

    def test_data(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Return the kept test features and their labels (None when any label is missing)."""
        if not self._test:
            return np.empty((0, 0)), None
        labels = None
        if all(label is not None for label in self._test_labels):
            labels = np.asarray(self._test_labels, dtype=int)
        return np.vstack(self._test), labels

    def process(
        self,
        values: np.ndarray,
        label: int | None,
        detector: Detector | None,
    ) -> Reading:
        """Add one reading and return what it did."""
        features = self.extractor.update(values)
        if len(self._train) < self.train_rows and label in (None, 0):
            self._train.append(features)
            filled = len(self._train) == self.train_rows
            return Reading(features, True, filled, False, self.anomaly, False)

        if self.keep_test_rows:
            self._test.append(features)
            self._test_labels.append(label)
        if detector is None:
            return Reading(features, False, False, False, self.anomaly, False)

        score = float(detector.anomaly_score(features[np.newaxis, :])[0])
        anomaly = score > detector.threshold_
        changed = anomaly != self.anomaly
        self.anomaly = anomaly
        self.score = score
        self.threshold = float(detector.threshold_)
        return Reading(features, False, False, True, anomaly, changed)
