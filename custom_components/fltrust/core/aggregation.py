"""Aggregation rules: pure functions over arrays, updates in, aggregate out.

The coordinator combines the updates of one round per device kind:

- the SVM part with FedAvg, each update weighted by its sample count (capped
  at a multiple of the round's median count) times a weight from its sender's
  trust and from ``scoring.score_updates``;
- the normalization statistics by summing counts, sums and sums of squares with
  weights of their own, so that data atypical for the kind stays out of the
  kind's normalization;
- the k-means part by clustering the submitted centroids themselves (weighted
  by their sample counts and weights of their own), which does not depend on
  the order in which a node numbered its clusters.

``integrity`` compares each update with the coordinate-wise median of the
round's updates. It was the coordinator's first robust score; ``scoring``
replaced it, and it stays for callers that use it directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .model import FeatureStats, KindModel
from .scoring import lower_median

# Cosine similarity to the round's median at and above which an update counts
# as fully consistent, and at and below which it counts as fully inconsistent.
COSINE_CONSISTENT = 0.5
COSINE_INCONSISTENT = -0.2
# Distance to the median, in multiples of the round's median distance, tolerated
# without penalty.
NORM_RATIO_TOLERATED = 3.0
# Sample counts are the senders' own claims. A claim above this multiple of the
# lower median claim of the round's weighted updates counts as that multiple.
# One update then cannot outweigh all others by claiming millions of samples,
# while an honest node with four times the usual data keeps its full weight.
MAX_SAMPLE_RATIO = 4.0


def fedavg(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return the weighted mean of parameter vectors.

    Args:
        vectors: array of shape (n_updates, n_parameters).
        weights: non-negative array of shape (n_updates,) with a positive sum.

    Returns:
        Array of shape (n_parameters,).
    """
    vectors = np.asarray(vectors, dtype=float)
    weights = np.asarray(weights, dtype=float)
    if vectors.ndim != 2 or weights.shape != (vectors.shape[0],):
        raise ValueError(
            f"expected vectors (n, d) and weights (n,), got {vectors.shape} and {weights.shape}"
        )
    if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinity")
    average: np.ndarray = weights @ vectors / weights.sum()
    return average


def merge_stats(stats: Sequence[FeatureStats], weights: np.ndarray) -> FeatureStats:
    """Return the weighted sum of normalization statistics."""
    weights = np.asarray(weights, dtype=float)
    return FeatureStats(
        count=float(sum(w * s.count for w, s in zip(weights, stats, strict=True))),
        total=np.sum([w * s.total for w, s in zip(weights, stats, strict=True)], axis=0),
        total_sq=np.sum([w * s.total_sq for w, s in zip(weights, stats, strict=True)], axis=0),
    )


def merge_centroids(
    centers: Sequence[np.ndarray],
    counts: Sequence[np.ndarray],
    weights: np.ndarray,
    n_clusters: int,
    init: np.ndarray | None = None,
    max_iter: int = 50,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the k-means models of several nodes into one.

    Every submitted centroid becomes a point whose mass is its sample count
    times the node's weight; weighted Lloyd iterations over those points give
    the merged centroids. Because the points are pooled, a node that numbers
    its clusters differently from another changes nothing.

    Args:
        centers: one array of shape (n_clusters_i, n_features) per node.
        counts: one array of shape (n_clusters_i,) per node.
        weights: array of shape (n_nodes,).
        n_clusters: number of merged centroids.
        init: previous global centroids of shape (n_clusters, n_features), used
            as the starting point so that centroids keep their identity across
            rounds; None picks a weighted k-means++ start.
        random_state: seed of the k-means++ start.

    Returns:
        (centers of shape (n_clusters, n_features), counts of shape (n_clusters,)).
    """
    points = np.vstack([np.asarray(c, dtype=float) for c in centers])
    mass = np.concatenate(
        [np.asarray(n, dtype=float) * w for n, w in zip(counts, weights, strict=True)]
    )
    if points.shape[0] != mass.shape[0]:
        raise ValueError("each centroid needs exactly one count")
    keep = mass > 0
    points, mass = points[keep], mass[keep]
    if points.shape[0] == 0:
        raise ValueError("no centroid has a positive weight")

    if init is not None and init.shape == (n_clusters, points.shape[1]):
        merged = np.array(init, dtype=float)
    else:
        merged = _kmeans_plus_plus(points, mass, n_clusters, np.random.RandomState(random_state))

    for _ in range(max_iter):
        distances = ((points[:, None, :] - merged[None, :, :]) ** 2).sum(axis=2)
        labels = distances.argmin(axis=1)
        totals = np.bincount(labels, weights=mass, minlength=n_clusters)
        updated = merged.copy()
        filled = totals > 0
        for axis in range(points.shape[1]):
            sums = np.bincount(labels, weights=mass * points[:, axis], minlength=n_clusters)
            updated[filled, axis] = sums[filled] / totals[filled]
        if np.allclose(updated, merged):
            merged = updated
            break
        merged = updated

    distances = ((points[:, None, :] - merged[None, :, :]) ** 2).sum(axis=2)
    totals = np.bincount(distances.argmin(axis=1), weights=mass, minlength=n_clusters)
    return merged, totals


def _kmeans_plus_plus(
    points: np.ndarray, mass: np.ndarray, n_clusters: int, rng: np.random.RandomState
) -> np.ndarray:
    """Pick starting centroids with weighted k-means++ seeding."""
    chosen = [points[rng.choice(len(points), p=mass / mass.sum())]]
    while len(chosen) < n_clusters:
        distance = ((points[:, None, :] - np.asarray(chosen)[None]) ** 2).sum(axis=2).min(axis=1)
        score = distance * mass
        if score.sum() <= 0:
            # Fewer distinct points than clusters: repeat one; it keeps a zero count.
            chosen.append(points[0])
            continue
        chosen.append(points[rng.choice(len(points), p=score / score.sum())])
    return np.asarray(chosen)


@dataclass(frozen=True)
class IntegrityScore:
    """Comparison of one update with the round's robust reference.

    ``score`` is in [0, 1]: 1 for an update consistent with the median, 0 for
    one pointing away from it or far larger than the typical update.
    """

    cosine: float
    norm_ratio: float
    score: float


def integrity(deltas: np.ndarray) -> list[IntegrityScore]:
    """Score each update by its distance and direction against the round's median.

    Args:
        deltas: array of shape (n_updates, n_parameters), each row the change an
            update proposes to the current global model.

    Returns:
        One IntegrityScore per row, in row order. ``norm_ratio`` is the row's
        distance to the coordinate-wise median divided by the median of those
        distances. An update within ``NORM_RATIO_TOLERATED`` of that distance
        scores 1 whatever its direction, because honest updates of a converged
        model are small and point anywhere. A farther update loses score with
        the ratio, and more when it also points away from the median, as a
        flipped, scaled or noisy update does. With fewer than three updates there
        is no majority to compare with, so every update scores 1.
    """
    deltas = np.asarray(deltas, dtype=float)
    n_updates = deltas.shape[0]
    if n_updates < 3:
        return [IntegrityScore(1.0, 1.0, 1.0) for _ in range(n_updates)]
    reference = np.median(deltas, axis=0)
    reference_norm = float(np.linalg.norm(reference))
    norms = np.linalg.norm(deltas, axis=1)
    distances = np.linalg.norm(deltas - reference, axis=1)
    typical = max(float(np.median(distances)), 1e-12)
    scores = []
    for row, norm, distance in zip(deltas, norms, distances, strict=True):
        if reference_norm == 0 or norm == 0:
            cosine = 1.0 if norm == reference_norm else 0.0
        else:
            cosine = float(row @ reference / (norm * reference_norm))
        ratio = float(distance / typical)
        if ratio <= NORM_RATIO_TOLERATED:
            scores.append(IntegrityScore(cosine, ratio, 1.0))
            continue
        direction = np.clip(
            (cosine - COSINE_INCONSISTENT) / (COSINE_CONSISTENT - COSINE_INCONSISTENT), 0.0, 1.0
        )
        size = NORM_RATIO_TOLERATED / ratio
        scores.append(IntegrityScore(cosine, ratio, float(size * (0.5 + 0.5 * direction))))
    return scores


def bounded_samples(
    samples: np.ndarray, weights: np.ndarray, ratios: np.ndarray | None = None
) -> np.ndarray:
    """Return sample counts capped at a multiple of their lower median.

    The median is taken over the counts of updates with a positive weight.
    With fewer than two of those the counts are returned unchanged.

    Args:
        samples: non-negative array of shape (n_updates,).
        weights: array of shape (n_updates,).
        ratios: array of shape (n_updates,), each update's multiple of the
            median; None gives every update ``MAX_SAMPLE_RATIO``.

    Returns:
        Array of shape (n_updates,).
    """
    samples = np.asarray(samples, dtype=float)
    counted = (np.asarray(weights, dtype=float) > 0) & (samples > 0)
    if counted.sum() < 2:
        return samples
    multiples = np.full(samples.shape, MAX_SAMPLE_RATIO) if ratios is None else ratios
    bounded: np.ndarray = np.minimum(samples, multiples * lower_median(samples[counted]))
    return bounded


def _bound_factors(
    samples: np.ndarray, weights: np.ndarray, ratios: np.ndarray | None
) -> np.ndarray:
    """Return the factor by which ``bounded_samples`` scales each count, 1 for a count of 0."""
    samples = np.asarray(samples, dtype=float)
    bounded = bounded_samples(samples, weights, ratios)
    factors: np.ndarray = np.divide(bounded, samples, out=np.ones_like(samples), where=samples > 0)
    return factors


def aggregate_kind(
    updates: Sequence[KindModel],
    weights: np.ndarray,
    n_clusters: int,
    previous: KindModel | None,
    random_state: int = 0,
    *,
    center_weights: np.ndarray | None = None,
    stats_weights: np.ndarray | None = None,
    sample_ratios: np.ndarray | None = None,
) -> KindModel:
    """Aggregate the updates of one kind into that kind's new global model.

    ``weights`` are the senders' weights in [0, 1]; each update's FedAvg
    weight is its sample count times its weight. ``center_weights`` and
    ``stats_weights`` weigh the centroids and the statistics instead of
    ``weights`` when given and not all zero. The sample count, the centroid
    counts and the statistics' count of each update are first capped at
    ``MAX_SAMPLE_RATIO`` times the lower median of the weighted updates', or
    at the update's own multiple in ``sample_ratios`` (``bounded_samples``).
    The result is a weighted mean of the updates as sent, so the weights
    alone explain it.
    """
    weights = np.asarray(weights, dtype=float)
    samples = bounded_samples(
        np.array([u.n_samples for u in updates], dtype=float), weights, sample_ratios
    )
    svm = fedavg(np.vstack([u.svm_vector() for u in updates]), samples * weights)
    if center_weights is None or not np.sum(center_weights) > 0:
        center_weights = weights
    center_weights = np.asarray(center_weights, dtype=float)
    center_weights = center_weights * _bound_factors(
        np.array([np.sum(u.counts) for u in updates], dtype=float), center_weights, sample_ratios
    )
    centers, counts = merge_centroids(
        [u.centers for u in updates],
        [u.counts for u in updates],
        center_weights,
        n_clusters,
        init=None if previous is None else previous.centers,
        random_state=random_state,
    )
    if stats_weights is None or not np.sum(stats_weights) > 0:
        stats_weights = weights
    stats_weights = np.asarray(stats_weights, dtype=float)
    stats_weights = stats_weights * _bound_factors(
        np.array([u.stats.count for u in updates], dtype=float), stats_weights, sample_ratios
    )
    return KindModel(
        stats=merge_stats([u.stats for u in updates], stats_weights),
        svm_coef=svm[:-1],
        svm_offset=float(svm[-1]),
        centers=centers,
        counts=counts,
        n_samples=int(samples.sum()),
    )
