"""Candidate robust, trust-weighted aggregation rules, measured side by side.

A candidate combines three choices, all built from the functions of
``fltrust_core.scoring`` and ``fltrust_core.aggregation``:

- the reference of the round: the coordinate-wise median of the deltas, or a
  delta that the coordinator trains itself on a small clean calibration set
  (the "root" update of FLTrust, Cao et al., NDSS 2021);
- how an update's direction weighs: in proportion to its cosine with the
  reference with negative cosines at 0 (FLTrust), or 1 for a positive cosine
  and 0 otherwise (a gate). Deltas are clipped to the reference norm
  (FLTrust) or to twice the median norm;
- what feeds the node's integrity trust signal: the FLTrust cosine score
  itself, or the consistency of the node's update with its own earlier ones
  (``score_updates``'s evidence).

"core v0" is the rule the core had before this benchmark: the ``integrity``
score against the median as both the trust evidence and the weight, no
clipping. Every candidate multiplies its weights by the trust weight from
``NodeTrust.aggregation_weight`` and quarantines through the same
``NodeTrust`` as the coordinator. Candidates run in shadow mode: they
aggregate the same updates as every other method, and their model is not
sent back to the nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from fltrust_core.aggregation import aggregate_kind, fedavg, integrity, merge_centroids, merge_stats
from fltrust_core.model import KindModel
from fltrust_core.scoring import (
    UpdateBaseline,
    learn_baseline,
    relapsed,
    score_updates,
    typical_data,
    update_digest,
    update_parts,
)
from fltrust_core.trust import NodeTrust, TrustConfig, TrustStatus


@dataclass(frozen=True)
class Candidate:
    """One combination of reference, weighting and trust evidence."""

    name: str
    reference: str  # "median", "root", or "integrity" for core v0
    proportional: bool = True
    clip_ratio: float | None = None
    evidence: str = "consistency"  # or "cosine", "integrity"
    gate: bool = True  # False weighs every update 1, whatever its direction
    # True rescales long deltas to the clip length, as FLTrust does; False
    # scales their weights instead, as the core does.
    rescale: bool = True


CHOSEN = "median gate + clip 2x, consistency trust"
CANDIDATES = (
    Candidate("core v0 (integrity)", "integrity", evidence="integrity"),
    Candidate("FLTrust: root cos + clip, cos trust", "root", evidence="cosine"),
    Candidate("median cos + clip, cos trust", "median", evidence="cosine"),
    Candidate("root cos + clip, consistency trust", "root"),
    Candidate("median cos + clip, consistency trust", "median"),
    Candidate(CHOSEN, "median", proportional=False, clip_ratio=2.0, rescale=False),
    Candidate("clip 2x only, consistency trust", "median", False, 2.0, gate=False, rescale=False),
)


@dataclass
class NodeState:
    """State that a candidate keeps of one node: its trust and its update baselines."""

    trust: NodeTrust
    baselines: dict[str, UpdateBaseline] = field(default_factory=dict)


class CandidateCoordinator:
    """Runs one candidate over the rounds of a benchmark run: scores, trust and aggregates."""

    def __init__(self, candidate: Candidate, config: TrustConfig, n_clusters: int) -> None:
        """Start with no nodes and no model."""
        self.candidate = candidate
        self.config = config
        self.n_clusters = n_clusters
        self.nodes: dict[str, NodeState] = {}
        self.models: dict[str, KindModel] = {}
        # node id -> [(round, score, status)]
        self.history: dict[str, list[tuple[int, float, str]]] = {}
        # node id -> [(round, deviation from its own history, distance from the
        # round's median, distance from the others' mean, reason of low evidence)]
        self.deviations: dict[str, list[tuple[int, float, float, float, str]]] = {}
        # kind -> fingerprint -> candidate rounds in which it arrived
        self.digests: dict[str, dict[str, set[int]]] = {}
        self.version = 0

    def state(self, node_id: str) -> NodeState:
        """Return the state of ``node_id``, creating it at the initial score."""
        if node_id not in self.nodes:
            self.nodes[node_id] = NodeState(NodeTrust(score=self.config.initial_score))
        return self.nodes[node_id]

    def run_round(
        self,
        round_number: int,
        base: dict[str, KindModel | None],
        updates: dict[str, dict[str, KindModel]],
        roots: dict[str, KindModel],
        now: float,
    ) -> None:
        """Score, weigh and aggregate one round.

        Parameters:
            round_number: the round, for the trust history.
            base: kind -> the global model the updates were trained from.
            updates: kind -> node id -> update.
            roots: kind -> the coordinator's own update on calibration data.
            now: the round's time, for decaying security events.
        """
        evidence_by_node: dict[str, float] = {}
        factors: dict[str, dict[str, tuple[float, ...]]] = {}
        for kind, by_node in sorted(updates.items()):
            senders = sorted(
                n for n in by_node if self.state(n).trust.status != TrustStatus.QUARANTINED
            )
            if not senders:
                continue
            scored = self._score_kind(
                round_number, kind, base.get(kind), by_node, senders, roots.get(kind)
            )
            factors[kind] = {}
            for node_id, (evidence, *kind_factors) in scored.items():
                evidence_by_node[node_id] = min(evidence_by_node.get(node_id, 1.0), evidence)
                factors[kind][node_id] = tuple(kind_factors)

        for node_id, evidence in evidence_by_node.items():
            self.state(node_id).trust.observe_integrity(evidence)
        for node_id, state in self.nodes.items():
            change = state.trust.close_round(node_id, round_number, now, self.config)
            self.history.setdefault(node_id, []).append(
                (round_number, change.score, change.status.value)
            )

        for kind, by_factor in factors.items():
            senders = sorted(by_factor)
            weights = np.array(
                [self.nodes[n].trust.aggregation_weight(True) * by_factor[n][0] for n in senders]
            )
            if not weights.sum() > 0:
                continue
            stats_weights = np.array(
                [self.nodes[n].trust.aggregation_weight(True) * by_factor[n][3] for n in senders]
            )
            clips = np.array([by_factor[n][1] for n in senders])
            center_clips = np.array([by_factor[n][2] for n in senders])
            models = [updates[kind][n] for n in senders]
            if self.candidate.rescale:
                self.models[kind] = aggregate_rescaled(
                    models,
                    weights,
                    clips,
                    center_clips,
                    stats_weights,
                    self.n_clusters,
                    base.get(kind),
                )
            elif (weights * clips).sum() > 0:
                self.models[kind] = aggregate_kind(
                    models,
                    weights * clips,
                    self.n_clusters,
                    base.get(kind),
                    center_weights=weights * center_clips,
                    stats_weights=stats_weights,
                )
        self.version += 1

    def _score_kind(
        self,
        round_number: int,
        kind: str,
        base: KindModel | None,
        by_node: dict[str, KindModel],
        senders: list[str],
        root: KindModel | None,
    ) -> dict[str, tuple[float, float, float, float, float]]:
        """Return node id -> (evidence, weight, SVM clip, centroid clip, statistics weight)."""
        candidate = self.candidate
        models = [by_node[n] for n in senders]
        parts = [update_parts(m, base) for m in models]
        if candidate.reference == "integrity":
            scores = [s.score for s in integrity(np.vstack([p[0] for p in parts]))]
            return {n: (s, s, 1.0, 1.0, s) for n, s in zip(senders, scores, strict=True)}

        digests = [update_digest(m) for m in models]
        seen = self.digests.setdefault(kind, {})
        repeated = [bool(seen.get(d, set()) - {self.version}) for d in digests]
        baselines = [self.state(n).baselines.get(kind) for n in senders]
        reference = None
        if candidate.reference == "root" and root is not None:
            reference = update_parts(root, base)
        # ``by_node`` lists the updates in the order the coordinator received them.
        arrival = {node_id: rank for rank, node_id in enumerate(by_node)}
        results = score_updates(
            parts,
            baselines,
            repeated,
            typical=typical_data([m.stats for m in models], None if base is None else base.stats),
            reference=reference,
            proportional=candidate.proportional,
            clip_ratio=candidate.clip_ratio,
            arrival=[arrival[n] for n in senders],
        )
        scored = {}
        for i, node_id in enumerate(senders):
            result = results[i]
            self.deviations.setdefault(node_id, []).append(
                (
                    round_number,
                    result.deviation,
                    result.distance_ratio,
                    result.mimic_ratio,
                    result.reason,
                )
            )
            if candidate.evidence != "cosine" and relapsed(baselines[i], result):
                self.state(node_id).trust.relapsed = True
            learned = learn_baseline(baselines[i], parts[i], result)
            if learned is None:
                self.state(node_id).baselines.pop(kind, None)
            else:
                self.state(node_id).baselines[kind] = learned
            seen.setdefault(digests[i], set()).add(self.version)
            weight = result.weight if candidate.gate else 1.0
            if candidate.evidence == "cosine":
                evidence = max(result.cosine, 0.0)
                factor = weight
            else:
                evidence = result.evidence
                factor = weight * evidence
            # Statistics are merged with the trust evidence, without the direction
            # weight, which may flip between rounds, but never from atypical data.
            stats_factor = (evidence if candidate.evidence != "cosine" else 1.0) * result.typical
            scored[node_id] = (evidence, factor, result.clip, result.center_clip, stats_factor)
        return scored


def aggregate_rescaled(
    updates: list[KindModel],
    weights: np.ndarray,
    clips: np.ndarray,
    center_clips: np.ndarray,
    stats_weights: np.ndarray,
    n_clusters: int,
    previous: KindModel | None,
) -> KindModel:
    """Aggregate as FLTrust does: rescale each delta by its clip factor, then average.

    The SVM part is ``previous + sum(w * c * delta) / sum(w)``; each node's
    centroids move ``c`` of the way from the previous centroids before they are
    merged.
    """
    base = np.zeros_like(updates[0].svm_vector()) if previous is None else previous.svm_vector()
    deltas = np.vstack([u.svm_vector() for u in updates]) - base
    samples = np.array([u.n_samples for u in updates], dtype=float)
    svm = base + fedavg(deltas * clips[:, None], samples * weights)
    if previous is None:
        centers = [u.centers for u in updates]
    else:
        centers = [
            previous.centers + clip * (u.centers - previous.centers)
            for u, clip in zip(updates, center_clips, strict=True)
        ]
    merged, counts = merge_centroids(
        centers,
        [u.counts for u in updates],
        weights,
        n_clusters,
        init=None if previous is None else previous.centers,
    )
    if not stats_weights.sum() > 0:
        stats_weights = weights
    return KindModel(
        stats=merge_stats([u.stats for u in updates], stats_weights),
        svm_coef=svm[:-1],
        svm_offset=float(svm[-1]),
        centers=merged,
        counts=counts,
        n_samples=int(samples.sum()),
    )
