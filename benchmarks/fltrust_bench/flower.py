"""Flower's aggregation rules applied to the same updates as fltrust.

Every rule calls the function of ``flwr.server.strategy.aggregate`` that the
matching Flower strategy calls (flwr 1.42). An update becomes Flower's
``NDArrays`` with one array per part of a ``KindModel``: SVM weights, SVM
offset, centroids, centroid counts, feature means and mean squares. The last
two are the statistics divided by their sample count, so that averaging them
pools the data the way ``merge_stats`` does. The aggregate is turned back
into a ``KindModel``.

Rules that need the number of malicious updates ``f`` get the true number
among the senders of that kind, which favours them:

- Krum: ``aggregate_krum(num_malicious=f, to_keep=0)``.
- Multi-Krum: ``aggregate_krum(num_malicious=f, to_keep=n - f)``.
- FedMedian: ``aggregate_median``.
- FedTrimmedAvg: ``aggregate_trimmed_avg`` cutting ``f / n`` from each end
  (nothing without attackers).
- Bulyan: ``aggregate_bulyan`` with Krum as its first stage and
  ``num_malicious = min(f, (n - 3) // 4)``, because Bulyan rejects
  ``n < 4 f + 3``; with more attackers than that it runs assuming fewer.
- FedAvg: ``aggregate``, the sample-weighted mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from fltrust_core.model import FeatureStats, KindModel
from flwr.server.strategy.aggregate import (
    aggregate,
    aggregate_bulyan,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)

FlowerRule = Callable[[list[tuple[list[np.ndarray], int]], int], list[np.ndarray]]


def to_ndarrays(model: KindModel) -> list[np.ndarray]:
    """Return a model as Flower's list of arrays."""
    count = max(model.stats.count, 1.0)
    return [
        np.asarray(model.svm_coef, dtype=float),
        np.array([model.svm_offset]),
        np.asarray(model.centers, dtype=float),
        np.asarray(model.counts, dtype=float),
        model.stats.total / count,
        model.stats.total_sq / count,
    ]


def from_ndarrays(arrays: Sequence[np.ndarray], n_samples: int) -> KindModel:
    """Return the model that an aggregate of ``to_ndarrays`` lists describes."""
    coef, offset, centers, counts, mean, mean_sq = arrays
    count = float(n_samples)
    return KindModel(
        stats=FeatureStats(count=count, total=mean * count, total_sq=mean_sq * count),
        svm_coef=np.asarray(coef, dtype=float),
        svm_offset=float(np.asarray(offset).reshape(-1)[0]),
        centers=np.asarray(centers, dtype=float),
        counts=np.maximum(np.asarray(counts, dtype=float), 0.0),
        n_samples=int(n_samples),
    )


def _fedavg(results: list[tuple[list[np.ndarray], int]], n_malicious: int) -> list[np.ndarray]:
    return aggregate(results)


def _krum(results: list[tuple[list[np.ndarray], int]], n_malicious: int) -> list[np.ndarray]:
    return aggregate_krum(results, num_malicious=n_malicious, to_keep=0)


def _multi_krum(results: list[tuple[list[np.ndarray], int]], n_malicious: int) -> list[np.ndarray]:
    return aggregate_krum(results, num_malicious=n_malicious, to_keep=len(results) - n_malicious)


def _median(results: list[tuple[list[np.ndarray], int]], n_malicious: int) -> list[np.ndarray]:
    return aggregate_median(results)


def _trimmed(results: list[tuple[list[np.ndarray], int]], n_malicious: int) -> list[np.ndarray]:
    return aggregate_trimmed_avg(results, proportiontocut=n_malicious / len(results))


def bulyan_assumed_malicious(n_updates: int, n_malicious: int) -> int:
    """Return the ``num_malicious`` Bulyan runs with: the true count, capped at ``(n - 3) // 4``."""
    return max(0, min(n_malicious, (n_updates - 3) // 4))


def _bulyan(results: list[tuple[list[np.ndarray], int]], n_malicious: int) -> list[np.ndarray]:
    assumed = bulyan_assumed_malicious(len(results), n_malicious)
    # aggregate_bulyan removes the selected entries from the list it gets.
    return aggregate_bulyan(
        list(results), num_malicious=assumed, aggregation_rule=aggregate_krum, to_keep=0
    )


FLOWER_RULES: dict[str, FlowerRule] = {
    "FedAvg": _fedavg,
    "Krum": _krum,
    "Multi-Krum": _multi_krum,
    "FedMedian": _median,
    "FedTrimmedAvg": _trimmed,
    "Bulyan": _bulyan,
}


def aggregate_with(rule: str, updates: Sequence[KindModel], n_malicious: int) -> KindModel:
    """Aggregate one kind's updates with the Flower rule named ``rule``.

    Bulyan needs at least 3 updates; with fewer, it falls back to the median.
    """
    results = [(to_ndarrays(update), int(update.n_samples)) for update in updates]
    function = FLOWER_RULES[rule]
    if rule == "Bulyan" and len(results) < 3:
        function = _median
    arrays = function(results, n_malicious)
    return from_ndarrays(arrays, sum(update.n_samples for update in updates))
