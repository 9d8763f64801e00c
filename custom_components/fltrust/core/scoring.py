"""Robust scores of a round's updates: against the round and against each sender's past.

``score_updates`` judges every update in two ways:

- Against the round, for the aggregation weight. The reference is the
  coordinate-wise median of the SVM deltas (change to the previous global
  model) of the senders whose data is typical of the kind. An update whose
  delta points away from it (cosine at most 0) weighs nothing. An update
  whose delta is longer than ``CLIP_RATIO`` times the median norm weighs
  less in proportion, so that it pulls the model no further than a delta of
  that length would; the SVM part and the centroids get a factor each. This
  clips an update's influence rather than the update itself, so the new
  model stays a weighted mean of the updates as sent, which the published
  weights explain.
- Against the sender's own earlier updates, for the integrity trust signal.
  Each sender has a baseline per kind: the average of its earlier updates,
  weighted by their evidence, and its usual distance from that average. The
  update is compared part by part: the SVM delta and the statistics of the
  sender's data. The centroids are not compared, because k-means centroids
  jump between modes of honest data. An update that moves away from the
  baseline several times further than usual, once the move that all senders
  share (a change of the global model) is removed, loses evidence. A sender
  whose deltas are longer than most, because its data lies far from the global
  model, is allowed more, since its delta changes more when the model moves.
  After an update that lost any evidence the sender is on probation:
  until it has sent a few consistent updates, any update that strays further
  than 99 % of honest updates did in the benchmark gets no evidence. An attack
  that looks smaller once the model has moved on, or that alternates with
  honest rounds, still costs all evidence. An update that strays that far but
  within the tolerance keeps its evidence and puts its sender under watch, and
  a stray beyond the tolerance during the watch costs all evidence. Senders
  with atypical data are compared with their own history in the same way, on
  a scale of their own.
  Zero updates, updates repeated from an earlier model version, near copies of
  an update that arrived earlier from another sender and deltas that lie far
  from the round's median get no evidence, whatever their history. Nor do
  deltas that moved away from their sender's history onto the others' mean
  shifted along their spread. On probation, a delta on that line loses its
  evidence without any move. A
  sender that loses all evidence while on probation or under watch is
  quarantined (``relapsed``).

The split matters for non-IID data. A node whose data is merely different
points away from the majority in every round, so it weighs little or nothing
in the kind's model, but it stays consistent with itself and keeps its trust.
An attacker changes what it sends when it starts attacking, which its own
history exposes. An attacker that poisons from its very first update has no
honest history to betray it. Unless its updates are blatant (zero, repeated
or far from the round's median), the aggregation weights alone limit it, and
copies of another update weigh nothing.

The benchmark in ``docs/benchmarks.md`` measured this rule against FLTrust's
own (cosine-proportional weights against an update the coordinator trains on
a clean calibration set, clipping to that update's norm, the cosine as trust
score) and chose it; the page gives the figures.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeGuard, cast, overload

import numpy as np
import numpy.typing as npt

from .model import FeatureStats, KindModel
from .protocol import MAX_REGIMES, regime_key

# Deltas longer than this multiple of the round's median norm are scaled down to it.
CLIP_RATIO = 2.0
# An SVM delta further than this many usual distances from the round's median
# delta gets no evidence, whatever its sender's history. docs/benchmarks.md
# reports how far honest deltas strayed over the benchmark's grid.
FAR_DISTANCE = 25.0
# Distance from the baseline, in multiples of the usual distance, accepted in
# full, and at which the evidence reaches 0.
DEVIATION_TOLERATED = 3.0
DEVIATION_REJECTED = 6.0
# The round's usual distance of a delta part is taken as at least this share
# of the median norm of that part, so that a calm round does not turn a small
# change into a large ratio.
DEVIATION_FLOOR = 0.1
# The round's usual distance of the statistics is taken as at least this
# much, in standard deviations of each sender's own data.
STATS_DEVIATION_FLOOR = 0.25
# A sender's own usual distance raises its tolerance up to this multiple of the
# round's usual distance; a sender without one gets that multiple.
SPREAD_CAP = 3.0
# Power of (baseline delta length / round's median length) that raises the
# tolerance of a sender in the bulk. In the benchmark 0.5 kept honest nodes far
# from the global model trusted without missing more attackers, and 1 missed
# more. A sender that boosts every update from its first one gains the same
# leeway, but the clip factor still bounds how far its updates pull the model.
LENGTH_EXPONENT = 0.5
# An update that lost any evidence puts its sender on probation for
# PROBATION_ROUNDS consistent updates. Meanwhile an update further than
# PROBATION_TOLERATED usual distances from the baseline gets no evidence.
# In the benchmark no honest update went beyond 3 usual distances and 99 %
# stayed within 1.75, while attacks that shrink as the model converges, or
# alternate with honest rounds, came back at 2 to 3.
# Updates left with less evidence than DOUBTFUL_EVIDENCE stay out of the
# others' mean and spread of the mimic check.
DOUBTFUL_EVIDENCE = 0.5
PROBATION_ROUNDS = 3
PROBATION_TOLERATED = 2.0
# An update further than PROBATION_TOLERATED but within DEVIATION_TOLERATED
# keeps its evidence and puts its sender under watch for PROBATION_ROUNDS
# updates. Meanwhile an update beyond DEVIATION_TOLERATED gets no evidence.
# In the benchmark no honest node strayed beyond 2 usual distances twice
# within 3 updates, while an on-off attacker's first attack round came out
# at 2.6.
# Share of the way to a consistent update that a baseline moves per round, and
# share of the way to the latest distance that the usual distance moves.
BASELINE_RATE = 0.25
SPREAD_RATE = 0.3
# typical_data: a sender is atypical when a feature mean lies further than
# STATS_OUTLIER_LIMIT standard deviations of the kind's statistics from their
# mean. In a kind's first round, without statistics, it is atypical when a
# feature mean lies further from the median of the senders' means than
# STATS_OUTLIER_FACTOR times the median such distance and further than
# STATS_OUTLIER_MIN median standard deviations.
STATS_OUTLIER_LIMIT = 10.0
STATS_OUTLIER_FACTOR = 10.0
STATS_OUTLIER_MIN = 10.0
# An SVM delta closer than this share of the usual such distance to the line
# through the other senders' mean along their spread gets no evidence, because
# it follows the round rather than the sender's own data. docs/benchmarks.md
# reports how close honest and "a little is enough" updates came.
MIMIC_RATIO = 0.35
# The check applies only to an update that also moved further than this from its
# sender's history, in usual distances. An honest update that colluders framed
# by placing their own around it has not moved; one that jumped onto the
# others' mean has. In the benchmark 99 % of honest updates moved less than 1.5.
MIMIC_MOVE = 1.5
# A sender on probation already strayed once by itself, so on the line it needs
# no move at all. In the benchmark no honest update came closer than 0.45 usual
# distances to the line. Colluders that send copies barely move from their own
# history, which lets them pass a required move round after round.
MIMIC_MOVE_ON_PROBATION = 0.0
# Fewer senders in the bulk than this give no usual distance for that check.
MIMIC_MIN_SENDERS = 4
# Two updates whose distance is below this share of the round's median
# nearest-neighbour distance count as copies of each other.
DUPLICATE_RATIO = 0.05
# Indices of the parts of update_parts.
SVM_PART = 0
CENTERS_PART = 1
STATS_PART = 2


@dataclass(frozen=True)
class UpdateBaseline:
    """A sender's reference for its next update of one kind.

    Attributes:
        parts: evidence-weighted average of the parts (``update_parts``) of its
            earlier updates.
        spreads: its usual distance from ``parts``, one per part, NaN where not
            yet measured; None before its first comparison.
        probation: how many more consistent updates the sender owes after an
            update that lost evidence. Until then every update must stay
            within ``PROBATION_TOLERATED`` usual distances, or it gets no
            evidence at all.
        watch: how many more updates the sender stays under watch after an
            update that strayed beyond ``PROBATION_TOLERATED`` usual
            distances but kept its evidence. Until then an update beyond
            ``DEVIATION_TOLERATED`` gets no evidence at all.
    """

    parts: tuple[np.ndarray, ...]
    spreads: tuple[float, ...] | None = None
    probation: int = 0
    watch: int = 0

    def fits(self, parts: Sequence[np.ndarray]) -> bool:
        """Return whether ``parts`` have the shapes of this baseline."""
        return len(parts) == len(self.parts) and all(
            np.shape(p) == b.shape for p, b in zip(parts, self.parts, strict=True)
        )

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary, with None for unmeasured spreads."""
        return {
            "parts": [part.tolist() for part in self.parts],
            "spreads": None
            if self.spreads is None
            else [None if math.isnan(s) else s for s in self.spreads],
            "probation": self.probation,
            "watch": self.watch,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpdateBaseline:
        """Build a baseline from ``to_json`` output."""
        spreads = data.get("spreads")
        return cls(
            parts=tuple(np.asarray(part, dtype=float) for part in data["parts"]),
            spreads=None
            if spreads is None
            else tuple(math.nan if s is None else float(s) for s in spreads),
            probation=int(data.get("probation", PROBATION_ROUNDS if data.get("doubtful") else 0)),
            watch=int(data.get("watch", 0)),
        )


@dataclass(frozen=True)
class UpdateScore:
    """Scores of one update against the round and against its sender's earlier updates.

    Attributes:
        cosine: cosine of the SVM delta with the round's reference delta.
        norm_ratio: SVM delta norm over the reference norm.
        deviation: distance from the sender's baseline over its usual distance,
            the largest over the parts; NaN without a comparison.
        evidence: integrity evidence in [0, 1] for the sender's trust.
        weight: aggregation factor in [0, 1] from the direction.
        clip: factor in (0, 1] on the update's SVM weight that bounds its pull
            to ``CLIP_RATIO`` times the reference norm.
        center_clip: the same factor for the centroids.
        typical: whether the sender's data is typical of the kind; an
            atypical update weighs nothing.
        distances: distance of each part from the baseline once the shared
            move is removed, NaN where not measured; ``learn_baseline`` learns
            the usual distance from it.
        distance_ratio: distance of the SVM delta from the round's median delta
            over the usual such distance; NaN without a round majority. It is
            measured against the first reference of the round, ``cosine`` and
            ``norm_ratio`` against the final one (see ``score_updates``).
        mimic_ratio: distance of the SVM delta from the line through the
            other senders' mean along their spread, over the usual such
            distance; NaN where not measured (see ``mimic_ratios``).
        reason: why the evidence is below 1, empty otherwise.
        duplicate: whether the update nearly copies another update that
            arrived earlier in the round, so that it weighs nothing.
    """

    cosine: float
    norm_ratio: float
    deviation: float
    evidence: float
    weight: float
    clip: float
    center_clip: float
    typical: bool = True
    distances: tuple[float, ...] = ()
    distance_ratio: float = math.nan
    mimic_ratio: float = math.nan
    reason: str = ""
    duplicate: bool = False


@overload
def lower_median(values: npt.ArrayLike, axis: None = None) -> float: ...
@overload
def lower_median(values: npt.ArrayLike, axis: int) -> np.ndarray | float: ...
def lower_median(values: npt.ArrayLike, axis: int | None = None) -> np.ndarray | float:
    """Return the lower median: the middle value, or the lower of the two middle values.

    Unlike ``np.median`` it never averages the two middle values, so with
    fewer than half of the values planted by attackers (four of ten, say) it
    is always one of the honest values.
    """
    array = np.asarray(values, dtype=float)
    if axis is None:
        array = array.ravel()
        axis = 0
    index = (array.shape[axis] - 1) // 2
    result = np.take(np.partition(array, index, axis=axis), index, axis=axis)
    return float(result) if np.ndim(result) == 0 else result


def update_parts(update: KindModel, previous: KindModel | None) -> list[np.ndarray]:
    """Return the parts in which ``score_updates`` compares an update with earlier ones.

    The parts are the SVM delta against ``previous`` and, when ``previous`` has
    the same shapes, the centroid delta and the update's own statistics: the
    mean of each feature followed by the log of its standard deviation. The
    statistics describe the sender's data alone, so they change when its data
    changes, not when the global model does. Without a fitting ``previous``
    the only part is the SVM vector itself.
    """
    if previous is None or previous.svm_vector().shape != update.svm_vector().shape:
        return [update.svm_vector()]
    parts = [update.svm_vector() - previous.svm_vector()]
    if previous.centers.shape == update.centers.shape:
        parts.append((update.centers - previous.centers).ravel())
        parts.append(np.concatenate([update.stats.mean, np.log(update.stats.std)]))
    return parts


def update_digest(update: KindModel) -> str:
    """Return a fingerprint of an update's SVM part and centroids, to recognise a repeat."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(update.svm_vector(), dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(update.centers, dtype=np.float64).tobytes())
    return digest.hexdigest()


def typical_data(
    stats: Sequence[FeatureStats], reference: FeatureStats | None = None
) -> np.ndarray:
    """Return a mask of the senders whose data lies in the bulk of their kind's data.

    With ``reference``, the kind's current normalization statistics, a sender
    is atypical when some feature mean lies more than ``STATS_OUTLIER_LIMIT``
    reference standard deviations from the reference mean. Atypical data stays
    out of the statistics, so the reference keeps describing the bulk and the
    split stays the same from round to round.

    Without a reference (a kind's first round) a sender's distance is the
    largest, over features, of the distance of its mean from the median of
    all senders' means, in median standard deviations. It is atypical when
    the distance exceeds ``STATS_OUTLIER_FACTOR`` times the median distance
    and ``STATS_OUTLIER_MIN``. Fewer than three senders have no bulk, and all
    count as typical.

    A pump in another operating regime is atypical, for example. Its updates
    would stretch the kind's normalization over both regimes, and in the
    kind's normalization its own updates swing with every change of the model.
    """
    n_senders = len(stats)
    means = np.vstack([s.mean for s in stats])
    if reference is not None and reference.mean.shape == means.shape[1:]:
        distances: np.ndarray = (np.abs(means - reference.mean) / reference.std).max(axis=1)
        return distances <= STATS_OUTLIER_LIMIT
    if n_senders < 3:
        return np.ones(n_senders, dtype=bool)
    spread = np.maximum(lower_median(np.vstack([s.std for s in stats]), axis=0), 1e-12)
    distances = (np.abs(means - lower_median(means, axis=0)) / spread).max(axis=1)
    limit = max(STATS_OUTLIER_FACTOR * lower_median(distances), STATS_OUTLIER_MIN)
    return distances <= limit


def _stats_fit(model: KindModel | None, stats: FeatureStats) -> TypeGuard[KindModel]:
    return (
        model is not None and model.stats.count >= 1 and model.stats.mean.shape == stats.mean.shape
    )


def typical_of(model: KindModel | None, stats: FeatureStats) -> bool:
    """Return whether data with ``stats`` is typical of ``model`` (``typical_data``).

    False without a model, or with one of another width.
    """
    return _stats_fit(model, stats) and bool(typical_data([stats], model.stats)[0])


def model_key(
    models: Mapping[str, KindModel],
    kind: str,
    stats: FeatureStats,
    max_regimes: int = MAX_REGIMES,
) -> str:
    """Return the key of the model that data of ``kind`` with ``stats`` trains from.

    That is the kind's own model while the data is typical of it
    (``typical_data``). Atypical data, which the kind's model leaves out,
    belongs to the first of the kind's regimes whose data it is typical of,
    and otherwise to the first free regime, where it starts a model of its
    own. Edge nodes train and score with the model of this key, and the
    coordinator checks that the updates it receives follow the same rule.
    With every regime taken, the key is the kind's own.

    Parameters:
        models: the global model's kinds and regimes by key.
        kind: the device kind.
        stats: the statistics of the data.
        max_regimes: the number of regimes the coordinator keeps per kind
            (``GlobalModel.max_regimes``); with 0 the key is always the kind's.
    """
    own = models.get(kind)
    if not _stats_fit(own, stats) or typical_of(own, stats):
        return kind
    free = None
    for index in range(1, min(max_regimes, MAX_REGIMES) + 1):
        key = regime_key(kind, index)
        regime = models.get(key)
        if regime is None:
            free = free or key
        elif typical_of(regime, stats):
            return key
    return free or kind


def cosine_similarity(deltas: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Return the cosine of each row of ``deltas`` with ``reference``, 0 where a norm is 0."""
    norms = np.linalg.norm(deltas, axis=1) * np.linalg.norm(reference)
    dots = deltas @ reference
    cosines: np.ndarray = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return cosines


def clip_factors(deltas: np.ndarray, max_norm: float) -> np.ndarray:
    """Return the factor in (0, 1] that brings each row of ``deltas`` to at most ``max_norm``."""
    norms = np.linalg.norm(deltas, axis=1)
    factors: np.ndarray = np.ones_like(norms)
    np.divide(max_norm, norms, out=factors, where=norms > max_norm)
    return factors


def near_duplicates(
    deltas: np.ndarray,
    ratio: float = DUPLICATE_RATIO,
    arrival: Sequence[int] | None = None,
    groups: Sequence[int] | None = None,
) -> np.ndarray:
    """Return a mask of the rows whose nearest other row is far closer than usual.

    A row is marked when its distance to its nearest neighbour is below
    ``ratio`` times the median nearest-neighbour distance of all rows. Honest
    nodes train on different data, so their updates are never that close;
    colluding nodes that send copies of one update are. Fewer than three rows
    give no usual distance, and nothing is marked; nor is anything when most
    rows have an exact twin.

    With ``groups``, the model each row's delta starts from (see
    ``score_updates``), a row is marked only for a close row of its own
    group. A delta from another model is unlike the others by its start, so
    closeness across groups means nothing. The median still runs over every
    row's nearest neighbour in the whole round, because the rows of every
    group are distinct updates.

    With ``arrival``, the rank of each row in arrival order, a row is marked
    only when a row that arrived earlier is that close. A node that copies
    another node's update off the broker must send it later, so only the
    copy is marked.
    """
    n_rows = deltas.shape[0]
    if n_rows < 3:
        return np.zeros(n_rows, dtype=bool)
    squared = np.sum(deltas * deltas, axis=1)
    distances = np.sqrt(
        np.maximum(squared[:, None] + squared[None, :] - 2.0 * deltas @ deltas.T, 0.0)
    )
    np.fill_diagonal(distances, np.inf)
    typical = lower_median(distances.min(axis=1))
    if groups is not None:
        group = np.asarray(groups)
        distances[group[:, None] != group[None, :]] = np.inf
    if typical <= 0:
        # Most updates have an exact twin: either most senders collude, which
        # no robust statistic survives, or honest senders train identically on
        # identical data. The two cases cannot be distinguished here.
        return np.zeros(n_rows, dtype=bool)
    close = distances < ratio * typical
    if arrival is not None:
        ranks = np.asarray(arrival)
        close &= ranks[None, :] < ranks[:, None]
    marked: np.ndarray = close.any(axis=1)
    return marked


def mimic_ratios(deltas: np.ndarray, reference: np.ndarray, compared: np.ndarray) -> np.ndarray:
    """Return each row's distance from the others' mean and spread, over the usual such distance.

    An honest node trains on data of its own, so its delta keeps a distance
    from the mean of the others' deltas. A node that computes its update from
    the others' lands close to it: "a little is enough" sends their mean
    shifted by a multiple of their coordinate-wise standard deviation. The
    distance is therefore taken from the line through the others' mean along
    their standard deviations, which contains every such update, whatever the
    multiple. Removing one direction changes little for an honest delta with
    many parameters. The usual distance is the lower median over the
    ``reference`` rows.

    Parameters:
        deltas: ndarray of shape (n_updates, n_parameters).
        reference: boolean mask of the rows that make up the means, for
            example the typical senders without zero, repeated or copied updates.
        compared: boolean mask of the rows to measure.

    Returns:
        ndarray of shape (n_updates,), NaN for rows not compared and for every
        row when ``reference`` has fewer than ``MIMIC_MIN_SENDERS`` rows.
    """
    ratios = np.full(deltas.shape[0], np.nan)
    count = int(reference.sum())
    if count < MIMIC_MIN_SENDERS:
        return ratios
    total = deltas[reference].sum(axis=0)
    squares = (deltas[reference] ** 2).sum(axis=0)
    distances = np.full(deltas.shape[0], np.nan)
    for i in np.flatnonzero(compared | reference):
        if reference[i]:
            others = count - 1
            mean = (total - deltas[i]) / others
            second = (squares - deltas[i] ** 2) / others
        else:
            others = count
            mean = total / others
            second = squares / others
        spread = np.sqrt(np.maximum(second - mean**2, 0.0))
        offset = deltas[i] - mean
        length = float(spread @ spread)
        if length > 0:
            offset = offset - (offset @ spread) / length * spread
        distances[i] = np.linalg.norm(offset)
    usual = lower_median(distances[reference])
    if usual <= 0:
        return ratios
    ratios[compared] = distances[compared] / usual
    return ratios


def _changes(
    parts: Sequence[Sequence[np.ndarray]],
    baselines: Mapping[int, UpdateBaseline],
    rows: Sequence[int],
    part: int,
) -> np.ndarray:
    """Return how part ``part`` of each update in ``rows`` moved away from its baseline.

    Deltas move by their difference. Statistics move by the shift of each mean
    in standard deviations of the baseline and by the change of each log
    standard deviation, so that a shift counts in units of the sender's data.
    """
    current = np.vstack([parts[i][part] for i in rows])
    baseline = np.vstack([baselines[i].parts[part] for i in rows])
    if part != STATS_PART:
        moves: np.ndarray = current - baseline
        return moves
    n_features = current.shape[1] // 2
    spread = np.maximum(np.exp(baseline[:, n_features:]), 1e-9)
    return np.hstack(
        [
            (current[:, :n_features] - baseline[:, :n_features]) / spread,
            current[:, n_features:] - baseline[:, n_features:],
        ]
    )


def _deviations(
    parts: Sequence[Sequence[np.ndarray]],
    baselines: Sequence[UpdateBaseline | None],
    in_bulk: np.ndarray,
    suspect: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return each update's deviation ratio and its distance from its baseline per part.

    For each part, the move that all compared senders share (the coordinate-
    wise median of their moves) is removed first. The rest is divided by the
    larger of the round's usual distance (median over senders, with a floor)
    and the sender's own usual distance, the latter capped at ``SPREAD_CAP``
    times the former. The centroid part is not compared. A sender whose
    baseline delta is longer than the round's median delta has its tolerance
    scaled by the ratio of the lengths to the power ``LENGTH_EXPONENT``.
    Senders with atypical data take no part in the shared move and the usual
    distance of the SVM delta. Their tolerance is scaled by the ratio itself
    and is at least the length of the shared move. ``suspect`` senders
    (zero, repeated or copied updates, senders on probation) are measured but
    left out of the shared move and the usual distance. A part with fewer
    than three compared senders in the bulk is skipped.

    Returns:
        (ratios of shape (n_updates,), the largest over parts and NaN where
        nothing was compared; distances of shape (n_updates, n_parts), NaN
        where not measured).
    """
    n_updates = len(parts)
    n_parts = max(len(p) for p in parts)
    ratios = np.full(n_updates, np.nan)
    distances = np.full((n_updates, n_parts), np.nan)
    # Maps each update whose baseline has the update's shapes to that baseline.
    compared = {i: b for i, b in enumerate(baselines) if b is not None and b.fits(parts[i])}
    for part in range(n_parts):
        if part == CENTERS_PART:
            # k-means centroids jump when a cluster moves to another mode of a
            # node's data, so they would flag honest nodes. Their weight is
            # bounded by their norm instead.
            continue
        rows = [i for i in compared if part < len(parts[i])]
        # The round's shared move and usual distance come from the senders in
        # the bulk. For the statistics, every sender counts.
        bulk = np.array([part == STATS_PART or bool(in_bulk[i]) for i in rows], dtype=bool)
        if bulk.sum() < 3:
            continue
        moves = _changes(parts, compared, rows, part)
        clean = bulk & np.array([not suspect[i] for i in rows])
        if clean.sum() < 3:
            clean = bulk
        shared = lower_median(moves[clean], axis=0)
        distance = np.linalg.norm(moves - shared, axis=1)
        if part == STATS_PART:
            floor = STATS_DEVIATION_FLOOR
            median_norm = math.nan
        else:
            median_norm = lower_median(
                [
                    np.linalg.norm(parts[i][part])
                    for i, keep in zip(rows, clean, strict=True)
                    if keep
                ]
            )
            floor = DEVIATION_FLOOR * median_norm
        usual = max(lower_median(distance[clean]), floor, 1e-12)
        for i, value, in_round_bulk in zip(rows, distance, bulk, strict=True):
            scale = usual
            if median_norm > 0:
                # The baseline's length, not the update's, scales the
                # tolerance, so that a boosted update gains nothing.
                length = max(1.0, float(np.linalg.norm(compared[i].parts[part])) / median_norm)
                if in_round_bulk:
                    # When the model moves, the delta of a sender far from it
                    # changes more than the others' deltas, and not by the
                    # shared move alone.
                    scale = usual * length**LENGTH_EXPONENT
                else:
                    # Data in another regime gives longer deltas that vary
                    # more, in proportion to their length. Nor does the shared
                    # move describe what a change of the model does to deltas
                    # that far off, so it bounds the scale from below.
                    scale = max(usual * length, float(np.linalg.norm(shared)))
            spreads = compared[i].spreads
            own = math.nan if spreads is None else spreads[part]
            own = SPREAD_CAP * scale if math.isnan(own) else min(own, SPREAD_CAP * scale)
            ratio = value / max(scale, own)
            distances[i, part] = value
            ratios[i] = ratio if math.isnan(ratios[i]) else max(ratios[i], ratio)
    return ratios, distances


@dataclass(frozen=True)
class _Direction:
    """The round's reference direction, with the weight and clip factors it gives each update."""

    reference: np.ndarray
    norm: float
    center_norm: float
    cosines: np.ndarray
    weights: np.ndarray
    clips: np.ndarray
    center_clips: np.ndarray


def _round_direction(
    svm: np.ndarray,
    centers: np.ndarray | None,
    honest: np.ndarray,
    reference: Sequence[np.ndarray] | None,
    proportional: bool,
    ratio: float,
) -> _Direction:
    """Return the reference of the rows in ``honest`` and each update's direction weight and clips.

    Without ``reference`` the reference is the lower coordinate-wise median of
    the ``honest`` SVM deltas and the norms are their lower median norms.
    Fewer than three ``honest`` rows and no reference give no majority: every
    update weighs 1 and nothing is clipped.
    """
    n_updates = svm.shape[0]
    if reference is not None:
        svm_reference = np.asarray(reference[SVM_PART], dtype=float)
        svm_norm = float(np.linalg.norm(svm_reference))
        center_norm = (
            float(np.linalg.norm(reference[CENTERS_PART]))
            if len(reference) > CENTERS_PART
            else math.inf
        )
    else:
        # svm is 2-D, so its median over axis 0 is an array and never a float.
        svm_reference = cast(np.ndarray, lower_median(svm[honest], axis=0))
        svm_norm = lower_median(np.linalg.norm(svm[honest], axis=1))
        center_norm = (
            lower_median(np.linalg.norm(centers[honest], axis=1))
            if centers is not None
            else math.inf
        )
    if honest.sum() < 3 and reference is None:
        ones = np.ones(n_updates)
        return _Direction(svm_reference, svm_norm, center_norm, ones, ones, ones, ones)
    cosines = cosine_similarity(svm, svm_reference)
    weights = np.maximum(cosines, 0.0) if proportional else (cosines > 0).astype(float)
    if not weights[honest].any():
        # No update agrees with the reference (a reference of zeros, for
        # example): there is no direction to prefer.
        weights = np.ones(n_updates)
    clips = clip_factors(svm, ratio * svm_norm)
    center_clips = (
        clip_factors(centers, ratio * center_norm) if centers is not None else np.ones(n_updates)
    )
    return _Direction(svm_reference, svm_norm, center_norm, cosines, weights, clips, center_clips)


def score_updates(
    parts: Sequence[Sequence[np.ndarray]],
    baselines: Sequence[UpdateBaseline | None],
    repeated: Sequence[bool],
    typical: Sequence[bool] | np.ndarray | None = None,
    reference: Sequence[np.ndarray] | None = None,
    proportional: bool = False,
    clip_ratio: float | None = CLIP_RATIO,
    arrival: Sequence[int] | None = None,
    groups: Sequence[int] | None = None,
) -> list[UpdateScore]:
    """Score the updates of one kind in one round.

    Parameters:
        parts: for each update, the parts of ``update_parts``; the first is the
            SVM delta, of one shape for all updates.
        baselines: for each update, its sender's baseline, or None for a
            sender without history.
        repeated: for each update, whether it repeats an update sent against
            another model version.
        typical: for each update, whether its sender's data is typical of the
            kind (``typical_data``); None counts all as typical. Atypical
            updates weigh nothing and stay out of the reference and of the
            round's shared move; they are still compared with their history.
        reference: reference parts to compare with instead of the round's
            median delta and median norms, for example the coordinator's own
            update on calibration data as in FLTrust.
        proportional: weigh each update by its cosine with the reference, as
            FLTrust does, instead of 1 for a positive cosine and 0 otherwise.
        clip_ratio: bound each delta's pull to this multiple of the median norm
            (of the reference's norm when given); None bounds it to exactly
            that norm, the length to which FLTrust rescales updates.
        arrival: for each update, its rank in arrival order; only the later
            of two near copies is then marked (see ``near_duplicates``). None
            marks every member of a group of copies.
        groups: for each update, 0 if it was trained from the kind's model,
            or the index of the kind's regime it was trained from. A delta
            from another model is unlike the kind's deltas by its start, so
            copies are sought within a group only, and the check against the
            others' mean line measures group 0 only. Mark updates of a regime
            atypical in ``typical`` too. None puts every update in group 0.

    Returns:
        One UpdateScore per update, in order. Zero, repeated and copied
        updates stay out of the reference and of the usual distances. Zero
        and repeated ones get no evidence. A copy weighs nothing, and gets no
        evidence when it is also unlike its sender's history. With fewer than
        three other typical updates and no reference there is no majority:
        typical updates weigh 1 and their clip factors are 1.
    """
    n_updates = len(parts)
    in_bulk = np.ones(n_updates, dtype=bool) if typical is None else np.array(typical, dtype=bool)
    if not in_bulk.any():
        in_bulk[:] = True
    svm = np.vstack([p[SVM_PART] for p in parts])
    svm_norms = np.linalg.norm(svm, axis=1)

    # Zero, repeated and copied updates stay out of every robust statistic of
    # the round. Zero and repeated ones are known bad and lose all evidence.
    zero = svm_norms <= 1e-12
    group = np.zeros(n_updates, dtype=int) if groups is None else np.asarray(groups, dtype=int)
    copied = near_duplicates(svm, arrival=arrival, groups=group.tolist())
    repeats = np.asarray(repeated, dtype=bool)
    suspect = zero | copied | repeats
    honest_bulk = in_bulk & ~suspect
    if not honest_bulk.any():
        honest_bulk = in_bulk
    centers = (
        np.vstack([p[CENTERS_PART] for p in parts])
        if all(len(p) > CENTERS_PART for p in parts)
        else None
    )

    ratio = 1.0 if clip_ratio is None else clip_ratio
    direction = _round_direction(svm, centers, honest_bulk, reference, proportional, ratio)

    # A sender on probation lost its evidence in an earlier round. Its moves
    # would set the round's shared move and usual distance, and enough
    # attackers that keep attacking would hide each other behind them.
    probation = np.array([b is not None and b.probation > 0 for b in baselines], dtype=bool)
    watched = np.array([b is not None and b.watch > 0 for b in baselines], dtype=bool)
    deviations, distances = _deviations(parts, baselines, in_bulk, suspect | probation)
    evidence = np.ones(n_updates)
    reasons = [""] * n_updates
    for i, deviation in enumerate(deviations):
        if probation[i] and deviation > PROBATION_TOLERATED:
            # After an inconsistent update, straying again is no accident.
            evidence[i] = 0.0
            reasons[i] = (
                f"{deviation:.1f} times its usual distance from its own earlier updates, "
                "on probation after an inconsistent update"
            )
        elif watched[i] and deviation > DEVIATION_TOLERATED:
            # Two strays within a few updates are no accident either.
            evidence[i] = 0.0
            reasons[i] = (
                f"{deviation:.1f} times its usual distance from its own earlier updates, "
                "soon after another update that strayed"
            )
        elif deviation > DEVIATION_TOLERATED:
            evidence[i] = max(
                0.0,
                1.0
                - (deviation - DEVIATION_TOLERATED) / (DEVIATION_REJECTED - DEVIATION_TOLERATED),
            )
            reasons[i] = f"{deviation:.1f} times its usual distance from its own earlier updates"
    distance_ratios = np.full(n_updates, np.nan)
    if reference is None and honest_bulk.sum() >= 3:
        distances_to_reference = np.linalg.norm(svm - direction.reference, axis=1)
        # Two nodes that watch the same device send near-identical deltas; with
        # one more sender the median distance is then about 0, so it is floored.
        usual = max(
            lower_median(distances_to_reference[honest_bulk]),
            DEVIATION_FLOOR * lower_median(svm_norms[honest_bulk]),
            1e-12,
        )
        distance_ratios = distances_to_reference / usual
        for i in np.flatnonzero(in_bulk & (distance_ratios > FAR_DISTANCE)):
            evidence[i] = 0.0
            reasons[i] = (
                f"{distance_ratios[i]:.0f} times further from the round's median update than usual"
            )
    # Without a previous model (a kind's first round) the SVM part is the whole
    # model, not a delta. Models trained from scratch on data of one kind share
    # most of their weights, so honest ones sit close to the others' mean too.
    has_delta = np.array([len(p) > SVM_PART + 1 for p in parts], dtype=bool)
    # Updates that lost most of their evidence, boosted or flipped ones for
    # example, would drag the others' mean and spread towards themselves.
    # TODO: colluders that know an honest update can still place the others'
    # mean and spread onto it in the rare round in which it moved more than
    # MIMIC_MOVE. The dynamic-security roles keep nodes from reading each other's
    # updates, but a broker that gives every node the same rights does not.
    trusted_rows = honest_bulk & (evidence >= DOUBTFUL_EVIDENCE) & has_delta
    # Senders with atypical data are measured too, because the looser scale of
    # their history check would let a jump onto the others' mean pass.
    mimic = mimic_ratios(svm, trusted_rows, has_delta)
    mimic[group != 0] = np.nan
    moved = np.where(probation, MIMIC_MOVE_ON_PROBATION, MIMIC_MOVE)
    for i in np.flatnonzero((mimic < MIMIC_RATIO) & (deviations > moved)):
        evidence[i] = 0.0
        reasons[i] = (
            f"{mimic[i]:.2f} of the usual distance from the mean of the other updates "
            "shifted along their spread: it follows the round, not its own data"
        )
    for i in np.flatnonzero(copied & ((deviations > DEVIATION_TOLERATED) | ~in_bulk)):
        # A copy unlike its sender's history came from elsewhere. One in line with
        # the history, or without one, may come from a second node that watches
        # the same device, so it only weighs nothing. Charging a copy without a
        # history would also keep such a node from ever building one. Senders
        # with atypical data are compared with their history on a looser scale,
        # so their copies are charged whatever the history.
        evidence[i] = 0.0
        reasons[i] = "near-identical to another node's update, unlike its own earlier ones"
    for i in np.flatnonzero(repeats):
        evidence[i] = 0.0
        reasons[i] = "repeats an update sent for an earlier model version"
    for i in np.flatnonzero(zero):
        evidence[i] = 0.0
        reasons[i] = "zero update: the global model sent back unchanged"

    # Updates without evidence (far off, or unlike their sender's history)
    # still shifted the round's median and norms. A second pass without them
    # can only lower weights and clip factors, because an update keeps its
    # weight only if it agrees with both references. Attackers gain nothing
    # from it even when they make up half of what is left. At worst, honest
    # updates weigh less for that round.
    retained = honest_bulk & (evidence > 0)
    if reference is None and retained.sum() >= 3 and (retained != honest_bulk).any():
        second = _round_direction(svm, centers, retained, None, proportional, ratio)
        direction = _Direction(
            reference=second.reference,
            norm=min(second.norm, direction.norm),
            center_norm=min(second.center_norm, direction.center_norm),
            cosines=second.cosines,
            weights=second.weights * direction.weights,
            clips=np.minimum(second.clips, direction.clips),
            center_clips=np.minimum(second.center_clips, direction.center_clips),
        )
    weights = direction.weights.copy()
    weights[~in_bulk] = 0.0
    # The earlier of two near-identical updates counts once for both.
    weights[copied] = 0.0

    reference_norm = max(direction.norm, 1e-12)
    return [
        UpdateScore(
            cosine=float(direction.cosines[i]),
            norm_ratio=float(svm_norms[i] / reference_norm),
            distance_ratio=float(distance_ratios[i]),
            mimic_ratio=float(mimic[i]),
            deviation=float(deviations[i]),
            evidence=float(evidence[i]),
            weight=float(weights[i]),
            clip=float(direction.clips[i]),
            center_clip=float(direction.center_clips[i]),
            typical=bool(in_bulk[i]),
            distances=tuple(float(d) for d in distances[i]),
            reason=reasons[i],
            duplicate=bool(copied[i]),
        )
        for i in range(n_updates)
    ]


def relapsed(baseline: UpdateBaseline | None, score: UpdateScore) -> bool:
    """Return whether an update lost all evidence while its sender was on probation or under watch.

    ``baseline`` is the sender's baseline before the update. A sender that
    strays again before it has sent ``PROBATION_ROUNDS`` consistent updates
    is attacking on and off rather than having an odd round.
    """
    return (
        baseline is not None
        and (baseline.probation > 0 or baseline.watch > 0)
        and score.evidence <= 0.0
    )


def learn_baseline(
    baseline: UpdateBaseline | None, parts: Sequence[np.ndarray], score: UpdateScore
) -> UpdateBaseline | None:
    """Return a sender's baseline after its update with ``parts`` was scored ``score``.

    A sender without a fitting baseline starts from its update, unless the
    update had no evidence at all. An existing baseline and its usual
    distances move towards the update by ``BASELINE_RATE`` and ``SPREAD_RATE``
    times the update's evidence: fully for a consistent update, not at all
    for one without evidence. Honest nodes whose updates drift with the model
    catch up, and an attacker cannot drag its baseline along without losing
    trust on the way. An update that lost any evidence starts a probation of
    ``PROBATION_ROUNDS`` consistent updates, and each consistent update
    shortens it (see ``UpdateBaseline.probation``). One that kept its
    evidence but strayed beyond ``PROBATION_TOLERATED`` starts a watch of as
    many updates (see ``UpdateBaseline.watch``).
    """
    current = tuple(np.array(p, dtype=float) for p in parts)
    if baseline is None or not baseline.fits(current):
        return UpdateBaseline(current) if score.evidence > 0 else None
    probation = baseline.probation
    watch = baseline.watch
    if not math.isnan(score.deviation):
        probation = PROBATION_ROUNDS if score.evidence < 1.0 else max(probation - 1, 0)
        if score.evidence >= 1.0 and score.deviation > PROBATION_TOLERATED:
            watch = PROBATION_ROUNDS
        else:
            watch = max(watch - 1, 0)
    if score.evidence <= 0.0:
        return replace(baseline, probation=probation, watch=watch)
    rate = BASELINE_RATE * score.evidence
    moved = tuple(b + rate * (p - b) for b, p in zip(baseline.parts, current, strict=True))
    measured = [
        score.distances[i] if i < len(score.distances) else math.nan for i in range(len(current))
    ]
    if baseline.spreads is None:
        return UpdateBaseline(moved, tuple(measured), probation, watch)
    spreads = []
    for old, new in zip(baseline.spreads, measured, strict=True):
        if math.isnan(old):
            spreads.append(new)
        elif math.isnan(new):
            spreads.append(old)
        else:
            spreads.append(old + SPREAD_RATE * score.evidence * (new - old))
    return UpdateBaseline(moved, tuple(spreads), probation, watch)
