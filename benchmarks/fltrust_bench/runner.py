"""The benchmark grid, run over worker processes, and its raw results.

Every task builds its federation from the data folder once per worker (the
loaders cache what they read) and returns plain dictionaries, so results
travel between processes and into JSON unchanged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from fltrust_core.detectors import KindDetector
from fltrust_core.model import KindModel

from .analysis import PERSONALIZED
from .attacking import ATTACKS
from .candidates import CHOSEN
from .federations import FEDERATIONS, SAME_KIND, FederationSpec
from .simulate import TARGET_FPR, TRAIN_SHARE, RunResult, RunSpec, evaluate, run

_LOGGER = logging.getLogger(__name__)

METRICS = ("auc", "f1", "precision", "recall", "fpr", "flag_all_f1")


@dataclass(frozen=True)
class GridConfig:
    """Grid of a benchmark run: federations, attacks, fractions, seeds and rounds."""

    federations: tuple[str, ...]
    attacks: tuple[str, ...]
    fractions: tuple[float, ...]
    seeds: tuple[int, ...]
    rounds: int = 8
    attack_start: int = 4
    candidates: bool = True
    # Round counts of the cost measurement per number of nodes.
    cost_nodes: tuple[int, ...] = (10, 100, 1000)
    cost_parameters: int = 10_000
    cost_repeats: int = 3
    # Numbers of nodes up to which Bulyan is timed; it calls Krum n - 2f times.
    bulyan_max_nodes: int = 100
    # Training rows per node in the attack-free runs on scarce local data.
    scarce_rows: tuple[int, ...] = (25, 50, 100, 200)


DEFAULT_GRID = GridConfig(
    federations=("pump", "gps", "mixed"),
    attacks=tuple(ATTACKS),
    fractions=(0.1, 0.2, 0.3, 0.4),
    seeds=(0, 1, 2),
)
FULL_GRID = replace(
    DEFAULT_GRID,
    federations=("pump", "gps", "mixed", "machine"),
    seeds=(0, 1, 2, 3, 4),
    rounds=12,
    attack_start=5,
)


@dataclass
class GridResults:
    """Raw results of a grid: one entry per run and per reference model."""

    config: GridConfig
    data_dir: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    references: list[dict[str, Any]] = field(default_factory=list)
    dynamics: list[dict[str, Any]] = field(default_factory=list)
    scarce: list[dict[str, Any]] = field(default_factory=list)
    costs: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary."""
        return {
            "config": asdict(self.config),
            "data_dir": self.data_dir,
            "runs": self.runs,
            "references": self.references,
            "dynamics": self.dynamics,
            "scarce": self.scarce,
            "costs": self.costs,
            "seconds": self.seconds,
        }


# Worker side.

_DATA_DIR: Path | None = None


def _init_worker(data_dir: Path) -> None:
    global _DATA_DIR  # noqa: PLW0603
    _DATA_DIR = data_dir
    # Several workers share the cores; nested BLAS or OpenMP threads only contend.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@cache
def _federation(name: str) -> FederationSpec:
    if _DATA_DIR is None:
        raise RuntimeError("worker started without a data folder")
    return FEDERATIONS[name](_DATA_DIR)


def _rounded(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 3)


def _reported(per_node: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return node id -> the figures in ``METRICS`` of one method's metrics."""
    return {node: {name: values.get(name) for name in METRICS} for node, values in per_node.items()}


def _compact(result: RunResult) -> dict[str, Any]:
    """Return a run's results as plain data: metrics per node and trust histories."""
    metrics = {method: _reported(per_node) for method, per_node in result.metrics.items()}
    trust = {
        method: {
            node: [[r, s, status] for r, s, status in history] for node, history in nodes.items()
        }
        for method, nodes in result.trust.items()
    }
    deviations = {
        node: [
            [r, _rounded(deviation), _rounded(distance), _rounded(mimic), reason]
            for r, deviation, distance, mimic, reason in history
        ]
        for node, history in result.deviations.get(CHOSEN, {}).items()
    }
    return {
        "spec": asdict(result.spec),
        "malicious": result.malicious,
        "metrics": metrics,
        "trust": trust,
        "deviations": deviations,
    }


def run_task(spec: RunSpec) -> dict[str, Any]:
    """Run one grid cell in a worker and return its compact results."""
    started = time.perf_counter()
    federation = _federation(spec.federation)
    result = _compact(run(federation, spec))
    result["atypical"] = sorted(federation.atypical())
    result["seconds"] = time.perf_counter() - started
    return result


def _train_rounds(
    federation: FederationSpec, X: np.ndarray, rounds: int, seed: int, index: int
) -> KindModel:
    """Train ``rounds`` rounds on ``X`` alone, each on a random 80 % of its rows."""
    model = None
    for round_number in range(1, rounds + 1):
        rng = np.random.default_rng([seed, round_number, index])
        rows = np.sort(rng.choice(X.shape[0], int(TRAIN_SHARE * X.shape[0]), replace=False))
        model = KindDetector(federation.params, TARGET_FPR).train(X[rows], base_model=model)
    assert model is not None
    return model


def _local_metrics(federation: FederationSpec, rounds: int, seed: int) -> dict[str, dict[str, Any]]:
    """Return node id -> metrics of a model each node trains on its own rows alone."""
    local: dict[str, dict[str, Any]] = {}
    for index, node in enumerate(federation.nodes):
        model = _train_rounds(federation, node.X_train, rounds, seed, index)
        local.update(evaluate(federation, {node.kind: model}, [node.node_id]))
    return local


def _typical_models(federation: FederationSpec, rounds: int, seed: int) -> dict[str, KindModel]:
    """Return kind -> a model trained on the pooled rows of the kind's typical nodes."""
    atypical = federation.atypical()
    return {
        kind: _train_rounds(
            federation,
            np.vstack(
                [
                    n.X_train
                    for n in federation.nodes
                    if n.kind == kind and n.node_id not in atypical
                ]
            ),
            rounds,
            seed,
            1001,
        )
        for kind in federation.kinds
    }


def reference_task(task: tuple[str, int, int]) -> dict[str, Any]:
    """Return the local-only and centralized models' metrics for one federation and seed.

    Local-only: each node trains the same number of rounds on its own rows.
    Centralized: one model per kind trained on the pooled rows of all nodes of
    the kind, then calibrated by each node on its own rows. A second one is
    trained on the pooled rows of the nodes with typical data only, the data
    that fltrust's coordinator lets into a kind's model.
    """
    name, seed, rounds = task
    federation = _federation(name)
    node_ids = [n.node_id for n in federation.nodes]
    local = _local_metrics(federation, rounds, seed)
    central_models = {
        kind: _train_rounds(
            federation,
            np.vstack([n.X_train for n in federation.nodes if n.kind == kind]),
            rounds,
            seed,
            1000,
        )
        for kind in federation.kinds
    }
    central = evaluate(federation, central_models, node_ids)
    central_typical = evaluate(federation, _typical_models(federation, rounds, seed), node_ids)

    return {
        "federation": name,
        "seed": seed,
        "local": _reported(local),
        "central": _reported(central),
        "central_typical": _reported(central_typical),
    }


def scarce_task(task: tuple[str, int, int, int]) -> dict[str, Any]:
    """Return the attack-free metrics of one federation whose nodes hold few training rows.

    Each node keeps the first ``rows`` rows of its training data, as a node
    does that has just started. fltrust runs its rounds as in the grid; the
    local-only and typical-node centralized models train on the same rows.
    """
    name, rows, seed, rounds = task
    full = _federation(name)
    federation = replace(
        full, nodes=tuple(replace(node, X_train=node.X_train[:rows]) for node in full.nodes)
    )
    spec = RunSpec(
        federation=name, attack="none", fraction=0.0, seed=seed, rounds=rounds, candidates=False
    )
    result = run(federation, spec)
    node_ids = [node.node_id for node in federation.nodes]
    metrics = {
        "fltrust": result.metrics["fltrust"],
        PERSONALIZED: result.metrics[PERSONALIZED],
        "local": _local_metrics(federation, rounds, seed),
        "central_typical": evaluate(
            federation, _typical_models(federation, rounds, seed), node_ids
        ),
    }
    return {
        "federation": name,
        "rows": rows,
        "seed": seed,
        "atypical": sorted(federation.atypical()),
        "metrics": {method: _reported(per_node) for method, per_node in metrics.items()},
    }


# Coordinator side.


def grid_specs(config: GridConfig) -> list[RunSpec]:
    """Return every run of the grid: the attack-free run and each attack and fraction."""
    specs = []
    for federation in config.federations:
        for seed in config.seeds:
            common = {
                "federation": federation,
                "seed": seed,
                "rounds": config.rounds,
                "attack_start": config.attack_start,
                "candidates": config.candidates,
            }
            specs.append(RunSpec(attack="none", fraction=0.0, **common))
            for attack in config.attacks:
                for fraction in config.fractions:
                    specs.append(RunSpec(attack=attack, fraction=fraction, **common))
    return specs


def dynamics_specs(config: GridConfig) -> list[RunSpec]:
    """Return the runs of the trust-dynamics section, on the pump federation with seed 0.

    - on-off attackers with longer honest pauses;
    - attackers that attack from the first round, before any honest history;
    - colluders that frame an honest node from the first round;
    - attackers that stop after quarantine and are released by the operator.
    """
    rounds = max(config.rounds, 14)
    common = {"federation": "pump", "seed": 0, "rounds": rounds, "candidates": False}
    return [
        RunSpec(attack="on_off", fraction=0.3, attack_start=config.attack_start, **common),
        RunSpec(attack="sign_flip", fraction=0.3, attack_start=1, **common),
        RunSpec(attack="mislabel", fraction=0.3, attack_start=1, **common),
        RunSpec(attack="frame", fraction=0.3, attack_start=1, **common),
        RunSpec(
            attack="sign_flip",
            fraction=0.3,
            attack_start=config.attack_start,
            attack_stop=config.attack_start + 2,
            release_round=config.attack_start + 4,
            **common,
        ),
    ]


def _map(
    function: Callable[[Any], dict[str, Any]],
    tasks: Iterable[Any],
    data_dir: Path,
    workers: int,
    label: str,
) -> list[dict[str, Any]]:
    tasks = list(tasks)
    results = []
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(data_dir,)) as pool:
        for index, result in enumerate(pool.map(function, tasks, chunksize=1), start=1):
            results.append(result)
            if index % 20 == 0 or index == len(tasks):
                _LOGGER.info(
                    "%s: %s of %s done after %.0f s",
                    label,
                    index,
                    len(tasks),
                    time.perf_counter() - started,
                )
    return results


def run_grid(config: GridConfig, data_dir: Path, workers: int) -> GridResults:
    """Run the grid, the reference models and the trust-dynamics runs."""
    results = GridResults(config, str(data_dir))
    started = time.perf_counter()
    results.runs = _map(run_task, grid_specs(config), data_dir, workers, "grid")
    results.seconds["grid"] = time.perf_counter() - started

    started = time.perf_counter()
    tasks = [(f, s, config.rounds) for f in config.federations for s in config.seeds]
    results.references = _map(reference_task, tasks, data_dir, workers, "references")
    results.seconds["references"] = time.perf_counter() - started

    started = time.perf_counter()
    specs = dynamics_specs(config) if "pump" in config.federations else []
    results.dynamics = _map(run_task, specs, data_dir, workers, "trust dynamics")
    results.seconds["dynamics"] = time.perf_counter() - started

    started = time.perf_counter()
    tasks = [
        (f, rows, s, config.rounds)
        for f in config.federations
        if f in SAME_KIND
        for rows in config.scarce_rows
        for s in config.seeds
    ]
    results.scarce = _map(scarce_task, tasks, data_dir, workers, "scarce data")
    results.seconds["scarce"] = time.perf_counter() - started
    return results
