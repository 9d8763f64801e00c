"""Tests of feature extraction and normalization."""

import numpy as np
import pytest
from fltrust_core.model import FeatureStats
from fltrust_core.preprocessing import (
    FeatureExtractor,
    StreamingSmoother,
    extract_features,
    feature_names,
    moving_average,
    moving_std,
    normalize,
    select_stats,
)


def test_moving_average_causal_windows():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])

    smoothed = moving_average(x, 3)

    assert smoothed.shape == (5, 1)
    np.testing.assert_allclose(smoothed[:, 0], [1.0, 1.5, 2.0, 3.0, 4.0])


def test_moving_average_window_one_is_identity():
    x = np.random.default_rng(0).normal(size=(20, 2))

    assert np.array_equal(moving_average(x, 1), x)


def test_moving_std_matches_numpy():
    x = np.random.default_rng(1).normal(size=(30, 2))

    result = moving_std(x, 5)

    for i in range(30):
        window = x[max(0, i - 4) : i + 1]
        np.testing.assert_allclose(result[i], window.std(axis=0), atol=1e-12)


@pytest.mark.parametrize("window", [1, 3, 7, 50])
def test_streaming_smoother_equals_array(window):
    x = np.random.default_rng(2).normal(size=(40, 3)) * 100

    smoother = StreamingSmoother(window)
    streamed = np.vstack([smoother.update(row) for row in x])

    assert np.array_equal(streamed, moving_average(x, window))


@pytest.mark.parametrize("extras", [(), ("trend",), ("std",), ("trend", "std"), ("std", "trend")])
def test_feature_extractor_equals_array(extras):
    x = np.random.default_rng(3).normal(size=(120, 2)) * 10 + 50
    extractor = FeatureExtractor(smoothing_window=4, long_window=16, extra_features=extras)

    streamed = np.vstack([extractor.update(row) for row in x])
    batch = extract_features(x, 4, 16, extras)

    assert batch.shape == (120, 2 * (1 + len(extras)))
    assert np.array_equal(streamed, batch)


def test_feature_extractor_reset_starts_over():
    x = np.arange(10.0)
    extractor = FeatureExtractor(smoothing_window=3, long_window=5, extra_features=("trend",))
    for value in x:
        extractor.update([value])

    extractor.reset()

    np.testing.assert_allclose(extractor.update([7.0]), [7.0, 0.0])


def test_feature_extractor_rejects_width_change():
    extractor = FeatureExtractor(smoothing_window=2)
    extractor.update([1.0, 2.0])

    with pytest.raises(ValueError, match="expected 2 values"):
        extractor.update([1.0])


def test_extract_features_layout():
    x = np.column_stack([np.full(10, 5.0), np.arange(10.0)])

    features = extract_features(x, 2, 4, ("trend", "std"))

    assert feature_names(["a", "b"], ("trend", "std")) == [
        "a",
        "b",
        "a_trend",
        "b_trend",
        "a_std",
        "b_std",
    ]
    np.testing.assert_allclose(features[:, 0], 5.0)
    np.testing.assert_allclose(features[:, 2], 0.0)
    np.testing.assert_allclose(features[:, 4], 0.0)
    np.testing.assert_allclose(features[-1, 1], 8.5)
    np.testing.assert_allclose(features[-1, 3], 8.5 - 7.5)


def test_trend_exposes_level_shift():
    x = np.r_[np.zeros(50), np.full(10, 3.0)]

    trend = extract_features(x, 2, 20, ("trend",))[:, 1]

    assert np.all(trend[:50] == 0.0)
    assert trend[51] > 2.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"smoothing_window": 0}, "smoothing_window"),
        ({"smoothing_window": 2, "long_window": 0}, "long_window"),
        ({"smoothing_window": 2, "extra_features": ("slope",)}, "unknown extra feature"),
        ({"smoothing_window": 2, "extra_features": ("std", "std")}, "must not repeat"),
    ],
)
def test_extract_features_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_features(np.zeros((3, 1)), **kwargs)


def test_normalize_with_stats():
    x = np.random.default_rng(4).normal(loc=[10.0, -3.0], scale=[2.0, 0.5], size=(500, 2))
    stats = FeatureStats.from_samples(x)

    z = normalize(x, stats)

    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-9)


def test_normalize_rejects_feature_mismatch():
    stats = FeatureStats.from_samples(np.zeros((3, 2)))

    with pytest.raises(ValueError, match="3 features"):
        normalize(np.zeros((4, 3)), stats)


def test_normalize_constant_feature_is_finite():
    stats = FeatureStats.from_samples(np.full((10, 1), 4.0))

    z = normalize(np.full((2, 1), 4.0), stats)

    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z, 0.0)


def test_select_stats_prefers_global():
    local = FeatureStats.from_samples(np.zeros((4, 2)))
    federated = FeatureStats.from_samples(np.ones((8, 2)))

    assert select_stats(federated, local) is federated


def test_select_stats_falls_back_to_local():
    local = FeatureStats.from_samples(np.zeros((4, 2)))
    other_width = FeatureStats.from_samples(np.ones((8, 3)))

    assert select_stats(None, local) is local
    assert select_stats(other_width, local) is local
