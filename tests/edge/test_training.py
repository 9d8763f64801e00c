"""Tests of the calibration job: which detector each kind scores with."""

import numpy as np
import pytest
from fltrust_core.detectors import KindDetector, PersonalizedDetector
from fltrust_core.model import FederationParams, GlobalModel
from fltrust_core.protocol import MAX_REGIMES
from fltrust_edge.training import calibrate, train_round

PARAMS = FederationParams(seed=3, rff_components=32, rff_gamma=0.5, n_clusters=3, local_epochs=5)


def kind_data(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(200, 2))


def global_model(max_regimes: int = MAX_REGIMES) -> GlobalModel:
    model = GlobalModel(version=4, params=PARAMS, max_regimes=max_regimes)
    model.kinds["pump"] = KindDetector(PARAMS).train(kind_data(9))
    return model


def test_calibrate_blends_global_and_local_by_default():
    model = global_model()

    calibration = calibrate({"pump": kind_data(1)}, model, PARAMS, 0.01)

    detector = calibration.detectors["pump"]
    assert isinstance(detector, PersonalizedDetector)
    assert detector.global_detector_.model_ is model.kinds["pump"]
    assert detector.local_detector_.model_ is not model.kinds["pump"]
    assert calibration.global_kinds == frozenset({"pump"})
    assert calibration.model_version == 4


def test_calibrate_global_only_when_not_personalized():
    model = global_model()

    calibration = calibrate({"pump": kind_data(1)}, model, PARAMS, 0.01, personalize=False)

    detector = calibration.detectors["pump"]
    assert isinstance(detector, KindDetector)
    assert detector.model_ is model.kinds["pump"]


def test_calibrate_kind_without_global_model_is_local():
    calibration = calibrate({"fan": kind_data(2)}, global_model(), PARAMS, 0.01)

    assert isinstance(calibration.detectors["fan"], KindDetector)
    assert calibration.global_kinds == frozenset()


def far_data(seed: int) -> np.ndarray:
    """Data of the kind in another regime: means 100 standard deviations away."""
    return kind_data(seed) + 100.0


def test_atypical_data_trains_first_free_regime():
    model = global_model()

    result = train_round(5, PARAMS, {"pump": far_data(1)}, model, 0.01)

    assert set(result.updates) == {"pump.1"}
    # A regime without a model starts from the data's own statistics.
    assert result.updates["pump.1"].stats.mean == pytest.approx(far_data(1).mean(axis=0), abs=1e-9)


def test_atypical_data_trains_and_scores_with_its_regime():
    model = global_model()
    model.kinds["pump.1"] = KindDetector(PARAMS).train(far_data(9))

    result = train_round(5, PARAMS, {"pump": far_data(1)}, model, 0.01)
    calibration = calibrate({"pump": far_data(1)}, model, PARAMS, 0.01)

    assert set(result.updates) == {"pump.1"}
    detector = calibration.detectors["pump"]
    assert isinstance(detector, PersonalizedDetector)
    assert detector.global_detector_.model_ is model.kinds["pump.1"]
    assert detector.local_weight_ < 1.0


def test_typical_data_keeps_the_kind_model():
    model = global_model()
    model.kinds["pump.1"] = KindDetector(PARAMS).train(far_data(9))

    result = train_round(5, PARAMS, {"pump": kind_data(1)}, model, 0.01)

    assert set(result.updates) == {"pump"}


def test_atypical_data_before_its_regime_scores_locally():
    model = global_model()

    calibration = calibrate({"pump": far_data(1)}, model, PARAMS, 0.01)

    detector = calibration.detectors["pump"]
    assert isinstance(detector, PersonalizedDetector)
    assert detector.global_detector_.model_ is model.kinds["pump"]
    assert detector.local_weight_ == 1.0


def test_coordinator_without_regimes_keeps_the_kind():
    # A coordinator from before regimes rejects updates for them.
    model = global_model(max_regimes=0)

    result = train_round(5, PARAMS, {"pump": far_data(1)}, model, 0.01)

    assert set(result.updates) == {"pump"}
