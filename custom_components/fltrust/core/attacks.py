"""Poisoning attacks on federated updates, for benchmarks and simulated compromised nodes.

Every function is pure NumPy: it takes update arrays and the attack's
parameters and returns new arrays without changing its inputs. ``updates``
are arrays of shape (n_updates, n_parameters). Most attacks act on deltas,
the change an update proposes to the round's global model, so the caller
adds the global model back before sending. ``free_ride`` and ``replay`` act
on whatever the caller passes, usually full parameter vectors.

The attacks follow their usual definitions in the literature on Byzantine-
robust federated learning:

- ``sign_flip``: send the negated delta, optionally scaled.
- ``scale``: multiply the delta ("boosting", so that it outweighs honest
  updates in a weighted mean).
- ``gaussian_noise``: add Gaussian noise, or send pure noise.
- ``little_is_enough``: "a little is enough" (LIE, from Baruch, Baruch and
  Goldberg, "A Little Is Enough: Circumventing Defenses For Distributed
  Learning", NeurIPS 2019): every colluder sends ``mean - z * std`` of the
  benign deltas, coordinate by coordinate, with ``z`` small enough that the
  values stay inside the spread of honest updates.
- ``shift_features`` and ``mislabel``: data poisoning. The node trains on
  features shifted by some standard deviations, or on anomalous rows passed
  off as normal, and sends the resulting honest-looking update.
- ``free_ride``: send a zero delta (the global model unchanged) or a stale
  update without training.
- ``sybil``: colluding nodes send near-identical copies of one update.
- ``inflate``: claim many more samples than the update was trained on, so
  that a mean weighted by sample count favours it.
- ``on_off_active``: the schedule of an on-off attacker that alternates
  attack rounds with honest rounds.
- ``replay``: resend an update from an earlier round.
- ``frame``: colluders send whatever puts the mean of everyone else on an
  honest node's update, so that a defence which distrusts updates at the mean
  of the others turns against that node.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def _as_updates(updates: np.ndarray) -> np.ndarray:
    array = np.asarray(updates, dtype=float)
    if array.ndim != 2:
        raise ValueError(
            f"expected updates of shape (n_updates, n_parameters), got shape {array.shape}"
        )
    return array


def _rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def sign_flip(updates: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Return ``-scale * updates``.

    Parameters:
        updates: ndarray of shape (n_updates, n_parameters), usually deltas.
        scale: positive factor applied after the flip.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return -scale * _as_updates(updates)


def scale(updates: np.ndarray, factor: float = 10.0) -> np.ndarray:
    """Return ``factor * updates``, the boosting attack.

    Parameters:
        updates: ndarray of shape (n_updates, n_parameters), usually deltas.
        factor: multiplier; a factor near the number of nodes lets one update
            outweigh all the others in an unweighted mean.
    """
    return factor * _as_updates(updates)


def gaussian_noise(
    updates: np.ndarray,
    std: float = 1.0,
    replace: bool = False,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Return updates with Gaussian noise of standard deviation ``std`` added.

    Parameters:
        updates: ndarray of shape (n_updates, n_parameters).
        std: standard deviation of the noise in every coordinate.
        replace: send the noise alone instead of adding it to the updates.
        random_state: seed or generator of the noise.
    """
    updates = _as_updates(updates)
    if std < 0:
        raise ValueError(f"std must not be negative, got {std}")
    noise = _rng(random_state).normal(0.0, std, size=updates.shape)
    return noise if replace else updates + noise


def lie_z(n_updates: int, n_malicious: int) -> float:
    """Return the default ``z`` of LIE for ``n_malicious`` colluders among ``n_updates``.

    With ``s = floor(n / 2 + 1) - m`` honest supporters needed for a majority,
    ``z`` is the standard normal quantile of ``(n - m - s) / (n - m)``, the
    form that public implementations of the attack use. It is small, and
    negative for one attacker in ten.
    """
    if not 0 < n_malicious < n_updates:
        raise ValueError(f"need 0 < n_malicious < n_updates, got {n_malicious} and {n_updates}")
    supporters = n_updates // 2 + 1 - n_malicious
    quantile = (n_updates - n_malicious - supporters) / (n_updates - n_malicious)
    if not 0.0 < quantile < 1.0:
        raise ValueError(
            f"LIE has no finite z for {n_malicious} colluders among {n_updates} updates"
        )
    return NormalDist().inv_cdf(quantile)


def little_is_enough(benign: np.ndarray, n_malicious: int, z: float | None = None) -> np.ndarray:
    """Return the identical updates of ``n_malicious`` LIE colluders.

    Parameters:
        benign: ndarray of shape (n_benign, n_parameters), the honest deltas
            the colluders observed (LIE assumes they can see them).
        n_malicious: number of colluders.
        z: deviation in standard deviations; None takes ``lie_z`` for the
            federation of ``n_benign + n_malicious`` updates.

    Returns:
        ndarray of shape (n_malicious, n_parameters).
    """
    benign = _as_updates(benign)
    if n_malicious < 1:
        raise ValueError(f"n_malicious must be at least 1, got {n_malicious}")
    if z is None:
        z = lie_z(benign.shape[0] + n_malicious, n_malicious)
    target = benign.mean(axis=0) - z * benign.std(axis=0)
    return np.tile(target, (n_malicious, 1))


def shift_features(
    X: np.ndarray, shift: float = 3.0, columns: Sequence[int] | None = None
) -> np.ndarray:
    """Return training data shifted by ``shift`` standard deviations of each column.

    Parameters:
        X: ndarray of shape (n_samples, n_features) of the node's normal data.
        shift: offset in standard deviations of ``X`` itself.
        columns: indices of the shifted columns; None shifts all of them.
    """
    X = np.array(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"expected X of shape (n_samples, n_features), got shape {X.shape}")
    selected = np.arange(X.shape[1]) if columns is None else np.asarray(columns, dtype=int)
    spread = X[:, selected].std(axis=0)
    # A constant column still moves, by one unit of its value's magnitude.
    spread = np.where(spread > 0, spread, np.maximum(np.abs(X[:, selected].mean(axis=0)), 1.0))
    X[:, selected] += shift * spread
    return X


def mislabel(
    X_normal: np.ndarray,
    X_anomalous: np.ndarray,
    fraction: float = 0.5,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Return training data in which anomalous rows replace a share of the normal ones.

    The node labels them normal, so the model learns to accept them.

    Parameters:
        X_normal: ndarray of shape (n_samples, n_features).
        X_anomalous: ndarray of shape (n_anomalies, n_features); rows are
            drawn with replacement when there are fewer than needed.
        fraction: share of the returned rows that are anomalous, in [0, 1].
        random_state: seed or generator of the row choice.

    Returns:
        ndarray of shape (n_samples, n_features), in random order.
    """
    X_normal = _as_updates(X_normal)
    X_anomalous = _as_updates(X_anomalous)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if X_anomalous.shape[1] != X_normal.shape[1]:
        raise ValueError(
            f"X_anomalous has {X_anomalous.shape[1]} features, X_normal {X_normal.shape[1]}"
        )
    rng = _rng(random_state)
    n_samples = X_normal.shape[0]
    n_anomalous = round(fraction * n_samples) if X_anomalous.shape[0] else 0
    kept = rng.choice(n_samples, size=n_samples - n_anomalous, replace=False)
    added = rng.choice(
        X_anomalous.shape[0], size=n_anomalous, replace=n_anomalous > X_anomalous.shape[0]
    )
    mixed = np.vstack([X_normal[kept], X_anomalous[added]])
    return mixed[rng.permutation(n_samples)]


def free_ride(
    updates: np.ndarray,
    previous: np.ndarray | None = None,
    noise: float = 0.0,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Return the updates of free riders, who send something without training.

    Parameters:
        updates: ndarray of shape (n_updates, n_parameters), used for its
            shape when ``previous`` is None.
        previous: ndarray of the same shape holding stale updates (for
            example each node's submission of an earlier round); None sends
            zeros, which as deltas means "the global model unchanged".
        noise: standard deviation of Gaussian noise added to disguise the
            copy; 0 sends it exactly.
        random_state: seed or generator of the noise.
    """
    updates = _as_updates(updates)
    stale = np.zeros_like(updates) if previous is None else _as_updates(previous).copy()
    if stale.shape != updates.shape:
        raise ValueError(f"previous has shape {stale.shape}, expected {updates.shape}")
    if noise > 0:
        stale += _rng(random_state).normal(0.0, noise, size=stale.shape)
    return stale


def sybil(
    target: np.ndarray,
    n_sybils: int,
    noise: float = 0.0,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Return near-identical copies of ``target`` for ``n_sybils`` colluding nodes.

    Parameters:
        target: ndarray of shape (n_parameters,), the update the colluders push.
        n_sybils: number of copies.
        noise: standard deviation of the Gaussian noise that makes the copies
            differ; 0 sends identical copies.
        random_state: seed or generator of the noise.

    Returns:
        ndarray of shape (n_sybils, n_parameters).
    """
    target = np.asarray(target, dtype=float).reshape(-1)
    if n_sybils < 1:
        raise ValueError(f"n_sybils must be at least 1, got {n_sybils}")
    copies = np.tile(target, (n_sybils, 1))
    if noise > 0:
        copies += _rng(random_state).normal(0.0, noise, size=copies.shape)
    return copies


def inflate(counts: np.ndarray, factor: float = 1000.0) -> np.ndarray:
    """Return sample counts multiplied by ``factor``.

    FedAvg weighs each update by the sample count its sender claims, so a
    sender that claims ``factor`` times its real count outweighs the others
    without changing a single parameter. Sums over the samples (of feature
    values and their squares) scale the same way, which keeps the means and
    variances they describe.

    Parameters:
        counts: array of any shape: a sample count, centroid counts, or the
            count and sums of normalization statistics.
        factor: multiplier, above 1.
    """
    if not factor > 1:
        raise ValueError(f"invalid factor {factor}: expected a value above 1")
    inflated: np.ndarray = np.asarray(counts, dtype=float) * factor
    return inflated


def on_off_active(round_number: int, start: int, on_rounds: int = 2, off_rounds: int = 2) -> bool:
    """Return whether an on-off attacker attacks in ``round_number``.

    It is honest before ``start``, then attacks for ``on_rounds`` rounds and
    behaves for ``off_rounds`` rounds, over and over.
    """
    if on_rounds < 1 or off_rounds < 0:
        raise ValueError(
            f"need on_rounds >= 1 and off_rounds >= 0, got {on_rounds} and {off_rounds}"
        )
    if round_number < start:
        return False
    return (round_number - start) % (on_rounds + off_rounds) < on_rounds


def replay(history: Sequence[T], lag: int | None = None) -> T:
    """Return an earlier update to send again.

    Parameters:
        history: earlier updates of one node (or of any node whose messages
            the attacker captured), oldest first: arrays of shape
            (n_parameters,) or whole models.
        lag: how many rounds back; None replays the oldest.

    Returns:
        The chosen element of ``history`` itself, not a copy.
    """
    if not history:
        raise ValueError("history is empty: there is no earlier update to replay")
    if lag is None:
        return history[0]
    if not 1 <= lag <= len(history):
        raise ValueError(f"lag must be between 1 and {len(history)}, got {lag}")
    return history[-lag]


def frame(
    benign: np.ndarray,
    target: np.ndarray,
    n_malicious: int,
    relative_noise: float = 0.3,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Return colluder deltas that put the mean of everyone but ``target`` on ``target``.

    The colluders' deltas sum to ``(n_benign + n_malicious) * target - benign.sum(axis=0)``.
    Each one gets Gaussian noise of ``relative_noise`` times the benign
    coordinate-wise standard deviation, so that the colluders are not near
    copies of each other. The noise is centred over the colluders, which keeps
    the sum exact.

    Parameters:
        benign: ndarray of shape (n_benign, n_parameters), the other honest
            deltas of the round (the framed node's excluded).
        target: ndarray of shape (n_parameters,), the framed node's delta.
        n_malicious: number of colluders.
        relative_noise: noise per colluder, in benign standard deviations.
        random_state: seed or generator of the noise.

    Returns:
        ndarray of shape (n_malicious, n_parameters).
    """
    benign = _as_updates(benign)
    target = np.asarray(target, dtype=float)
    if target.shape != benign.shape[1:]:
        raise ValueError(f"target has shape {target.shape}, expected ({benign.shape[1]},)")
    if n_malicious < 1:
        raise ValueError(f"n_malicious must be at least 1, got {n_malicious}")
    if relative_noise < 0:
        raise ValueError(f"relative_noise must not be negative, got {relative_noise}")
    total = (benign.shape[0] + n_malicious) * target - benign.sum(axis=0)
    noise = _rng(random_state).normal(size=(n_malicious, target.size)) * benign.std(axis=0)
    noise = relative_noise * (noise - noise.mean(axis=0))
    malicious: np.ndarray = total / n_malicious + noise
    return malicious
