"""Training and calibration jobs that the node runs in its worker thread.

The jobs are pure functions of copied arrays and immutable models, so the main
loop keeps scoring readings with the old detectors while a job runs, and swaps
in the new ones when the job's result arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fltrust_core.detectors import KindDetector, PersonalizedDetector, model_fits
from fltrust_core.model import FeatureStats, FederationParams, GlobalModel, KindModel
from fltrust_core.scoring import model_key

# Minimum number of normal samples of a kind for training or calibrating its model.
MIN_TRAIN_SAMPLES = 20

# Detector that scores a kind's readings (``calibrate`` picks one per kind).
Detector = KindDetector | PersonalizedDetector


def min_train_samples(params: FederationParams) -> int:
    """Return the number of training samples a kind needs to be trained with ``params``."""
    return max(MIN_TRAIN_SAMPLES, params.n_clusters)


def has_enough_samples(n_samples: int, params: FederationParams) -> bool:
    """Return whether a kind with ``n_samples`` training samples can be trained."""
    return n_samples >= min_train_samples(params)


@dataclass(frozen=True)
class RoundResult:
    """The outcome of local training for one round."""

    round: int
    base_version: int
    params: FederationParams
    updates: dict[str, KindModel]
    # Detectors calibrated on the updates, for kinds the global model lacks.
    local_detectors: dict[str, KindDetector]


@dataclass(frozen=True)
class Calibration:
    """Detectors calibrated while ``model_version`` was the adopted global model.

    Kinds in ``global_kinds`` score with the global model, alone or blended
    with a local one, and the others with a local model trained on the same
    data.
    """

    model_version: int
    detectors: dict[str, Detector]
    global_kinds: frozenset[str]


def base_model_of(
    model: GlobalModel | None, kind: str, params: FederationParams
) -> KindModel | None:
    """Return the global model of ``kind`` if it was trained with the same hyper-parameters."""
    if model is None or model.params != params:
        return None
    return model.kinds.get(kind)


def model_key_of(
    model: GlobalModel | None, kind: str, X: np.ndarray, params: FederationParams
) -> str:
    """Return the key of the global model that ``X`` of ``kind`` belongs to.

    That is the kind itself, or one of its regimes when ``X`` is atypical of
    the kind's model (``scoring.model_key``).

    Parameters:
        model: the adopted global model, if any.
        kind: the device kind.
        X: ndarray of shape (n_samples, n_features) of training features.
        params: the hyper-parameters the model must have been trained with.
    """
    if model is None or model.params != params:
        return kind
    return model_key(model.kinds, kind, FeatureStats.from_samples(X), model.max_regimes)


def train_round(
    round_number: int,
    params: FederationParams,
    data: dict[str, np.ndarray],
    global_model: GlobalModel | None,
    target_fpr: float,
) -> RoundResult:
    """Train one update per kind on its normal samples, starting from the global model.

    The update of a kind whose data is atypical of the kind's global model
    starts from, and is sent for, one of the kind's regimes (``model_key_of``).

    Parameters:
        round_number: the announced round.
        params: the round's hyper-parameters.
        data: kind -> ndarray of shape (n_samples, n_features) of training features.
        global_model: the adopted global model, if any.
        target_fpr: false-positive rate of the local detectors.
    """
    updates: dict[str, KindModel] = {}
    local_detectors: dict[str, KindDetector] = {}
    for kind, X in sorted(data.items()):
        key = model_key_of(global_model, kind, X, params)
        detector = KindDetector(params=params, target_fpr=target_fpr)
        updates[key] = detector.train(X, base_model=base_model_of(global_model, key, params))
        if global_model is None or kind not in global_model.kinds:
            local_detectors[kind] = detector.fit(X, model=updates[key])
    base_version = 0 if global_model is None else global_model.version
    return RoundResult(round_number, base_version, params, updates, local_detectors)


def calibrate(
    data: dict[str, np.ndarray],
    global_model: GlobalModel | None,
    params: FederationParams,
    target_fpr: float,
    personalize: bool = True,
) -> Calibration:
    """Calibrate one detector per kind: with the global model when it has the kind, else local.

    A kind whose data is atypical of the kind's global model scores with the
    model of its regime once the coordinator has one (``model_key_of``).

    Parameters:
        data: kind -> ndarray of shape (n_samples, n_features) of training features.
        global_model: the adopted global model, if any.
        params: the hyper-parameters for kinds trained locally.
        target_fpr: intended false-positive rate on normal data.
        personalize: blend the global model with a model trained on the same
            data alone (``PersonalizedDetector``) instead of scoring with the
            global model only.
    """
    detectors: dict[str, Detector] = {}
    global_kinds: set[str] = set()
    for kind, X in sorted(data.items()):
        model = None
        if global_model is not None:
            key = model_key_of(global_model, kind, X, global_model.params)
            model = global_model.kinds.get(key, global_model.kinds.get(kind))
        if global_model is not None and model_fits(model, global_model.params, X.shape[1]):
            estimator = PersonalizedDetector if personalize else KindDetector
            detector = estimator(params=global_model.params, target_fpr=target_fpr)
            detectors[kind] = detector.fit(X, model=model)
            global_kinds.add(kind)
        else:
            detectors[kind] = KindDetector(params=params, target_fpr=target_fpr).fit(X)
    version = 0 if global_model is None else global_model.version
    return Calibration(version, detectors, frozenset(global_kinds))
