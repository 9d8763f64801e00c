"""Simulated compromise of a node, for demos and tests of the coordinator's defences.

Only a ``[simulation]`` section in the configuration enables it. A real
deployment has no such section, and nothing here runs without one. Once a
round numbered ``compromise_at_round`` or later is announced, the node:

- adds ``false_reading_offset`` plus Gaussian noise to every reading,
- reports ``unknown_peers`` extra unknown peers in each heartbeat,
- poisons the SVM weights, offset and k-means centroids of its updates:
  ``sign_flip`` negates them, ``scale`` multiplies them by ``poison_scale`` and
  ``noise`` adds Gaussian noise of standard deviation ``poison_scale``.

The normalization statistics and sample counts stay honest, so the updates
still pass the coordinator's schema checks.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from fltrust_core.model import KindModel

from .config import SimulationConfig

_LOGGER = logging.getLogger(__name__)


class CompromiseSimulation:
    """The misbehaviour of a simulated compromised node."""

    def __init__(self, config: SimulationConfig, node_id: str) -> None:
        """Store the settings. The node behaves honestly until ``observe_round`` activates it."""
        self.config = config
        self.node_id = node_id
        self.active = False
        self._rng = np.random.default_rng(config.seed)

    def observe_round(self, round_number: int) -> None:
        """Activate the compromise when ``round_number`` reaches ``compromise_at_round``."""
        if not self.active and round_number >= self.config.compromise_at_round:
            self.active = True
            _LOGGER.warning(
                "%s: SIMULATION: behaving as a compromised node from round %s on",
                self.node_id,
                round_number,
            )

    def distort(self, values: np.ndarray) -> np.ndarray:
        """Return the readings a compromised node reports instead of ``values``."""
        if not self.active:
            return values
        noise = self._rng.normal(0.0, self.config.false_reading_noise, size=np.shape(values))
        return values + self.config.false_reading_offset + noise

    def extra_unknown_peers(self) -> int:
        """Return the unknown peers to add to a heartbeat."""
        return self.config.unknown_peers if self.active else 0

    def poison(self, kinds: dict[str, KindModel]) -> dict[str, KindModel]:
        """Return the update parameters a compromised node sends instead of ``kinds``."""
        if not self.active or self.config.poison is None:
            return kinds
        return {kind: self._poison_model(model) for kind, model in kinds.items()}

    def _poison_model(self, model: KindModel) -> KindModel:
        method = self.config.poison
        scale = self.config.poison_scale
        if method == "sign_flip":
            return replace(
                model,
                svm_coef=-model.svm_coef,
                svm_offset=-model.svm_offset,
                centers=-model.centers,
            )
        if method == "scale":
            return replace(
                model,
                svm_coef=model.svm_coef * scale,
                svm_offset=model.svm_offset * scale,
                centers=model.centers * scale,
            )
        return replace(
            model,
            svm_coef=model.svm_coef + self._rng.normal(0.0, abs(scale), model.svm_coef.shape),
            svm_offset=model.svm_offset + float(self._rng.normal(0.0, abs(scale))),
            centers=model.centers + self._rng.normal(0.0, abs(scale), model.centers.shape),
        )
