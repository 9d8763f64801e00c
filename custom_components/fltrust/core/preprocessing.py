"""Feature extraction and normalization of sensor readings, with NumPy only.

A device reports one row of raw values per reading (one value per feature
named in its configuration). Each row becomes a feature vector:

- ``smoothed``: the causal moving average of each value over the last
  ``smoothing_window`` readings;
- ``trend`` (optional): the short moving average minus the moving average over
  the last ``long_window`` readings, which exposes level shifts and drifts in a
  univariate series;
- ``std`` (optional): the standard deviation of each raw value over the last
  ``long_window`` readings, which exposes bursts of noise and flat lines.

Every window is causal: row ``i`` depends only on rows ``i - window + 1`` to
``i``, and the first rows average over the readings seen so far. The vector
lists all smoothed values first, then all trends, then all standard
deviations, so with ``c`` values and ``e`` extras a kind has ``c * (1 + e)``
features. Every node of a federation must use the same settings for a kind,
because the coordinator rejects parameters of another shape.

``extract_features`` transforms a whole array and ``FeatureExtractor`` the
same rows one at a time. Both run the same arithmetic in the same order, so
their results are bitwise equal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from .model import FeatureStats

EXTRA_FEATURES = ("trend", "std")


def _as_2d(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, np.newaxis]
    if X.ndim != 2:
        raise ValueError(f"expected an array of shape (n_samples, n_columns), got shape {X.shape}")
    return X


def _check_window(window: int, name: str) -> None:
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {window!r}")


def _lagged(X: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``X`` shifted down by ``lag`` rows (zeros on top) and the mask of real rows."""
    if lag == 0:
        return X, np.ones(X.shape[0], dtype=bool)
    shifted = np.zeros_like(X)
    shifted[lag:] = X[:-lag]
    valid = np.zeros(X.shape[0], dtype=bool)
    valid[lag:] = True
    return shifted, valid


def _window_counts(n_rows: int, window: int) -> np.ndarray:
    """Return how many rows each causal window covers, shape (n_rows, 1)."""
    counts: np.ndarray = np.minimum(np.arange(1, n_rows + 1), window).astype(float)[:, np.newaxis]
    return counts


def moving_average(X: np.ndarray, window: int) -> np.ndarray:
    """Return the causal moving average of each column.

    Parameters:
        X: ndarray of shape (n_samples, n_columns), or (n_samples,) for one column.
        window: number of rows averaged, including the current one.

    Returns:
        ndarray of shape (n_samples, n_columns). Row ``i`` is the mean of rows
        ``max(0, i - window + 1)`` to ``i``.
    """
    _check_window(window, "window")
    X = _as_2d(X)
    total = np.zeros_like(X)
    # Adding the lags one at a time, newest first, fixes the order of the
    # floating-point sums, so FeatureExtractor reproduces them exactly.
    for lag in range(min(window, X.shape[0])):
        shifted, _ = _lagged(X, lag)
        total += shifted
    average: np.ndarray = total / _window_counts(X.shape[0], window)
    return average


def moving_std(X: np.ndarray, window: int) -> np.ndarray:
    """Return the causal population standard deviation of each column.

    Parameters:
        X: ndarray of shape (n_samples, n_columns), or (n_samples,) for one column.
        window: number of rows covered, including the current one.

    Returns:
        ndarray of shape (n_samples, n_columns); the first row is 0.
    """
    _check_window(window, "window")
    X = _as_2d(X)
    mean = moving_average(X, window)
    total = np.zeros_like(X)
    for lag in range(min(window, X.shape[0])):
        shifted, valid = _lagged(X, lag)
        deviation = np.where(valid[:, np.newaxis], shifted - mean, 0.0)
        total += deviation * deviation
    std: np.ndarray = np.sqrt(total / _window_counts(X.shape[0], window))
    return std


def check_extra_features(extra_features: Sequence[str]) -> tuple[str, ...]:
    """Return ``extra_features`` as a tuple, raising ValueError on an unknown or repeated name."""
    extras = tuple(extra_features)
    for name in extras:
        if name not in EXTRA_FEATURES:
            raise ValueError(
                f"unknown extra feature {name!r}, expected one of {', '.join(EXTRA_FEATURES)}"
            )
    if len(set(extras)) != len(extras):
        raise ValueError(f"extra features must not repeat, got {list(extras)}")
    return extras


def feature_names(columns: Sequence[str], extra_features: Sequence[str] = ()) -> list[str]:
    """Return the names of the features that ``extract_features`` produces, in order."""
    extras = check_extra_features(extra_features)
    names = list(columns)
    for extra in extras:
        names.extend(f"{column}_{extra}" for column in columns)
    return names


def extract_features(
    X: np.ndarray,
    smoothing_window: int,
    long_window: int = 48,
    extra_features: Sequence[str] = (),
) -> np.ndarray:
    """Turn raw readings into feature vectors.

    Parameters:
        X: ndarray of shape (n_samples, n_columns) of raw readings in time order.
        smoothing_window: readings averaged into the smoothed value.
        long_window: readings covered by the ``trend`` baseline and by ``std``.
        extra_features: any of ``"trend"`` and ``"std"``, in the output order.

    Returns:
        ndarray of shape (n_samples, n_columns * (1 + len(extra_features))).
    """
    _check_window(smoothing_window, "smoothing_window")
    _check_window(long_window, "long_window")
    extras = check_extra_features(extra_features)
    X = _as_2d(X)
    smoothed = moving_average(X, smoothing_window)
    parts = [smoothed]
    for extra in extras:
        if extra == "trend":
            parts.append(smoothed - moving_average(X, long_window))
        else:
            parts.append(moving_std(X, long_window))
    return np.hstack(parts)


class StreamingSmoother:
    """Causal moving average of live readings, one row at a time.

    ``update`` returns the same values as row ``i`` of ``moving_average`` over
    all rows seen so far.
    """

    def __init__(self, window: int) -> None:
        """Set the number of readings averaged."""
        _check_window(window, "window")
        self.window = window
        self._rows: deque[np.ndarray] = deque(maxlen=window)

    def update(self, x: np.ndarray | Sequence[float]) -> np.ndarray:
        """Add one reading of shape (n_columns,) and return its smoothed values."""
        self._rows.append(np.asarray(x, dtype=float).reshape(-1))
        smoothed: np.ndarray = moving_average(np.vstack(self._rows), self.window)[-1]
        return smoothed

    def reset(self) -> None:
        """Forget every reading."""
        self._rows.clear()


class FeatureExtractor:
    """Streaming form of ``extract_features`` for live readings, one row at a time.

    It keeps the last ``max(smoothing_window, long_window)`` rows, the most any
    window needs, and runs ``extract_features`` on them.
    """

    def __init__(
        self,
        smoothing_window: int,
        long_window: int = 48,
        extra_features: Sequence[str] = (),
    ) -> None:
        """Store the window settings; see ``extract_features``."""
        _check_window(smoothing_window, "smoothing_window")
        _check_window(long_window, "long_window")
        self.smoothing_window = smoothing_window
        self.long_window = long_window
        self.extra_features = check_extra_features(extra_features)
        history = max(smoothing_window, long_window if self.extra_features else 1)
        self._rows: deque[np.ndarray] = deque(maxlen=history)

    def update(self, x: np.ndarray | Sequence[float]) -> np.ndarray:
        """Add one reading of shape (n_columns,) and return its feature vector."""
        row = np.asarray(x, dtype=float).reshape(-1)
        if self._rows and row.shape != self._rows[-1].shape:
            raise ValueError(f"expected {self._rows[-1].shape[0]} values, got {row.shape[0]}")
        self._rows.append(row)
        features = extract_features(
            np.vstack(self._rows), self.smoothing_window, self.long_window, self.extra_features
        )
        newest: np.ndarray = features[-1]
        return newest

    def reset(self) -> None:
        """Forget every reading."""
        self._rows.clear()


# Normalization.


def select_stats(global_stats: FeatureStats | None, local_stats: FeatureStats) -> FeatureStats:
    """Return the federated statistics, or the local ones when no global statistics fit.

    Global statistics fit when they exist and have as many features as the local
    ones. A node without a global model normalizes with its own statistics.
    """
    if global_stats is None or global_stats.count < 1:
        return local_stats
    if np.shape(global_stats.total) != np.shape(local_stats.total):
        return local_stats
    return global_stats


def normalize(X: np.ndarray, stats: FeatureStats) -> np.ndarray:
    """Return ``(X - mean) / std`` with the mean and std of ``stats``.

    Parameters:
        X: ndarray of shape (n_samples, n_features).
        stats: statistics with arrays of shape (n_features,).
    """
    X = _as_2d(X)
    mean = stats.mean
    if X.shape[1] != mean.shape[0]:
        raise ValueError(f"X has {X.shape[1]} features but the statistics have {mean.shape[0]}")
    normalized: np.ndarray = (X - mean) / stats.std
    return normalized
