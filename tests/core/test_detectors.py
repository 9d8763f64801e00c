"""Tests of the federated one-class SVM, k-means and the per-kind detector."""

import numpy as np
import pytest
from fltrust_core.detectors import (
    FederatedKMeans,
    FederatedOneClassSVM,
    KindDetector,
    PersonalizedDetector,
    kmeans_anomaly_score,
    make_feature_map,
)
from fltrust_core.model import FederationParams, KindModel
from sklearn.exceptions import NotFittedError

PARAMS = FederationParams(seed=3, rff_components=32, rff_gamma=0.5, n_clusters=3, local_epochs=5)


def normal_samples(n, seed=0, n_features=2):
    return np.random.default_rng(seed).normal(size=(n, n_features))


def test_feature_map_identical_across_nodes():
    first = make_feature_map(3, 16, 0.5, random_state=11)
    second = make_feature_map(3, 16, 0.5, random_state=11)
    x = normal_samples(5, n_features=3)

    assert np.array_equal(first.transform(x), second.transform(x))


def test_svm_fit_shapes():
    X = normal_samples(300)

    svm = FederatedOneClassSVM(n_components=32, random_state=1).fit(X)

    assert svm.coef_.shape == (32,)
    assert isinstance(svm.offset_, float)
    assert svm.anomaly_score(X).shape == (300,)
    assert set(np.unique(svm.predict(X))) <= {-1, 1}


def test_svm_score_conventions():
    X = normal_samples(300)
    svm = FederatedOneClassSVM(n_components=32, random_state=1).fit(X)
    phi = svm.feature_map_.transform(X[:10])

    np.testing.assert_allclose(svm.decision_function(X[:10]), phi @ svm.coef_ - svm.offset_)
    np.testing.assert_allclose(svm.anomaly_score(X[:10]), svm.offset_ - phi @ svm.coef_)
    np.testing.assert_allclose(svm.score_samples(X[:10]), phi @ svm.coef_)


def test_svm_scores_outliers_higher():
    X = normal_samples(500)
    outliers = normal_samples(50, seed=1) * 0.3 + 4.0

    svm = FederatedOneClassSVM(n_components=64, random_state=1).fit(X)

    assert np.median(svm.anomaly_score(outliers)) > np.quantile(svm.anomaly_score(X), 0.95)


def test_svm_keeps_hyper_parameters():
    svm = FederatedOneClassSVM(n_components=8, nu=0.1, max_iter=2)

    svm.fit(normal_samples(50))

    assert svm.get_params()["n_components"] == 8
    assert svm.get_params()["nu"] == 0.1
    assert svm.get_params()["max_iter"] == 2


def test_svm_from_params():
    svm = FederatedOneClassSVM.from_params(PARAMS)

    assert svm.n_components == 32
    assert svm.gamma == 0.5
    assert svm.nu == PARAMS.svm_nu
    assert svm.max_iter == 5
    assert svm.random_state == 3


def test_svm_warm_start_from_global_coef():
    X = normal_samples(200)
    global_coef = np.linspace(-1.0, 1.0, 32)
    global_copy = global_coef.copy()
    svm = FederatedOneClassSVM(
        n_components=32, max_iter=1, learning_rate="constant", eta0=1e-6, random_state=1
    )

    svm.fit(X, coef_init=global_coef, offset_init=0.25)

    np.testing.assert_allclose(svm.coef_, global_coef, atol=1e-3)
    assert svm.offset_ == pytest.approx(0.25, abs=1e-3)
    assert np.array_equal(global_coef, global_copy)


def test_svm_warm_start_moves_toward_local_data():
    X = normal_samples(300)
    cold = FederatedOneClassSVM(n_components=32, random_state=1).fit(X)
    start = np.zeros(32)

    warm = FederatedOneClassSVM(n_components=32, random_state=1).fit(
        X, coef_init=start, offset_init=0.0
    )

    assert np.linalg.norm(warm.coef_ - cold.coef_) < np.linalg.norm(start - cold.coef_)


def test_svm_rejects_wrong_coef_shape():
    with pytest.raises(ValueError, match="coef_init has shape"):
        FederatedOneClassSVM(n_components=32).fit(normal_samples(20), coef_init=np.zeros(5))


def test_svm_rejects_non_finite_input():
    X = normal_samples(20)
    X[3, 1] = np.nan

    with pytest.raises(ValueError):
        FederatedOneClassSVM(n_components=8).fit(X)


def test_kmeans_fit_shapes_and_counts():
    X = normal_samples(200)

    kmeans = FederatedKMeans(n_clusters=4, max_iter=50, random_state=0).fit(X)

    assert kmeans.cluster_centers_.shape == (4, 2)
    assert kmeans.counts_.shape == (4,)
    assert kmeans.counts_.sum() == 200
    assert kmeans.anomaly_score(X).shape == (200,)
    assert kmeans.predict(X).shape == (200,)


def test_kmeans_score_is_nearest_distance():
    centers = np.array([[0.0, 0.0], [10.0, 0.0]])
    X = np.array([[1.0, 0.0], [10.0, 3.0], [5.0, 0.0]])

    np.testing.assert_allclose(kmeans_anomaly_score(X, centers), [1.0, 3.0, 5.0])


def test_kmeans_warm_start_keeps_centroid_order():
    rng = np.random.default_rng(5)
    true_centers = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    X = np.vstack([center + rng.normal(scale=0.3, size=(100, 2)) for center in true_centers])
    init = true_centers[[2, 0, 1]] + 0.5

    kmeans = FederatedKMeans(n_clusters=3, max_iter=5).fit(X, init_centers=init)

    np.testing.assert_allclose(kmeans.cluster_centers_, true_centers[[2, 0, 1]], atol=0.15)
    np.testing.assert_allclose(kmeans.counts_, [100, 100, 100])


def test_kmeans_warm_start_one_iteration():
    X = np.array([[0.0], [2.0], [10.0], [12.0]])

    kmeans = FederatedKMeans(n_clusters=2, max_iter=1).fit(X, init_centers=[[0.0], [12.0]])

    np.testing.assert_allclose(kmeans.cluster_centers_, [[1.0], [11.0]])


def test_kmeans_rejects_wrong_init_shape():
    with pytest.raises(ValueError, match="init_centers has shape"):
        FederatedKMeans(n_clusters=2).fit(normal_samples(10), init_centers=np.zeros((3, 2)))


def test_kmeans_tolerates_duplicate_rows():
    X = np.vstack([np.zeros((10, 2)), np.ones((10, 2))])

    kmeans = FederatedKMeans(n_clusters=4, max_iter=10).fit(X)

    assert kmeans.counts_.sum() == 20


def test_kind_detector_train_builds_update():
    X = normal_samples(400, n_features=3) * [1.0, 2.0, 3.0] + [10.0, 0.0, -5.0]

    update = KindDetector(PARAMS).train(X)

    assert isinstance(update, KindModel)
    assert update.n_samples == 400
    assert update.stats.count == 400
    np.testing.assert_allclose(update.stats.mean, X.mean(axis=0))
    assert update.svm_coef.shape == (32,)
    assert update.centers.shape == (3, 3)
    assert update.counts.sum() == 400


def test_kind_detector_train_centers_are_normalized():
    X = normal_samples(400) * 50.0 + 1000.0

    update = KindDetector(PARAMS).train(X)

    assert np.all(np.abs(update.centers) < 5.0)


def test_kind_detector_train_warm_starts_from_base():
    X = normal_samples(400)
    base = KindDetector(PARAMS).train(normal_samples(400, seed=9))

    update = KindDetector(PARAMS).train(X, base_model=base)

    assert update.centers.shape == base.centers.shape
    for center in base.centers:
        distances = np.linalg.norm(update.centers - center, axis=1)
        assert distances.min() < 1.0


def test_kind_detector_ignores_base_of_other_shape():
    base = KindDetector(PARAMS).train(normal_samples(100, n_features=3))

    update = KindDetector(PARAMS).train(normal_samples(100), base_model=base)

    assert update.n_features == 2


def test_kind_detector_requires_enough_samples():
    with pytest.raises(ValueError):
        KindDetector(PARAMS).train(normal_samples(2))


@pytest.mark.parametrize("target_fpr", [0.01, 0.05])
def test_kind_detector_calibrated_fpr(target_fpr):
    train = normal_samples(3000, seed=1)
    fresh = normal_samples(20000, seed=2)
    detector = KindDetector(PARAMS, target_fpr=target_fpr).fit(train)

    fpr = np.mean(detector.predict(fresh) == -1)

    assert fpr == pytest.approx(target_fpr, abs=target_fpr * 0.5)
    assert np.mean(detector.predict(train) == -1) <= target_fpr + 1e-3


def test_kind_detector_flags_outliers():
    train = normal_samples(1000, seed=1)
    outliers = normal_samples(100, seed=3) * 0.2 + [4.0, -4.0]
    detector = KindDetector(PARAMS, target_fpr=0.01).fit(train)

    assert np.mean(detector.predict(outliers) == -1) > 0.95
    assert detector.anomaly_score(outliers).min() > detector.threshold_


def test_kind_detector_scores_with_given_model():
    train = normal_samples(500, seed=1)
    model = KindDetector(PARAMS).train(normal_samples(500, seed=4))

    detector = KindDetector(PARAMS).fit(train, model=model)

    assert detector.model_ is model
    assert detector.anomaly_score(train).shape == (500,)
    assert detector.score_center_.shape == (2,)
    assert np.all(detector.score_scale_ > 0)


def test_kind_detector_rejects_feature_mismatch():
    detector = KindDetector(PARAMS).fit(normal_samples(100))

    with pytest.raises(ValueError, match="expected 2"):
        detector.anomaly_score(normal_samples(5, n_features=3))


def test_kind_detector_constant_data():
    detector = KindDetector(PARAMS).fit(np.full((50, 1), 21.5))

    scores = detector.anomaly_score(np.array([[21.5], [30.0]]))

    assert np.all(np.isfinite(scores))
    assert scores[1] > detector.threshold_


def test_kind_detector_deterministic():
    X = normal_samples(300)

    first = KindDetector(PARAMS).train(X)
    second = KindDetector(PARAMS).train(X)

    assert np.array_equal(first.svm_coef, second.svm_coef)
    assert np.array_equal(first.centers, second.centers)


def test_personalized_detector_weighs_both_scores():
    train = normal_samples(500, seed=1)
    model = KindDetector(PARAMS).train(normal_samples(500, seed=4))
    fresh = normal_samples(50, seed=5)

    detector = PersonalizedDetector(PARAMS, target_fpr=0.05, local_weight=0.25, local_rows=0).fit(
        train, model=model
    )

    assert detector.global_detector_.model_ is model
    assert detector.local_detector_.model_ is not model
    assert detector.local_weight_ == 0.25
    np.testing.assert_allclose(
        detector.anomaly_score(fresh),
        0.75 * detector.global_detector_.anomaly_score(fresh)
        + 0.25 * detector.local_detector_.anomaly_score(fresh),
    )
    # The threshold is the 95 % quantile of the held-out rows, so at most one
    # row more than 5 % of them lies above it.
    held_out = train[1::2]
    assert np.mean(detector.predict(held_out) == -1) <= 0.05 + 1 / held_out.shape[0]
    np.testing.assert_allclose(
        detector.decision_function(fresh), detector.threshold_ - detector.anomaly_score(fresh)
    )


def test_personalized_detector_resolves_narrow_local_data():
    rng = np.random.default_rng(0)
    # The kind spans a wide range; this node's readings fill a small part of it.
    model = KindDetector(PARAMS).train(rng.normal(scale=10.0, size=(3000, 2)))
    node = rng.normal(loc=[5.0, 5.0], scale=0.5, size=(500, 2))
    shifted = rng.normal(loc=[5.0, 5.0], scale=0.5, size=(200, 2)) + np.array([2.0, -2.0])

    global_only = KindDetector(PARAMS).fit(node, model=model)
    personalized = PersonalizedDetector(PARAMS).fit(node, model=model)

    assert np.mean(global_only.predict(shifted) == -1) < 0.5
    assert np.mean(personalized.predict(shifted) == -1) > 0.9


def test_personalized_detector_atypical_data_scores_locally():
    rng = np.random.default_rng(0)
    model = KindDetector(PARAMS).train(rng.normal(size=(1000, 2)))
    # Fifty standard deviations of the kind away: another operating regime.
    node = rng.normal(loc=[50.0, 0.0], size=(400, 2))
    fresh = rng.normal(loc=[50.0, 0.0], size=(50, 2))

    detector = PersonalizedDetector(PARAMS).fit(node, model=model)

    assert detector.local_weight_ == 1.0
    np.testing.assert_allclose(
        detector.anomaly_score(fresh), detector.local_detector_.anomaly_score(fresh)
    )


def test_personalized_detector_local_weight_grows_with_rows():
    model = KindDetector(PARAMS).train(normal_samples(500, seed=4))

    weights = [
        PersonalizedDetector(PARAMS, local_weight=0.5, local_rows=400)
        .fit(normal_samples(rows, seed=1), model=model)
        .local_weight_
        for rows in (40, 400, 4000)
    ]

    np.testing.assert_allclose(weights, [0.5 * 40 / 440, 0.25, 0.5 * 4000 / 4400])


def test_personalized_detector_rejects_negative_local_rows():
    with pytest.raises(ValueError, match="invalid local_rows"):
        PersonalizedDetector(PARAMS, local_rows=-1).fit(normal_samples(100, seed=1))


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_personalized_detector_rejects_invalid_weight(weight):
    with pytest.raises(ValueError, match="invalid local_weight"):
        PersonalizedDetector(PARAMS, local_weight=weight).fit(normal_samples(100, seed=1))


def test_personalized_detector_uses_given_local_model():
    train = normal_samples(300, seed=1)
    local = KindDetector(PARAMS).train(train)

    detector = PersonalizedDetector(PARAMS).fit(train, local_model=local)

    assert detector.local_detector_.model_ is local
    assert detector.n_features_in_ == 2


def test_personalized_detector_requires_fit():
    with pytest.raises(NotFittedError):
        PersonalizedDetector(PARAMS).anomaly_score(normal_samples(5))


def test_personalized_threshold_is_quantile_on_held_out_rows():
    train = normal_samples(500, seed=1)
    model = KindDetector(PARAMS).train(normal_samples(500, seed=4))

    detector = PersonalizedDetector(PARAMS, target_fpr=0.05).fit(train, model=model)

    held_out = train[1::2]
    assert detector.threshold_ == pytest.approx(np.quantile(detector.anomaly_score(held_out), 0.95))
    assert detector.local_detector_.model_.n_samples == 250


def test_personalized_detector_rejects_feature_mismatch():
    detector = PersonalizedDetector(PARAMS).fit(normal_samples(100, seed=1))

    with pytest.raises(ValueError, match="features, expected 2"):
        detector.anomaly_score(np.zeros((3, 3)))


def test_personalized_detector_small_buffer_uses_all_rows():
    train = normal_samples(5, seed=1)

    detector = PersonalizedDetector(PARAMS).fit(train)

    assert detector.local_detector_.model_.n_samples == 5
