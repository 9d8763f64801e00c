"""Invariants of the aggregation rules."""

from __future__ import annotations

import numpy as np
import pytest
from fltrust_core.aggregation import (
    MAX_SAMPLE_RATIO,
    aggregate_kind,
    bounded_samples,
    fedavg,
    integrity,
    merge_centroids,
    merge_stats,
)
from fltrust_core.model import FeatureStats

from .conftest import kind_model


def test_fedavg_matches_weighted_mean() -> None:
    rng = np.random.RandomState(0)
    vectors = rng.normal(size=(5, 7))
    weights = rng.uniform(0.1, 2.0, size=5)
    expected = sum(w * v for w, v in zip(weights, vectors, strict=True)) / weights.sum()
    np.testing.assert_allclose(fedavg(vectors, weights), expected)


def test_fedavg_permutation_invariant() -> None:
    rng = np.random.RandomState(1)
    vectors = rng.normal(size=(6, 4))
    weights = rng.uniform(0.1, 1.0, size=6)
    order = rng.permutation(6)
    np.testing.assert_allclose(fedavg(vectors, weights), fedavg(vectors[order], weights[order]))


def test_fedavg_single_update_is_identity() -> None:
    vector = np.array([[1.0, -2.0, 3.0]])
    np.testing.assert_allclose(fedavg(vector, np.array([0.3])), vector[0])


def test_fedavg_identical_updates() -> None:
    vectors = np.tile([0.5, 1.5], (4, 1))
    np.testing.assert_allclose(fedavg(vectors, np.array([1.0, 2.0, 3.0, 4.0])), [0.5, 1.5])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fedavg_rejects_non_finite(bad: float) -> None:
    vectors = np.array([[1.0, 2.0], [bad, 1.0]])
    with pytest.raises(ValueError, match="NaN or infinity"):
        fedavg(vectors, np.array([1.0, 1.0]))


@pytest.mark.parametrize("weights", [[0.0, 0.0], [-1.0, 2.0], [np.nan, 1.0]])
def test_fedavg_rejects_bad_weights(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        fedavg(np.ones((2, 3)), np.array(weights))


def test_fedavg_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="expected vectors"):
        fedavg(np.ones((3, 2)), np.ones(2))


def test_merge_stats_equals_pooled_statistics() -> None:
    rng = np.random.RandomState(2)
    parts = [rng.normal(loc=i, size=(50 + 10 * i, 3)) for i in range(3)]
    merged = merge_stats([FeatureStats.from_samples(p) for p in parts], np.ones(3))
    pooled = np.vstack(parts)
    np.testing.assert_allclose(merged.mean, pooled.mean(axis=0))
    np.testing.assert_allclose(merged.std, pooled.std(axis=0))


def test_merge_centroids_ignores_cluster_order() -> None:
    first = np.array([[0.0, 0.0], [10.0, 10.0]])
    second = first[::-1] + 0.1
    counts = [np.array([30.0, 70.0]), np.array([70.0, 30.0])]
    centers, totals = merge_centroids([first, second], counts, np.ones(2), n_clusters=2)
    swapped, swapped_totals = merge_centroids(
        [first, second[::-1]], [counts[0], counts[1][::-1]], np.ones(2), n_clusters=2
    )
    order = np.argsort(centers[:, 0])
    np.testing.assert_allclose(centers[order], swapped[np.argsort(swapped[:, 0])])
    np.testing.assert_allclose(centers[order], [[0.05, 0.05], [10.05, 10.05]])
    np.testing.assert_allclose(totals[order], [60.0, 140.0])
    np.testing.assert_allclose(np.sort(swapped_totals), [60.0, 140.0])


def test_merge_centroids_keeps_previous_identity() -> None:
    previous = np.array([[10.0], [0.0]])
    centers, _ = merge_centroids(
        [np.array([[0.2], [9.8]])], [np.array([5.0, 5.0])], np.ones(1), 2, init=previous
    )
    np.testing.assert_allclose(centers, [[9.8], [0.2]])


def test_integrity_flags_flipped_and_scaled_update() -> None:
    rng = np.random.RandomState(3)
    honest = 1.0 + 0.05 * rng.normal(size=(4, 20))
    poisoned = -10.0 * honest.mean(axis=0, keepdims=True)
    scores = integrity(np.vstack([honest, poisoned]))
    assert all(s.score == 1.0 for s in scores[:4])
    assert scores[4].score < 0.1
    assert scores[4].cosine < 0


def test_integrity_flags_huge_norm() -> None:
    deltas = np.vstack([np.ones((3, 5)) + np.arange(3)[:, None] * 0.01, 1000 * np.ones((1, 5))])
    scores = integrity(deltas)
    assert scores[3].score < 0.05
    assert min(s.score for s in scores[:3]) == 1.0


def test_integrity_without_majority_scores_one() -> None:
    assert [s.score for s in integrity(np.array([[1.0, 0.0], [-50.0, 3.0]]))] == [1.0, 1.0]


def test_integrity_permutation_invariant() -> None:
    rng = np.random.RandomState(4)
    deltas = np.vstack([rng.normal(size=(5, 6)), 30 * rng.normal(size=(1, 6))])
    order = rng.permutation(6)
    scores = [s.score for s in integrity(deltas)]
    permuted = [s.score for s in integrity(deltas[order])]
    np.testing.assert_allclose(np.array(scores)[order], permuted)


def test_aggregate_kind_weights_by_samples_and_trust() -> None:
    first = kind_model(np.ones(8), 1.0, n_samples=100)
    second = kind_model(np.zeros(8), 0.0, n_samples=300)
    merged = aggregate_kind([first, second], np.array([1.0, 0.5]), 2, previous=None)
    # Effective weights 100 and 150.
    np.testing.assert_allclose(merged.svm_coef, np.full(8, 0.4))
    assert merged.svm_offset == pytest.approx(0.4)
    assert merged.n_samples == 400


def test_inflated_sample_count_is_capped() -> None:
    honest = [kind_model(np.zeros(8), 0.0, n_samples=100) for _ in range(3)]
    inflated = kind_model(np.ones(8), 1.0, n_samples=100)
    inflated.n_samples = 10_000_000
    inflated.counts = inflated.counts * 100_000
    inflated.centers = np.array([[5.0], [6.0]])
    inflated.stats = FeatureStats(
        count=inflated.stats.count * 100_000,
        total=(inflated.stats.total + 50.0) * 100_000,
        total_sq=inflated.stats.total_sq * 100_000,
    )

    merged = aggregate_kind([*honest, inflated], np.ones(4), 2, previous=None)

    # The claim counts as 4 times the median of 100, so 400 of 700 samples.
    share = MAX_SAMPLE_RATIO / (MAX_SAMPLE_RATIO + 3)
    np.testing.assert_allclose(merged.svm_coef, np.full(8, share))
    assert merged.n_samples == 700
    assert merged.stats.count == pytest.approx(700)
    # Its statistics add 0.5 per claimed sample to the sum, and 400 samples count.
    assert merged.stats.total[0] == pytest.approx(0.5 * MAX_SAMPLE_RATIO * 100)
    assert merged.counts.sum() == pytest.approx(700)


def test_bounded_samples_within_ratio() -> None:
    samples = np.array([100.0, 300.0, 400.0, 5000.0])

    np.testing.assert_allclose(bounded_samples(samples, np.ones(4)), [100.0, 300.0, 400.0, 1200.0])
    # Updates that weigh nothing do not set the median.
    np.testing.assert_allclose(
        bounded_samples(samples, np.array([0.0, 0.0, 1.0, 1.0])), [100.0, 300.0, 400.0, 1600.0]
    )
    # One weighted update has nothing to be compared with.
    np.testing.assert_allclose(bounded_samples(samples, np.array([0.0, 0.0, 0.0, 1.0])), samples)


def test_sample_ratios_cap_each_update() -> None:
    samples = np.array([100.0, 100.0, 100.0, 5000.0])

    bounded = bounded_samples(samples, np.ones(4), np.array([4.0, 4.0, 4.0, 1.0]))

    np.testing.assert_allclose(bounded, [100.0, 100.0, 100.0, 100.0])
