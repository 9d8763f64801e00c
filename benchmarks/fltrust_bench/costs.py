"""Aggregation time per round: fltrust's coordinator next to Flower's functions, same arrays.

Each update is a ``KindModel`` whose SVM part has ``n_parameters`` values (the
other parts are 4 centroids of 8 features and their statistics), made of
random numbers around a shared model. fltrust's time covers what its
coordinator does per kind and round: ``update_parts``, ``score_updates``
against every sender's baseline, and ``aggregate_kind``. Flower's rules get
the same updates as lists of arrays, as ``flower.aggregate_with`` builds them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from fltrust_core.aggregation import aggregate_kind
from fltrust_core.model import FeatureStats, KindModel
from fltrust_core.scoring import (
    learn_baseline,
    score_updates,
    typical_data,
    update_digest,
    update_parts,
)

from .flower import FLOWER_RULES, to_ndarrays

_LOGGER = logging.getLogger(__name__)
N_CLUSTERS = 4
N_FEATURES = 8
# A measurement slower than this many seconds is not repeated.
SLOW_SECONDS = 2.0


def synthetic_updates(
    n_nodes: int, n_parameters: int, random_state: int = 0
) -> tuple[KindModel, list[KindModel]]:
    """Return a previous global model and ``n_nodes`` updates of it with random changes."""
    rng = np.random.default_rng(random_state)

    def model(coef: np.ndarray, centers: np.ndarray) -> KindModel:
        samples = rng.normal(size=(50, N_FEATURES))
        return KindModel(
            stats=FeatureStats.from_samples(samples),
            svm_coef=coef[:-1],
            svm_offset=float(coef[-1]),
            centers=centers,
            counts=np.full(N_CLUSTERS, 50.0 / N_CLUSTERS),
            n_samples=50,
        )

    base_coef = rng.normal(size=n_parameters)
    base_centers = rng.normal(size=(N_CLUSTERS, N_FEATURES))
    previous = model(base_coef, base_centers)
    updates = [
        model(
            base_coef + 0.1 * rng.normal(size=n_parameters),
            base_centers + 0.1 * rng.normal(size=(N_CLUSTERS, N_FEATURES)),
        )
        for _ in range(n_nodes)
    ]
    return previous, updates


def _fltrust_round(previous: KindModel, updates: list[KindModel], baselines: list[Any]) -> None:
    parts = [update_parts(u, previous) for u in updates]
    [update_digest(u) for u in updates]
    scores = score_updates(
        parts,
        baselines,
        [False] * len(updates),
        typical=typical_data([u.stats for u in updates], previous.stats),
    )
    weights = np.array([s.weight * s.evidence for s in scores])
    aggregate_kind(
        updates,
        weights * np.array([s.clip for s in scores]),
        N_CLUSTERS,
        previous,
        center_weights=weights * np.array([s.center_clip for s in scores]),
    )


def _call_rule(function: Callable[..., Any], results: list[Any], n_malicious: int) -> None:
    # Bulyan removes entries from the list it gets, so every call gets a copy.
    function(list(results), n_malicious)


def _timed(function: Callable[[], Any], repeats: int) -> float:
    """Return the fastest of up to ``repeats`` runs, in seconds; slow calls run once."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
        if best > SLOW_SECONDS:
            break
    return best


def measure_costs(
    node_counts: tuple[int, ...],
    n_parameters: int,
    repeats: int,
    bulyan_max_nodes: int,
) -> list[dict[str, Any]]:
    """Return one row per method and node count: seconds per round, or None when skipped.

    The malicious count that Krum, Multi-Krum, FedTrimmedAvg and Bulyan get
    is 10 % of the nodes (Bulyan caps it, see ``flower``). Bulyan is skipped
    above ``bulyan_max_nodes`` nodes.
    """
    rows = []
    for n_nodes in node_counts:
        previous, updates = synthetic_updates(n_nodes, n_parameters)
        # Baselines from one earlier round, so the history comparison runs too.
        earlier = [
            update_parts(u, previous) for u in synthetic_updates(n_nodes, n_parameters, 1)[1]
        ]
        first = score_updates(earlier, [None] * n_nodes, [False] * n_nodes)
        baselines = [learn_baseline(None, p, s) for p, s in zip(earlier, first, strict=True)]
        seconds = _timed(partial(_fltrust_round, previous, updates, baselines), repeats)
        rows.append({"method": "fltrust", "nodes": n_nodes, "seconds": seconds})
        _LOGGER.info("cost: fltrust with %s nodes: %.3f s", n_nodes, seconds)

        results = [(to_ndarrays(u), u.n_samples) for u in updates]
        n_malicious = n_nodes // 10
        for rule, function in FLOWER_RULES.items():
            if rule == "Bulyan" and n_nodes > bulyan_max_nodes:
                rows.append({"method": rule, "nodes": n_nodes, "seconds": None})
                continue
            seconds = _timed(partial(_call_rule, function, results, n_malicious), repeats)
            rows.append({"method": rule, "nodes": n_nodes, "seconds": seconds})
            _LOGGER.info("cost: %s with %s nodes: %.3f s", rule, n_nodes, seconds)
    return rows
