"""The attacks of the benchmark grid: which nodes attack, when, and what they send.

Each attack builds on a function of ``fltrust_core.attacks`` with the
parameters listed in ``ATTACKS``. Vector attacks change the delta of the
attacker's honest update (SVM weights, offset and centroids, relative to
the global model it was trained from) and keep its statistics and sample
count, apart from ``lie_inflate``, which also claims inflated counts. Data
poisoning retrains on poisoned rows, so everything in the update follows
from the poisoned data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from fltrust_core import attacks
from fltrust_core.model import FeatureStats, KindModel

from .data import NodeData
from .vectors import base_vector, model_vector, with_vector


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the grid with its parameters."""

    name: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)


ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("sign_flip", "negated delta, scaled by 4", {"scale": 4.0}),
        AttackSpec("scale", "delta multiplied by 10 (boosting)", {"factor": 10.0}),
        AttackSpec(
            "noise",
            "pure Gaussian noise, std such that its norm is 10x the median honest delta's",
            {"relative_norm": 10.0},
        ),
        AttackSpec("lie", "a little is enough, z from the number of colluders", {}),
        AttackSpec(
            "lie_inflate",
            "a little is enough, claiming 1000x its sample count, centroid counts and statistics",
            {"factor": 1000.0},
        ),
        AttackSpec("shift", "trains on its normal rows shifted by 3 std", {"shift": 3.0}),
        AttackSpec(
            "mislabel",
            "trains on rows of which 50 % are anomalies of its kind labelled normal",
            {"fraction": 0.5},
        ),
        AttackSpec("free_zero", "sends the global model back unchanged", {}),
        AttackSpec("free_stale", "resends its own update of the previous round", {}),
        AttackSpec(
            "sybil",
            "colluders send one mislabel-poisoned update with noise of 1e-3 of its norm",
            {"fraction": 0.5, "relative_noise": 1e-3},
        ),
        AttackSpec(
            "on_off",
            "sign flip (scale 4) for 2 rounds, honest for 1, repeated",
            {"scale": 4.0, "on_rounds": 2, "off_rounds": 1},
        ),
        AttackSpec("replay", "resends its own update of the first round", {}),
    )
}
# Attacks of the trust-dynamics section only. Framing attacks an honest node's
# trust rather than the model, so the grid's detection and quarantine targets
# do not apply to it.
DYNAMICS_ATTACKS: dict[str, AttackSpec] = {
    "frame": AttackSpec(
        "frame",
        "colluders put the mean of the others on an honest node's update",
        {"relative_noise": 0.3},
    ),
}
ALL_ATTACKS = {**ATTACKS, **DYNAMICS_ATTACKS}


@dataclass
class AttackContext:
    """Knowledge of the attackers of one kind in one round, and how they retrain."""

    round: int
    start: int
    base: KindModel | None
    honest: dict[str, KindModel]
    malicious: list[str]
    submitted: dict[str, list[KindModel]]
    retrain: Callable[[str, Callable[[np.ndarray], np.ndarray]], KindModel]
    nodes: dict[str, NodeData]
    rng: np.random.Generator
    # Nodes whose data is atypical for their kind. The coordinator leaves them
    # out of its robust statistics, and an attacker that applies its rule does too.
    atypical: frozenset[str] = frozenset()


def active(spec: AttackSpec, round_number: int, start: int) -> bool:
    """Return whether the attackers of ``spec`` attack in ``round_number``."""
    if spec.name == "on_off":
        return attacks.on_off_active(
            round_number, start, spec.params["on_rounds"], spec.params["off_rounds"]
        )
    return round_number >= start


def craft(spec: AttackSpec, context: AttackContext) -> dict[str, KindModel]:
    """Return the update each malicious node of one kind sends in this round."""
    if not context.malicious or not active(spec, context.round, context.start):
        return {}
    name = spec.name
    params = spec.params
    malicious = context.malicious
    first = context.honest[malicious[0]]
    base = base_vector(context.base, first)
    deltas = np.vstack([model_vector(context.honest[n]) - base for n in malicious])
    benign = [n for n in context.honest if n not in malicious]
    benign_deltas = np.vstack([model_vector(context.honest[n]) - base for n in benign])
    benign_norm = float(np.median(np.linalg.norm(benign_deltas, axis=1)))

    if name in ("sign_flip", "on_off"):
        poisoned = attacks.sign_flip(deltas, params["scale"])
    elif name == "scale":
        poisoned = attacks.scale(deltas, params["factor"])
    elif name == "noise":
        std = params["relative_norm"] * benign_norm / np.sqrt(deltas.shape[1])
        poisoned = attacks.gaussian_noise(deltas, std, replace=True, random_state=context.rng)
    elif name in ("lie", "lie_inflate"):
        poisoned = attacks.little_is_enough(benign_deltas, len(malicious))
    elif name == "shift":
        return {
            n: context.retrain(n, lambda X: attacks.shift_features(X, params["shift"]))
            for n in malicious
        }
    elif name in ("mislabel", "sybil"):
        # The anomalies of every node of the kind: some nodes have none in
        # their own test rows, and some have anomalies that lie within their
        # normal range, so their own would poison nothing.
        anomalies = np.vstack([d.X_anomalous for d in context.nodes.values()])
        poisoned_models = {
            n: context.retrain(
                n, lambda X: attacks.mislabel(X, anomalies, params["fraction"], context.rng)
            )
            for n in (malicious if name == "mislabel" else malicious[:1])
        }
        if name == "mislabel":
            return poisoned_models
        leader = poisoned_models[malicious[0]]
        target = model_vector(leader) - base
        noise = params["relative_noise"] * np.linalg.norm(target) / np.sqrt(target.size)
        copies = attacks.sybil(target, len(malicious), noise, context.rng)
        return {
            n: with_vector(leader, base + copy) for n, copy in zip(malicious, copies, strict=True)
        }
    elif name == "free_zero":
        zero = attacks.free_ride(deltas)
        return {
            n: with_vector(context.honest[n], base + z)
            for n, z in zip(malicious, zero, strict=True)
        }
    elif name == "free_stale":
        return {n: context.submitted[n][-1] for n in malicious}
    elif name == "replay":
        return {n: attacks.replay(context.submitted[n]) for n in malicious}
    elif name == "frame":
        # The first honest node with typical data is framed; the colluders see
        # the round's honest updates, as for LIE.
        typical = [n for n in benign if n not in context.atypical]
        if len(typical) < 2:
            return {}
        target, *others = typical
        poisoned = attacks.frame(
            np.vstack([model_vector(context.honest[n]) - base for n in others]),
            model_vector(context.honest[target]) - base,
            len(malicious),
            params["relative_noise"],
            context.rng,
        )
    else:
        raise ValueError(f"unknown attack {name!r}")
    crafted = {
        n: with_vector(context.honest[n], base + vector)
        for n, vector in zip(malicious, poisoned, strict=True)
    }
    if name == "lie_inflate":
        return {n: inflated(model, params["factor"]) for n, model in crafted.items()}
    return crafted


def inflated(model: KindModel, factor: float) -> KindModel:
    """Return ``model`` claiming ``factor`` times its counts: samples, centroids, statistics."""
    stats = model.stats
    return replace(
        model,
        n_samples=int(attacks.inflate(np.array(model.n_samples), factor)),
        counts=attacks.inflate(model.counts, factor),
        stats=FeatureStats(
            count=float(attacks.inflate(np.array(stats.count), factor)),
            total=attacks.inflate(stats.total, factor),
            total_sq=attacks.inflate(stats.total_sq, factor),
        ),
    )
