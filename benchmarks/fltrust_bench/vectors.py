"""Conversion between a ``KindModel`` and the flat vector that attacks change."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from fltrust_core.model import KindModel


def model_vector(model: KindModel) -> np.ndarray:
    """Return the SVM weights, SVM offset and centroids of ``model`` as one vector."""
    return np.concatenate([model.svm_coef, [model.svm_offset], model.centers.ravel()])


def base_vector(base: KindModel | None, like: KindModel) -> np.ndarray:
    """Return the vector of the global model, or zeros before the first one."""
    if base is None:
        return np.zeros_like(model_vector(like))
    return model_vector(base)


def with_vector(model: KindModel, vector: np.ndarray) -> KindModel:
    """Return ``model`` with its SVM and centroids replaced by those in ``vector``.

    The statistics, centroid counts and sample count stay those of ``model``.
    """
    n_coef = model.svm_coef.size
    return replace(
        model,
        svm_coef=np.array(vector[:n_coef], dtype=float),
        svm_offset=float(vector[n_coef]),
        centers=np.array(vector[n_coef + 1 :], dtype=float).reshape(model.centers.shape),
    )
