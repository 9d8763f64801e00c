"""Model parameters that travel between nodes and the coordinator.

A federation keeps one model per device kind (``temperature``, ``motion``,
``pump``...): devices of different kinds have nothing in common, so they do not
share parameters. Each kind's model has three parts:

- normalization statistics, federated as counts, sums and sums of squares;
- a linear one-class SVM over random Fourier features (``coef`` has one weight
  per feature of the random map, which every node draws from the same seed);
- k-means centroids with the number of samples behind each one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FederationParams:
    """Hyper-parameters the coordinator hands to every node of a federation."""

    seed: int = 0
    rff_components: int = 64
    rff_gamma: float = 0.5
    svm_nu: float = 0.05
    n_clusters: int = 4
    local_epochs: int = 5

    def as_dict(self) -> dict[str, Any]:
        """Return the parameters as a JSON-ready dictionary."""
        return {
            "seed": self.seed,
            "rff_components": self.rff_components,
            "rff_gamma": self.rff_gamma,
            "svm_nu": self.svm_nu,
            "n_clusters": self.n_clusters,
            "local_epochs": self.local_epochs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FederationParams:
        """Build parameters from a validated dictionary."""
        return cls(
            seed=int(data["seed"]),
            rff_components=int(data["rff_components"]),
            rff_gamma=float(data["rff_gamma"]),
            svm_nu=float(data["svm_nu"]),
            n_clusters=int(data["n_clusters"]),
            local_epochs=int(data["local_epochs"]),
        )


@dataclass
class FeatureStats:
    """Sufficient statistics of the smoothed features: count, sum and sum of squares.

    Sharing these instead of rows lets the federation agree on one normalization
    without any node revealing a reading.
    """

    count: float
    total: np.ndarray
    total_sq: np.ndarray

    @classmethod
    def from_samples(cls, X: np.ndarray) -> FeatureStats:
        """Compute the statistics of ``X``, an array of shape (n_samples, n_features)."""
        X = np.asarray(X, dtype=float)
        return cls(count=float(X.shape[0]), total=X.sum(axis=0), total_sq=(X * X).sum(axis=0))

    @property
    def mean(self) -> np.ndarray:
        """Mean of each feature."""
        mean: np.ndarray = self.total / max(self.count, 1.0)
        return mean

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of each feature, floored so that division is safe."""
        variance = self.total_sq / max(self.count, 1.0) - self.mean**2
        std: np.ndarray = np.sqrt(np.maximum(variance, 1e-12)).clip(min=1e-6)
        return std


@dataclass
class KindModel:
    """Parameters of the model for one device kind.

    Attributes:
        stats: federated normalization statistics, arrays of shape (n_features,).
        svm_coef: one-class SVM weights, shape (rff_components,).
        svm_offset: one-class SVM offset; a sample is normal when
            ``coef @ phi(x) - offset >= 0``.
        centers: k-means centroids, shape (n_clusters, n_features).
        counts: samples behind each centroid, shape (n_clusters,).
        n_samples: samples behind the whole model.
    """

    stats: FeatureStats
    svm_coef: np.ndarray
    svm_offset: float
    centers: np.ndarray
    counts: np.ndarray
    n_samples: int

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return int(self.centers.shape[1])

    def svm_vector(self) -> np.ndarray:
        """Return the SVM weights and offset as one vector, the part averaged by FedAvg."""
        return np.concatenate([self.svm_coef, [self.svm_offset]])

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary in the wire format of an update."""
        return {
            "n_samples": int(self.n_samples),
            "stats": {
                "count": float(self.stats.count),
                "sum": self.stats.total.tolist(),
                "sumsq": self.stats.total_sq.tolist(),
            },
            "svm": {"coef": self.svm_coef.tolist(), "offset": float(self.svm_offset)},
            "kmeans": {"centers": self.centers.tolist(), "counts": self.counts.tolist()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KindModel:
        """Build a model from a dictionary that protocol validation has checked."""
        return cls(
            stats=FeatureStats(
                count=float(data["stats"]["count"]),
                total=np.asarray(data["stats"]["sum"], dtype=float),
                total_sq=np.asarray(data["stats"]["sumsq"], dtype=float),
            ),
            svm_coef=np.asarray(data["svm"]["coef"], dtype=float),
            svm_offset=float(data["svm"]["offset"]),
            centers=np.asarray(data["kmeans"]["centers"], dtype=float).reshape(
                len(data["kmeans"]["centers"]), -1
            ),
            counts=np.asarray(data["kmeans"]["counts"], dtype=float),
            n_samples=int(data["n_samples"]),
        )


@dataclass
class GlobalModel:
    """The federation's model: one ``KindModel`` per device kind, with a version."""

    version: int = 0
    round: int = 0
    params: FederationParams = field(default_factory=FederationParams)
    kinds: dict[str, KindModel] = field(default_factory=dict)
    # Node id -> aggregation weight used for this version, for audit.
    contributors: dict[str, float] = field(default_factory=dict)
    # Random id of the federation's run: a federation that starts over draws a
    # new one, so that nodes know its round and version numbers start over too.
    # Empty for a model from before epochs existed.
    epoch: str = ""
    # How many regimes per kind the coordinator keeps for data that a kind's
    # model leaves out. 0 for a coordinator from before regimes, which rejects
    # updates for them.
    max_regimes: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary in the wire format of a global model."""
        return {
            "version": self.version,
            "round": self.round,
            "epoch": self.epoch,
            "params": self.params.as_dict(),
            "kinds": {kind: model.to_json() for kind, model in sorted(self.kinds.items())},
            "contributors": dict(sorted(self.contributors.items())),
            "max_regimes": self.max_regimes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GlobalModel:
        """Build a global model from a validated dictionary."""
        return cls(
            version=int(data["version"]),
            round=int(data["round"]),
            params=FederationParams.from_dict(data["params"]),
            kinds={kind: KindModel.from_json(value) for kind, value in data["kinds"].items()},
            contributors={str(k): float(v) for k, v in data.get("contributors", {}).items()},
            epoch=str(data.get("epoch", "")),
            max_regimes=int(data.get("max_regimes", 0)),
        )
