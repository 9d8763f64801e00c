"""Invariants of the robust, trust-weighted aggregation and of the consistency evidence."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from fltrust_core import attacks, protocol
from fltrust_core.aggregation import aggregate_kind
from fltrust_core.federation import Federation
from fltrust_core.model import FeatureStats, KindModel
from fltrust_core.scoring import (
    CLIP_RATIO,
    DEVIATION_TOLERATED,
    DOUBTFUL_EVIDENCE,
    LENGTH_EXPONENT,
    MIMIC_MIN_SENDERS,
    MIMIC_MOVE,
    MIMIC_MOVE_ON_PROBATION,
    MIMIC_RATIO,
    PROBATION_ROUNDS,
    PROBATION_TOLERATED,
    UpdateBaseline,
    UpdateScore,
    learn_baseline,
    lower_median,
    mimic_ratios,
    model_key,
    near_duplicates,
    relapsed,
    score_updates,
    typical_data,
    update_digest,
    update_parts,
)
from fltrust_core.trust import NodeTrust, TrustConfig, TrustStatus

from .conftest import PARAMS, PREFIX, NodeSimulator

N_COEF = 8


def make_model(coef: np.ndarray, centers: np.ndarray, data: np.ndarray) -> KindModel:
    """Return a two-feature model with the given SVM weights, centroids and data statistics."""
    return KindModel(
        stats=FeatureStats.from_samples(data),
        svm_coef=np.asarray(coef[:-1], dtype=float),
        svm_offset=float(coef[-1]),
        centers=np.asarray(centers, dtype=float),
        counts=np.full(len(centers), data.shape[0] / len(centers)),
        n_samples=data.shape[0],
    )


def honest_round(
    rng: np.random.Generator, base: KindModel, n_nodes: int, directions: np.ndarray
) -> list[KindModel]:
    """Return one round of honest updates: each node's own direction plus a little noise."""
    updates = []
    for node in range(n_nodes):
        coef = base.svm_vector() + directions[node] + 0.02 * rng.normal(size=N_COEF + 1)
        centers = base.centers + 0.1 * directions[node][:4].reshape(2, 2)
        data = rng.normal(loc=node * 0.1, size=(200, 2))
        updates.append(make_model(coef, centers, data))
    return updates


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def base(rng: np.random.Generator) -> KindModel:
    return make_model(
        rng.normal(size=N_COEF + 1), rng.normal(size=(2, 2)), rng.normal(size=(500, 2))
    )


@pytest.fixture
def directions(rng: np.random.Generator) -> np.ndarray:
    shared = np.ones(N_COEF + 1) * 0.3
    return shared + 0.1 * rng.normal(size=(8, N_COEF + 1))


def score(updates: list[KindModel], base: KindModel, baselines=None, repeated=None):
    parts = [update_parts(u, base) for u in updates]
    n_updates = len(updates)
    return score_updates(
        parts,
        baselines or [None] * n_updates,
        repeated or [False] * n_updates,
        typical=typical_data([u.stats for u in updates], base.stats),
    )


def aggregate(updates: list[KindModel], base: KindModel, scores) -> KindModel:
    weights = np.array([s.weight * s.evidence for s in scores])
    return aggregate_kind(
        updates,
        weights * np.array([s.clip for s in scores]),
        2,
        base,
        center_weights=weights * np.array([s.center_clip for s in scores]),
    )


def test_aggregation_permutation_invariant(rng, base, directions) -> None:
    updates = honest_round(rng, base, 6, directions)
    updates[5] = replace(updates[5], svm_coef=updates[5].svm_coef * 30)
    order = [3, 0, 5, 1, 4, 2]
    scores = score(updates, base)
    permuted = score([updates[i] for i in order], base)
    for position, index in enumerate(order):
        got, expected = permuted[position], scores[index]
        assert (got.weight, got.clip, got.center_clip, got.evidence, got.typical) == (
            expected.weight,
            expected.clip,
            expected.center_clip,
            expected.evidence,
            expected.typical,
        )
        assert got.cosine == pytest.approx(expected.cosine)
    merged = aggregate(updates, base, scores)
    merged_permuted = aggregate([updates[i] for i in order], base, permuted)
    np.testing.assert_allclose(merged.svm_vector(), merged_permuted.svm_vector())
    np.testing.assert_allclose(
        np.sort(merged.centers, axis=0), np.sort(merged_permuted.centers, axis=0)
    )
    np.testing.assert_allclose(merged.stats.mean, merged_permuted.stats.mean)


def test_single_honest_node_is_taken_as_is(rng, base, directions) -> None:
    [update] = honest_round(rng, base, 1, directions)
    [result] = score([update], base)
    assert (result.weight, result.clip, result.center_clip, result.evidence) == (1.0, 1.0, 1.0, 1.0)
    merged = aggregate([update], base, [result])
    np.testing.assert_allclose(merged.svm_vector(), update.svm_vector())
    np.testing.assert_allclose(merged.stats.mean, update.stats.mean)


def test_identical_updates_aggregate_to_themselves(rng, base, directions) -> None:
    [update] = honest_round(rng, base, 1, directions)
    updates = [update] * 5
    scores = score(updates, base)
    assert all(s.evidence == 1.0 and s.weight == 1.0 and s.clip == 1.0 for s in scores)
    merged = aggregate(updates, base, scores)
    np.testing.assert_allclose(merged.svm_vector(), update.svm_vector())
    np.testing.assert_allclose(merged.centers, update.centers)


def test_huge_norm_is_clipped(rng, base, directions) -> None:
    updates = honest_round(rng, base, 6, directions)
    honest = aggregate(updates, base, score(updates, base))
    huge = replace(updates[0], svm_coef=base.svm_coef + 1e6 * (updates[0].svm_coef - base.svm_coef))
    scores = score([huge, *updates[1:]], base)
    assert scores[0].norm_ratio > 1e5
    assert scores[0].clip == pytest.approx(CLIP_RATIO / scores[0].norm_ratio, rel=1e-6)
    assert all(s.clip == 1.0 for s in scores[1:])

    merged = aggregate([huge, *updates[1:]], base, scores)

    norms = [np.linalg.norm(u.svm_vector() - base.svm_vector()) for u in updates[1:]]
    change = np.linalg.norm(merged.svm_vector() - base.svm_vector())
    assert change <= CLIP_RATIO * max(norms)
    assert np.linalg.norm(merged.svm_vector() - honest.svm_vector()) < min(norms)


def open_round(federation: Federation, now: float, n_nodes: int) -> list[NodeSimulator]:
    """Announce ``n_nodes`` nodes by heartbeat, open a round and return the nodes."""
    nodes = [NodeSimulator(f"node-{i}") for i in range(n_nodes)]
    for node in nodes:
        federation.handle_message(*node.heartbeat(now), now)
    federation.start_round(now)
    return nodes


def test_copy_of_an_earlier_update_counts_once(federation: Federation, now: float) -> None:
    nodes = open_round(federation, now, 5)
    rng = np.random.default_rng(1)
    models = [
        make_model(
            1.0 + 0.05 * rng.normal(size=PARAMS.rff_components + 1),
            np.array([[-0.5], [0.5]]),
            rng.normal(size=(50, 1)),
        )
        for _ in range(4)
    ]
    for node, model in zip(nodes, models, strict=False):
        federation.handle_message(*node.update(1, model, now), now)
    # node-4 read node-2's update off the broker and sends it as its own.
    federation.handle_message(*nodes[4].update(1, models[2], now), now)

    outcome = federation.close_round(now + 1)

    model = next(json.loads(p.payload)["body"] for p in outcome.publishes if p.retain)
    assert federation.nodes["node-2"].last_integrity == 1.0
    assert model["contributors"]["node-2"] > 0.0
    # Without a history of its own, the copy may come from a second node on the
    # same device, so it weighs nothing but costs nothing either.
    assert federation.nodes["node-4"].last_integrity == 1.0
    assert model["contributors"].get("node-4", 0.0) == 0.0
    [completed] = [e for e in outcome.events if e.kind == "round_completed"]
    assert (
        "near-identical to an update that arrived earlier"
        in (completed.data["dropped_reasons"]["node-4"])
    )


def test_nan_update_rejected_before_aggregation(federation: Federation, now: float) -> None:
    nodes = open_round(federation, now, 4)
    rng = np.random.default_rng(1)
    for node in nodes[:3]:
        model = make_model(
            1.0 + 0.05 * rng.normal(size=PARAMS.rff_components + 1),
            np.array([[-0.5], [0.5]]),
            rng.normal(size=(50, 1)),
        )
        assert not federation.handle_message(*node.update(1, model, now), now).events
    poisoned = protocol.update_body(
        protocol.ModelUpdate(
            1,
            0,
            {
                "temperature": make_model(
                    np.ones(PARAMS.rff_components + 1), np.array([[-0.5], [0.5]]), np.ones((50, 1))
                )
            },
        )
    )
    poisoned["kinds"]["temperature"]["svm"]["coef"][0] = float("nan")
    envelope = nodes[3].envelope("update", poisoned, now)
    outcome = federation.handle_message(
        protocol.node_topic(PREFIX, "node-3", "update"), json.dumps(envelope).encode(), now
    )
    assert outcome.events[0].data["reason"] == "non_finite"
    assert "node-3" not in federation.updates

    federation.close_round(now + 1)

    assert federation.model.version == 1
    assert set(federation.model.contributors) == {"node-0", "node-1", "node-2"}
    assert np.isfinite(federation.model.kinds["temperature"].svm_vector()).all()


def test_opposed_update_weighs_nothing(rng, base, directions) -> None:
    updates = honest_round(rng, base, 6, directions)
    flipped = replace(
        updates[0], svm_coef=base.svm_coef - 4 * (updates[0].svm_coef - base.svm_coef)
    )
    scores = score([flipped, *updates[1:]], base)
    assert scores[0].cosine < 0
    assert scores[0].weight == 0.0
    assert all(s.weight == 1.0 for s in scores[1:])


def test_atypical_data_weighs_nothing(rng, base, directions) -> None:
    updates = honest_round(rng, base, 6, directions)
    far = replace(updates[0], stats=FeatureStats.from_samples(rng.normal(loc=90.0, size=(200, 2))))
    updates = [far, *updates[1:]]
    mask = typical_data([u.stats for u in updates], base.stats)
    np.testing.assert_array_equal(mask, [False, True, True, True, True, True])
    scores = score(updates, base)
    assert not scores[0].typical
    assert scores[0].weight == 0.0
    assert scores[0].evidence == 1.0


def test_typical_data_first_round_uses_senders() -> None:
    rng = np.random.default_rng(2)
    stats = [FeatureStats.from_samples(rng.normal(loc=i * 0.2, size=(100, 3))) for i in range(5)]
    stats.append(FeatureStats.from_samples(rng.normal(loc=500.0, size=(100, 3))))
    np.testing.assert_array_equal(typical_data(stats), [True] * 5 + [False])
    assert typical_data(stats[:2]).all()


def score_and_learn(updates: list[KindModel], base: KindModel, baselines: list):
    """Score one round of ``updates`` and return the scores and the senders' next baselines."""
    parts = [update_parts(u, base) for u in updates]
    results = score_updates(
        parts,
        baselines,
        [False] * len(updates),
        typical=typical_data([u.stats for u in updates], base.stats),
    )
    baselines = [learn_baseline(b, p, s) for b, p, s in zip(baselines, parts, results, strict=True)]
    return results, baselines


def run_history(rng, base, directions, rounds: int, change=None):
    """Score ``rounds`` rounds of honest updates; ``change`` alters node 0's last update."""
    baselines = [None] * 6
    results = []
    for round_number in range(rounds):
        updates = honest_round(rng, base, 6, directions)
        if change is not None and round_number == rounds - 1:
            updates[0] = change(updates[0])
        results, baselines = score_and_learn(updates, base, baselines)
    return results


def test_consistent_nodes_keep_evidence(rng, base, directions) -> None:
    results = run_history(rng, base, directions, rounds=6)
    assert all(s.evidence == 1.0 for s in results)
    assert all(s.deviation < 3.0 for s in results)


def run_elsewhere_history(rng, base, rounds: int, change=None):
    """Score rounds in which node 0's data lies far from the others'; return each round's scores.

    ``change`` alters node 0's update in the last round.
    """
    directions = np.tile(np.ones(N_COEF + 1) * 0.3, (8, 1))
    directions[0] = -directions[0]
    baselines = [None] * 6
    history = []
    for round_number in range(rounds):
        updates = honest_round(rng, base, 6, directions)
        updates[0] = replace(
            updates[0], stats=FeatureStats.from_samples(rng.normal(loc=60.0, size=(200, 2)))
        )
        if change is not None and round_number == rounds - 1:
            updates[0] = change(updates[0])
        results, baselines = score_and_learn(updates, base, baselines)
        history.append(results)
    return history


def test_merely_different_node_keeps_evidence(rng, base) -> None:
    for results in run_elsewhere_history(rng, base, rounds=6):
        assert not results[0].typical
        assert results[0].weight == 0.0
        assert results[0].evidence == 1.0


def test_atypical_node_that_turns_loses_evidence(rng, base) -> None:
    def flip(update: KindModel) -> KindModel:
        return replace(update, svm_coef=base.svm_coef - 4 * (update.svm_coef - base.svm_coef))

    *before, last = run_elsewhere_history(rng, base, rounds=7, change=flip)

    assert all(results[0].evidence == 1.0 for results in before)
    assert not last[0].typical
    assert last[0].weight == 0.0
    assert last[0].deviation > 6.0
    assert last[0].evidence == 0.0
    assert all(s.evidence == 1.0 for s in last[1:])


def run_long_atypical(rng, base, rounds: int, last=None):
    """Score rounds in which node 0's deltas are five times longer, and vary five times more.

    ``last`` alters node 0's update in the last round. Returns the last round's scores.
    """
    directions = np.tile(np.ones(N_COEF + 1) * 0.3, (8, 1))
    baselines = [None] * 6
    for round_number in range(rounds):
        updates = honest_round(rng, base, 6, directions)
        delta = 5 * (directions[0] + 0.1 * rng.normal(size=N_COEF + 1))
        updates[0] = replace(
            updates[0],
            svm_coef=base.svm_coef + delta[:-1],
            svm_offset=base.svm_offset + delta[-1],
            stats=FeatureStats.from_samples(rng.normal(loc=60.0, size=(200, 2))),
        )
        if last is not None and round_number == rounds - 1:
            updates[0] = last(updates[0])
        parts = [update_parts(u, base) for u in updates]
        results = score_updates(
            parts,
            baselines,
            [False] * 6,
            typical=typical_data([u.stats for u in updates], base.stats),
        )
        assert not results[0].typical
        if last is None or round_number < rounds - 1:
            assert results[0].evidence == 1.0
        baselines = [
            learn_baseline(b, p, s) for b, p, s in zip(baselines, parts, results, strict=True)
        ]
    return results


def test_atypical_long_deltas_keep_evidence(rng, base) -> None:
    results = run_long_atypical(rng, base, rounds=8)

    assert results[0].evidence == 1.0


def test_atypical_boosted_update_loses_evidence(rng, base) -> None:
    def boost(update: KindModel) -> KindModel:
        return replace(
            update,
            svm_coef=base.svm_coef + 2 * (update.svm_coef - base.svm_coef),
            svm_offset=base.svm_offset + 2 * (update.svm_offset - base.svm_offset),
        )

    results = run_long_atypical(rng, base, rounds=8, last=boost)

    assert results[0].evidence < DOUBTFUL_EVIDENCE


def long_delta_history(rng, base, directions, rounds: int) -> tuple[list[KindModel], list]:
    """Score ``rounds`` rounds in which node 0's deltas are four times longer than the others'.

    Node 0's data stays typical. Returns the next round's updates and the senders' baselines.
    """
    directions = directions.copy()
    directions[0] *= 4.0
    baselines = [None] * 6
    for _ in range(rounds):
        _, baselines = score_and_learn(honest_round(rng, base, 6, directions), base, baselines)
    return honest_round(rng, base, 6, directions), baselines


def test_long_deltas_tolerate_more_change(rng, base, directions) -> None:
    updates, baselines = long_delta_history(rng, base, directions, rounds=6)
    step = 0.25 * rng.normal(size=N_COEF)
    moved = [replace(u, svm_coef=u.svm_coef + step) if i < 2 else u for i, u in enumerate(updates)]
    results = score(moved, base, baselines)

    assert all(s.typical for s in results)
    # The same change counts half as much for the sender whose deltas are four
    # times longer than the round's median.
    assert results[0].deviation == pytest.approx(
        results[1].deviation * 4.0**-LENGTH_EXPONENT, rel=0.2
    )
    assert results[0].evidence == 1.0
    assert results[1].evidence < 1.0


def test_boosted_update_gains_no_tolerance(rng, base, directions) -> None:
    updates, baselines = long_delta_history(rng, base, directions, rounds=6)
    boosted = replace(
        updates[1],
        svm_coef=base.svm_coef + 4.0 * (updates[1].svm_coef - base.svm_coef),
        svm_offset=base.svm_offset + 4.0 * (updates[1].svm_offset - base.svm_offset),
    )
    results = score([updates[0], boosted, *updates[2:]], base, baselines)

    assert results[0].evidence == 1.0
    assert results[1].evidence == 0.0


def test_probation_senders_excluded_from_usual_distance() -> None:
    # Each sender moves along an axis of its own, so that no move is shared.
    honest = [0.03, 0.04, 0.04, 0.05]
    attackers = [0.09] * 4
    sizes = honest + attackers
    deltas = [size * np.eye(len(sizes))[i] for i, size in enumerate(sizes)]
    parts = [[delta] for delta in deltas]
    zero = np.zeros(len(sizes))
    baselines = [
        UpdateBaseline((zero,), (1e-6,), PROBATION_ROUNDS if i >= len(honest) else 0)
        for i in range(len(sizes))
    ]

    results = score_updates(parts, baselines, [False] * len(sizes))

    # Counted in, the attackers would lift the usual distance to the largest
    # honest one, 0.05, and their 0.09 would stay within the probation's 2.
    assert all(r.evidence == 1.0 for r in results[: len(honest)])
    assert all(r.deviation > PROBATION_TOLERATED for r in results[len(honest) :])
    assert all(r.evidence == 0.0 for r in results[len(honest) :])


def _strayed(
    updates: list[KindModel], base: KindModel, step: np.ndarray, size: float
) -> list[list[np.ndarray]]:
    """Return the parts of ``updates`` with the first SVM delta moved by ``size`` times ``step``."""
    moved = replace(updates[0], svm_coef=updates[0].svm_coef + size * step[:N_COEF])
    return [update_parts(u, base) for u in [moved, *updates[1:]]]


def test_probation_after_an_inconsistent_update(rng, base, directions) -> None:
    baselines = [None] * 6
    for _ in range(5):
        updates = honest_round(rng, base, 6, directions)
        parts = [update_parts(u, base) for u in updates]
        results = score_updates(parts, baselines, [False] * 6)
        baselines = [
            learn_baseline(b, p, s) for b, p, s in zip(baselines, parts, results, strict=True)
        ]
    updates = honest_round(rng, base, 6, directions)
    step = rng.normal(size=N_COEF + 1)

    # An update that strays a little, between the two tolerances.
    size = next(
        size
        for size in np.linspace(0.0, 0.5, 101)
        if PROBATION_TOLERATED
        < score_updates(_strayed(updates, base, step, size), baselines, [False] * 6)[0].deviation
        < DEVIATION_TOLERATED
    )
    parts = _strayed(updates, base, step, size)
    assert score_updates(parts, baselines, [False] * 6)[0].evidence == 1.0

    on_probation = [replace(baselines[0], probation=PROBATION_ROUNDS), *baselines[1:]]
    result = score_updates(parts, on_probation, [False] * 6)[0]
    assert result.evidence == 0.0
    assert "probation" in result.reason

    # A consistent update shortens the probation; an inconsistent one restarts it.
    honest = [update_parts(u, base) for u in updates]
    consistent = score_updates(honest, on_probation, [False] * 6)[0]
    assert consistent.evidence == 1.0
    assert learn_baseline(on_probation[0], honest[0], consistent).probation == PROBATION_ROUNDS - 1
    assert learn_baseline(baselines[0], parts[0], result).probation == PROBATION_ROUNDS


def test_stray_within_tolerance_starts_watch(rng, base, directions) -> None:
    baselines, updates = round_after_history(rng, base, directions)
    step = rng.normal(size=N_COEF)

    def first_between(low: float, high: float) -> list[list[np.ndarray]]:
        return next(
            parts
            for parts in (
                _strayed(updates, base, step, size) for size in np.linspace(0.0, 1.0, 401)
            )
            if low < score_updates(parts, baselines, [False] * 8)[0].deviation < high
        )

    # A stray beyond the probation's tolerance keeps its evidence and starts a watch.
    small = first_between(PROBATION_TOLERATED, DEVIATION_TOLERATED)
    first = score_updates(small, baselines, [False] * 8)[0]
    watched = learn_baseline(baselines[0], small[0], first)
    assert first.evidence == 1.0
    assert watched.watch == PROBATION_ROUNDS
    assert watched.probation == 0

    # Under watch, a stray beyond the tolerance loses all evidence and relapses.
    # Without the watch it would keep most of it.
    large = first_between(DEVIATION_TOLERATED, DEVIATION_TOLERATED + 0.5)
    on_watch = replace(baselines[0], watch=PROBATION_ROUNDS)
    unwatched = score_updates(large, baselines, [False] * 8)[0]
    second = score_updates(large, [on_watch, *baselines[1:]], [False] * 8)[0]
    assert unwatched.evidence > DOUBTFUL_EVIDENCE
    assert not relapsed(baselines[0], unwatched)
    assert second.evidence == 0.0
    assert "soon after another update that strayed" in second.reason
    assert relapsed(on_watch, second)

    # Consistent updates end the watch.
    honest = [update_parts(u, base) for u in updates]
    for _ in range(PROBATION_ROUNDS):
        consistent = score_updates(honest, [on_watch, *baselines[1:]], [False] * 8)[0]
        assert consistent.evidence == 1.0
        on_watch = learn_baseline(on_watch, honest[0], consistent)
    assert on_watch.watch == 0


def test_any_lost_evidence_starts_probation(rng, base, directions) -> None:
    baselines, updates = round_after_history(rng, base, directions)
    step = rng.normal(size=N_COEF)

    # An update that keeps most, but not all, of its evidence.
    parts = next(
        parts
        for parts in (_strayed(updates, base, step, size) for size in np.linspace(0.0, 1.0, 201))
        if DOUBTFUL_EVIDENCE < score_updates(parts, baselines, [False] * 8)[0].evidence < 1.0
    )
    result = score_updates(parts, baselines, [False] * 8)[0]

    assert learn_baseline(baselines[0], parts[0], result).probation == PROBATION_ROUNDS


def test_updates_without_evidence_do_not_move_the_reference(rng, base, directions) -> None:
    honest = honest_round(rng, base, 6, directions)
    noise = rng.normal(size=(3, N_COEF))

    def with_far(size: float) -> list[UpdateScore]:
        far = [
            replace(u, svm_coef=base.svm_coef + size * n)
            for u, n in zip(honest[:3], noise, strict=True)
        ]
        return score([*far, *honest], base)

    near, farther = with_far(80.0), with_far(800.0)

    assert all(s.evidence == 0.0 for s in near[:3] + farther[:3])
    for a, b in zip(near[3:], farther[3:], strict=True):
        assert a.cosine == pytest.approx(b.cosine)
        assert a.clip == pytest.approx(b.clip)
        assert a.weight == b.weight == 1.0


def test_dropped_honest_update_gives_attackers_no_weight() -> None:
    # Four honest senders and three that send the opposite of the shared
    # direction from their first update on, so their history never betrays them.
    rng = np.random.default_rng(2)
    base = make_model(
        rng.normal(size=N_COEF + 1), rng.normal(size=(2, 2)), rng.normal(size=(500, 2))
    )
    directions = [0.3 + 0.1 * rng.normal(size=N_COEF + 1) for _ in range(4)]
    directions += [np.full(N_COEF + 1, -0.3)] * 3
    baselines = [None] * 7
    for round_number in range(6):
        updates = []
        for node, direction in enumerate(directions):
            coef = base.svm_vector() + direction + 0.05 * rng.normal(size=N_COEF + 1)
            # In the last round honest node 0's data moves, so it loses its evidence.
            loc = 0.1 * node + (3.0 if node == 0 and round_number == 5 else 0.0)
            centers = base.centers + 0.1 * direction[:4].reshape(2, 2)
            updates.append(make_model(coef, centers, rng.normal(loc=loc, size=(200, 2))))
        results, baselines = score_and_learn(updates, base, baselines)

    assert results[0].evidence == 0.0
    assert all(s.evidence == 1.0 for s in results[4:])
    assert all(s.weight == 0.0 for s in results[4:])


def test_given_reference_is_kept_when_updates_lose_evidence(rng, base) -> None:
    directions = np.ones((9, N_COEF + 1)) * 0.3 + 0.1 * rng.normal(size=(9, N_COEF + 1))
    reference = [rng.normal(size=N_COEF + 1), np.ones(4)]
    baselines = [None] * 9
    for _ in range(3):
        parts = [update_parts(u, base) for u in honest_round(rng, base, 9, directions)]
        results = score_updates(parts, baselines, [False] * 9, reference=reference)
        baselines = [
            learn_baseline(b, p, s) for b, p, s in zip(baselines, parts, results, strict=True)
        ]
    updates = honest_round(rng, base, 9, directions)
    updates[:3] = [
        replace(u, svm_coef=u.svm_coef + 5 * rng.normal(size=N_COEF)) for u in updates[:3]
    ]
    parts = [update_parts(u, base) for u in updates]

    results = score_updates(parts, baselines, [False] * 9, reference=reference)

    assert all(s.evidence == 0.0 for s in results[:3])
    svm = np.vstack([p[0] for p in parts])
    norms = np.linalg.norm(svm, axis=1)
    expected = svm @ reference[0] / (norms * np.linalg.norm(reference[0]))
    np.testing.assert_allclose([s.cosine for s in results], expected)
    np.testing.assert_allclose(
        [s.norm_ratio for s in results], norms / np.linalg.norm(reference[0])
    )


def test_far_update_loses_evidence_without_history(rng, base, directions) -> None:
    updates = honest_round(rng, base, 6, directions)
    updates[0] = replace(
        updates[0], svm_coef=base.svm_coef - 50 * (updates[0].svm_coef - base.svm_coef)
    )
    scores = score(updates, base)
    assert np.isnan(scores[0].deviation)
    assert scores[0].distance_ratio > 25
    assert scores[0].evidence == 0.0
    assert "further from the round's median" in scores[0].reason
    assert all(s.evidence == 1.0 for s in scores[1:])


def test_twin_updates_leave_a_third_trusted(rng, base, directions) -> None:
    # Two nodes that watch the same device send the same delta, so the median
    # distance to the round's median is 0 with three senders.
    updates = honest_round(rng, base, 2, directions)
    twin = replace(updates[0], svm_coef=updates[0].svm_coef + 1e-9)
    scores = score([updates[0], twin, updates[1]], base)

    assert scores[2].distance_ratio < 25
    assert scores[2].evidence == 1.0


def round_after_history(rng, base, directions):
    """Return 8 senders' baselines after 5 honest rounds, and their honest updates of the next."""
    baselines = [None] * 8
    for _ in range(5):
        _, baselines = score_and_learn(honest_round(rng, base, 8, directions), base, baselines)
    return baselines, honest_round(rng, base, 8, directions)


def mean_of_others(updates: list[KindModel]) -> KindModel:
    """Return node 0's update as "a little is enough": the others' mean, shifted a little."""
    vectors = [u.svm_vector() for u in updates[1:]]
    lie = np.mean(vectors, axis=0) + 0.05 * np.std(vectors, axis=0)
    return replace(updates[0], svm_coef=lie[:-1], svm_offset=float(lie[-1]))


def test_mean_of_others_loses_evidence(rng, base, directions) -> None:
    baselines, updates = round_after_history(rng, base, directions)
    updates[0] = mean_of_others(updates)

    scores, _ = score_and_learn(updates, base, baselines)

    assert scores[0].mimic_ratio < MIMIC_RATIO
    assert scores[0].deviation > MIMIC_MOVE
    assert scores[0].evidence == 0.0
    assert "mean of the other updates" in scores[0].reason
    assert all(s.mimic_ratio > 0.5 for s in scores[1:])
    assert all(s.evidence == 1.0 for s in scores[1:])


def test_framed_update_keeps_evidence(rng, base, directions) -> None:
    baselines, updates = round_after_history(rng, base, directions)
    # Colluders 6 and 7 send whatever puts the mean of the others on node 0's update.
    deltas = [u.svm_vector() - base.svm_vector() for u in updates]
    colluders = attacks.frame(np.array(deltas[1:6]), deltas[0], 2, random_state=0)
    for index, delta in zip((6, 7), colluders, strict=True):
        vector = base.svm_vector() + delta
        updates[index] = replace(updates[index], svm_coef=vector[:-1], svm_offset=float(vector[-1]))

    # Colluders that framed from their first update have a history of such updates.
    baselines[6] = baselines[7] = None

    scores, _ = score_and_learn(updates, base, baselines)

    assert scores[0].mimic_ratio < MIMIC_RATIO
    assert scores[0].deviation < MIMIC_MOVE
    assert scores[0].evidence == 1.0


def baseline_moved_by(baselines: list, updates: list[KindModel], base: KindModel, low, high):
    """Return node 0's baseline moved towards its update until the update moved ``low`` to ``high``.

    The distance is in usual distances, as ``UpdateScore.deviation`` measures it.
    """
    parts = [update_parts(u, base) for u in updates]
    for share in np.linspace(0.0, 1.0, 401):
        moved = replace(
            baselines[0],
            parts=tuple(
                b + share * (p - b) for b, p in zip(baselines[0].parts, parts[0], strict=True)
            ),
        )
        deviation = score_updates(parts, [moved, *baselines[1:]], [False] * len(parts))[0]
        if low < deviation.deviation < high:
            return moved
    raise AssertionError("no share of the way gives a move in range")


def test_probation_catches_small_jump_to_mean(rng, base, directions) -> None:
    baselines, updates = round_after_history(rng, base, directions)
    updates[0] = mean_of_others(updates)
    baselines[0] = baseline_moved_by(baselines, updates, base, MIMIC_MOVE_ON_PROBATION, MIMIC_MOVE)
    parts = [update_parts(u, base) for u in updates]

    trusted = score_updates(parts, baselines, [False] * 8)[0]
    doubtful = replace(baselines[0], probation=PROBATION_ROUNDS)
    on_probation = score_updates(parts, [doubtful, *baselines[1:]], [False] * 8)[0]

    assert trusted.mimic_ratio < MIMIC_RATIO
    assert trusted.evidence == 1.0
    assert on_probation.evidence == 0.0
    assert "mean of the other updates" in on_probation.reason


def test_probation_catches_copy_close_to_history(rng, base, directions) -> None:
    baselines, updates = round_after_history(rng, base, directions)
    updates[0] = mean_of_others(updates)
    # A colluder whose history is made of such updates barely moves.
    baselines[0] = replace(
        baseline_moved_by(baselines, updates, base, 0.1, 0.5), probation=PROBATION_ROUNDS
    )
    parts = [update_parts(u, base) for u in updates]

    result = score_updates(parts, baselines, [False] * 8)[0]

    assert result.deviation < 1.0
    assert result.mimic_ratio < MIMIC_RATIO
    assert result.evidence == 0.0


def test_atypical_lie_update_loses_evidence(rng, base, directions) -> None:
    baselines = [None] * 8
    far = FeatureStats.from_samples(rng.normal(loc=60.0, size=(200, 2)))
    history = []
    for _ in range(6):
        updates = honest_round(rng, base, 8, directions)
        updates[0] = replace(updates[0], stats=far)
        results, baselines = score_and_learn(updates, base, baselines)
        history.append(results[0])
    updates = honest_round(rng, base, 8, directions)
    updates[0] = replace(mean_of_others(updates), stats=far)
    # A jump that the history check alone lets pass.
    baselines[0] = baseline_moved_by(baselines, updates, base, MIMIC_MOVE, DEVIATION_TOLERATED)

    result = score_and_learn(updates, base, baselines)[0][0]

    assert all(not r.typical and r.evidence == 1.0 for r in history)
    assert all(r.mimic_ratio > 0.5 for r in history[1:])
    assert not result.typical
    assert result.mimic_ratio < MIMIC_RATIO
    assert result.evidence == 0.0


def test_doubtful_updates_stay_out_of_mean_of_others(rng, base, directions) -> None:
    baselines, updates = round_after_history(rng, base, directions)

    def boosted(factor: float) -> list[KindModel]:
        return [
            replace(u, svm_coef=base.svm_coef + factor * (u.svm_coef - base.svm_coef))
            if i < 2
            else u
            for i, u in enumerate(updates)
        ]

    def scored(factor: float):
        parts = [update_parts(u, base) for u in boosted(factor)]
        return parts, score_updates(parts, baselines, [False] * 8)

    # Boost two updates just enough to keep some, but less than half, of their evidence.
    factor = next(
        f
        for f in np.linspace(1.0, 4.0, 301)
        if all(0.0 < r.evidence < DOUBTFUL_EVIDENCE for r in scored(f)[1][:2])
    )
    parts, results = scored(factor)

    svm = np.vstack([p[0] for p in parts])
    everyone = np.ones(8, dtype=bool)
    without = everyone.copy()
    without[:2] = False
    expected = mimic_ratios(svm, without, everyone)
    np.testing.assert_allclose([r.mimic_ratio for r in results[2:]], expected[2:])
    assert not np.allclose(expected[2:], mimic_ratios(svm, everyone, everyone)[2:])


def test_first_round_models_skip_mean_of_others(rng, base, directions) -> None:
    updates = honest_round(rng, base, 8, directions)
    others = np.mean([u.svm_vector() for u in updates[1:]], axis=0)
    updates[0] = replace(updates[0], svm_coef=others[:-1], svm_offset=float(others[-1]))
    # Without a previous model the only part is the whole SVM vector.
    parts = [update_parts(u, None) for u in updates]

    scores = score_updates(parts, [None] * 8, [False] * 8)

    assert all(len(p) == 1 for p in parts)
    assert all(np.isnan(s.mimic_ratio) for s in scores)
    assert scores[0].evidence == 1.0


@pytest.mark.parametrize("z", [-1.5, 0.5, 2.0])
def test_mimic_ratios_see_any_multiple_of_the_spread(rng, z: float) -> None:
    honest = rng.normal(size=(8, 200)) * rng.uniform(0.1, 2.0, size=200)
    colluder = honest.mean(axis=0) + z * honest.std(axis=0)
    deltas = np.vstack([colluder, honest])
    everyone = np.ones(deltas.shape[0], dtype=bool)

    ratios = mimic_ratios(deltas, everyone, everyone)

    # Its plain distance from the others' mean grows with z; the ratio does not.
    assert np.linalg.norm(colluder - honest.mean(axis=0)) > 0.3 * np.median(
        np.linalg.norm(honest - honest.mean(axis=0), axis=1)
    )
    assert ratios[0] < 0.1
    assert ratios[1:].min() > 0.5


def test_mimic_ratios_need_enough_senders(rng) -> None:
    deltas = rng.normal(size=(MIMIC_MIN_SENDERS, 5))
    everyone = np.ones(MIMIC_MIN_SENDERS, dtype=bool)
    too_few = everyone.copy()
    too_few[0] = False

    assert np.isnan(mimic_ratios(deltas, too_few, everyone)).all()
    ratios = mimic_ratios(deltas, everyone, everyone)
    assert np.isfinite(ratios).all()
    assert lower_median(ratios) == pytest.approx(1.0)


def test_mimic_ratios_skip_rows_not_compared(rng) -> None:
    deltas = rng.normal(size=(6, 5))
    reference = np.ones(6, dtype=bool)
    compared = reference.copy()
    compared[2] = False

    ratios = mimic_ratios(deltas, reference, compared)

    assert np.isnan(ratios[2])
    assert np.isfinite(np.delete(ratios, 2)).all()


def test_sign_flip_after_history_loses_evidence(rng, base, directions) -> None:
    def flip(update: KindModel) -> KindModel:
        return replace(update, svm_coef=base.svm_coef - 4 * (update.svm_coef - base.svm_coef))

    results = run_history(rng, base, directions, rounds=6, change=flip)
    assert results[0].deviation > 6.0
    assert results[0].evidence == 0.0
    assert all(s.evidence == 1.0 for s in results[1:])


def test_shifted_data_loses_evidence(rng, base, directions) -> None:
    def shift(update: KindModel) -> KindModel:
        data = rng.normal(loc=3.0, size=(200, 2))
        return replace(update, stats=FeatureStats.from_samples(data))

    results = run_history(rng, base, directions, rounds=6, change=shift)
    assert results[0].evidence == 0.0


def test_zero_repeated_and_copied_updates_scored(rng, base, directions) -> None:
    updates = honest_round(rng, base, 6, directions)
    updates[0] = replace(updates[0], svm_coef=base.svm_coef.copy(), svm_offset=base.svm_offset)
    updates[2] = replace(updates[1])
    scores = score(updates, base, repeated=[False, False, False, True, False, False])
    assert scores[0].evidence == 0.0
    assert scores[0].reason.startswith("zero update")
    # Without arrival ranks both members of the pair are copies.
    assert scores[1].evidence == scores[2].evidence == 1.0
    assert scores[1].duplicate is scores[2].duplicate is True
    assert scores[1].weight == scores[2].weight == 0.0
    assert scores[3].evidence == 0.0
    assert "repeats" in scores[3].reason
    assert scores[4].evidence == scores[5].evidence == 1.0


def test_near_duplicates_needs_a_majority_of_distinct_updates() -> None:
    rng = np.random.default_rng(3)
    honest = rng.normal(size=(6, 10))
    copies = np.tile(rng.normal(size=10), (4, 1)) + 1e-9 * rng.normal(size=(4, 10))
    np.testing.assert_array_equal(
        near_duplicates(np.vstack([honest, copies])), [False] * 6 + [True] * 4
    )
    assert not near_duplicates(np.tile(honest[0], (5, 1))).any()
    assert not near_duplicates(honest[:2]).any()


def test_near_duplicates_within_groups() -> None:
    rng = np.random.default_rng(3)
    honest = rng.normal(size=(4, 10))
    copies = np.tile(rng.normal(size=10), (4, 1)) + 1e-9 * rng.normal(size=(4, 10))
    regime = rng.normal(size=(2, 10))
    # A regime's delta that lands on a kind's delta by chance.
    lookalike = honest[1] + 1e-9
    groups = [0] * 8 + [1, 1]

    marked = near_duplicates(np.vstack([honest, copies, regime]), groups=groups)
    apart = near_duplicates(np.vstack([honest, lookalike]), groups=[0] * 4 + [1])

    # The regime's rows make the copies a minority of the round's distinct updates.
    np.testing.assert_array_equal(marked, [False] * 4 + [True] * 4 + [False] * 2)
    assert not near_duplicates(np.vstack([honest, copies])).any()
    assert not apart.any()


def test_near_copy_costs_only_the_later_sender() -> None:
    rng = np.random.default_rng(3)
    honest = rng.normal(size=(6, 10))
    # Row 6 copies row 2 after reading it; rows 7 and 8 are two colluders.
    copy = honest[2] + 1e-9 * rng.normal(size=10)
    colluders = np.tile(rng.normal(size=10), (2, 1))
    deltas = np.vstack([honest, copy, colluders])

    marked = near_duplicates(deltas, arrival=[0, 1, 2, 3, 4, 5, 6, 7, 8])

    np.testing.assert_array_equal(marked, [False] * 6 + [True, False, True])
    np.testing.assert_array_equal(
        near_duplicates(deltas), [False, False, True] + [False] * 3 + [True] * 3
    )


def test_copied_update_keeps_first_sender_evidence(rng, base, directions) -> None:
    updates = honest_round(rng, base, 6, directions)
    updates[5] = replace(updates[1])
    parts = [update_parts(u, base) for u in updates]

    scores = score_updates(parts, [None] * 6, [False] * 6, arrival=[0, 1, 2, 3, 4, 5])

    assert scores[1].evidence == 1.0
    assert scores[1].weight > 0.0
    assert scores[5].duplicate is True
    assert scores[5].weight == 0.0


def twin_rounds(rng, base, directions, rounds: int, last=None):
    """Score rounds in which node 1 sends node 0's update, arriving just before it.

    ``last`` may replace the updates of the final round. Returns its scores.
    """
    baselines: list = [None] * 6
    results = []
    for round_number in range(rounds):
        updates = honest_round(rng, base, 6, directions)
        updates[1] = replace(updates[0], svm_coef=updates[0].svm_coef + 1e-9)
        if last is not None and round_number == rounds - 1:
            updates = last(updates)
        parts = [update_parts(u, base) for u in updates]
        results = score_updates(
            parts,
            baselines,
            [False] * 6,
            typical=typical_data([u.stats for u in updates], base.stats),
            arrival=[1, 0, 2, 3, 4, 5],
        )
        baselines = [
            learn_baseline(b, p, r) for b, p, r in zip(baselines, parts, results, strict=True)
        ]
    return results


def test_twin_with_history_weighs_nothing_at_no_cost(rng, base, directions) -> None:
    # Two nodes that watch one device send the same update every round, so
    # whichever arrives second is a near copy in line with its own history.
    scores = twin_rounds(rng, base, directions, rounds=6)

    assert scores[0].duplicate is True
    assert scores[0].weight == 0.0
    assert scores[0].evidence == 1.0
    assert scores[1].duplicate is False
    assert scores[1].weight > 0.0
    assert scores[1].evidence == 1.0


def test_copy_unlike_own_history_loses_evidence(rng, base, directions) -> None:
    def copy_node_two(updates: list[KindModel]) -> list[KindModel]:
        updates[4] = replace(updates[2], svm_coef=updates[2].svm_coef + 1e-9)
        return updates

    scores = twin_rounds(rng, base, directions, rounds=6, last=copy_node_two)

    # Node 4 arrived after node 2 and jumped from its own history onto its update.
    assert scores[4].duplicate is True
    assert scores[4].deviation > 3.0
    assert scores[4].evidence == 0.0
    assert "unlike its own earlier ones" in scores[4].reason


def test_atypical_copy_loses_evidence(rng, base, directions) -> None:
    updates = honest_round(rng, base, 6, directions)
    far_data = FeatureStats.from_samples(rng.normal(loc=50.0, size=(200, 2)))
    updates[5] = replace(updates[2], svm_coef=updates[2].svm_coef + 1e-9, stats=far_data)
    parts = [update_parts(u, base) for u in updates]
    typical = typical_data([u.stats for u in updates], base.stats)

    scores = score_updates(parts, [None] * 6, [False] * 6, typical=typical, arrival=range(6))

    assert not typical[5]
    assert scores[5].duplicate is True
    assert scores[5].evidence == 0.0
    assert scores[2].evidence == 1.0


def test_lower_median_never_averages() -> None:
    values = np.array([1.0, 2.0, 3.0, 100.0, 100.0, 100.0, 100.0, 4.0, 5.0, 6.0])
    assert lower_median(values) == 5.0
    np.testing.assert_array_equal(
        lower_median(np.array([[1.0, 9.0], [3.0, 7.0]]), axis=0), [1.0, 7.0]
    )


def test_baseline_moves_with_evidence(rng, base, directions) -> None:
    [update] = honest_round(rng, base, 1, directions)
    parts = update_parts(update, base)
    [first] = score_updates([parts], [None], [False])
    baseline = learn_baseline(None, parts, first)
    assert baseline is not None
    moved = [p + 1.0 for p in parts]

    learned = learn_baseline(baseline, moved, first)
    halfway = learn_baseline(baseline, moved, replace(first, evidence=0.5))

    np.testing.assert_allclose(learned.parts[0], parts[0] + 0.25)
    np.testing.assert_allclose(halfway.parts[0], parts[0] + 0.125)
    unchanged = learn_baseline(baseline, moved, replace(first, evidence=0.0))
    np.testing.assert_array_equal(unchanged.parts[0], baseline.parts[0])
    assert learn_baseline(None, parts, replace(first, evidence=0.0)) is None


def test_baseline_json_round_trip(rng, base, directions) -> None:
    [update] = honest_round(rng, base, 1, directions)
    parts = update_parts(update, base)
    baseline = UpdateBaseline(tuple(parts), (0.5, float("nan"), 0.1), probation=2, watch=1)
    restored = UpdateBaseline.from_json(json.loads(json.dumps(baseline.to_json())))
    for restored_part, part in zip(restored.parts, baseline.parts, strict=True):
        np.testing.assert_array_equal(restored_part, part)
    assert restored.spreads[0] == 0.5
    assert np.isnan(restored.spreads[1])
    assert restored.probation == 2
    assert restored.watch == 1


def test_baseline_from_stored_doubtful_flag(rng, base, directions) -> None:
    [update] = honest_round(rng, base, 1, directions)
    stored = UpdateBaseline(tuple(update_parts(update, base))).to_json()
    del stored["probation"]
    assert UpdateBaseline.from_json({**stored, "doubtful": True}).probation == PROBATION_ROUNDS
    assert UpdateBaseline.from_json(stored).probation == 0


def test_node_trust_stores_baseline_and_digests(rng, base, directions) -> None:
    [update] = honest_round(rng, base, 1, directions)
    parts = update_parts(update, base)
    [result] = score_updates([parts], [None], [False])
    trust = NodeTrust()
    trust.observe_update("pump", parts, result, update_digest(update), 3)
    assert trust.update_baseline("pump").fits(parts)
    assert trust.update_digests["pump"] == [[update_digest(update), 3]]
    assert NodeTrust.from_dict(json.loads(json.dumps(trust.to_dict()))) == trust
    trust.status = TrustStatus.QUARANTINED
    trust.release(TrustConfig())
    assert trust.update_baseline("pump") is None


def _model_of(center: float, width: int = 1) -> KindModel:
    data = np.linspace(-1.0, 1.0, 50)[:, None] + np.full((1, width), center)
    return make_model(np.zeros(4), np.zeros((2, width)), data)


@pytest.mark.parametrize(
    ("centers", "center", "expected"),
    [
        # Typical data trains the kind's model, whatever regimes exist.
        ({"pump": 0.0, "pump.1": 100.0}, 0.0, "pump"),
        # Atypical data without a regime starts the first free one ...
        ({"pump": 0.0}, 100.0, "pump.1"),
        ({"pump": 0.0, "pump.1": 300.0}, 100.0, "pump.2"),
        # ... and joins the first regime whose data it is typical of.
        ({"pump": 0.0, "pump.1": 300.0, "pump.2": 100.0}, 100.0, "pump.2"),
        ({"pump": 0.0, "pump.2": 100.0}, 300.0, "pump.1"),
        # Without the kind's model nothing is atypical.
        ({"pump.1": 100.0}, 100.0, "pump"),
    ],
)
def test_model_key(centers: dict[str, float], center: float, expected: str) -> None:
    models = {key: _model_of(value) for key, value in centers.items()}

    assert model_key(models, "pump", _model_of(center).stats) == expected


def test_model_key_with_every_regime_taken() -> None:
    models = {"pump": _model_of(0.0)}
    for index in range(1, protocol.MAX_REGIMES + 1):
        models[protocol.regime_key("pump", index)] = _model_of(1000.0 * index)

    assert model_key(models, "pump", _model_of(100.0).stats) == "pump"


def test_model_key_of_other_width_is_the_kind() -> None:
    models = {"pump": _model_of(0.0, width=2)}

    assert model_key(models, "pump", _model_of(100.0).stats) == "pump"


def test_copies_sought_within_group() -> None:
    rng = np.random.default_rng(0)
    deltas = rng.normal(size=(6, 9))
    deltas[5] = deltas[0] + 1e-6
    parts = [[row] for row in deltas]
    no_history = [None] * 6
    not_repeated = [False] * 6

    together = score_updates(parts, no_history, not_repeated, arrival=range(6))
    # The last update starts from a regime's model, so its likeness is chance.
    apart = score_updates(
        parts,
        no_history,
        not_repeated,
        typical=[True] * 5 + [False],
        arrival=range(6),
        groups=[0] * 5 + [1],
    )

    assert together[5].duplicate
    assert not apart[5].duplicate
    assert apart[5].evidence == 1.0
