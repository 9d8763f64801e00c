"""Poisoning attacks on update arrays."""

from __future__ import annotations

import numpy as np
import pytest
from fltrust_core import attacks


@pytest.fixture
def updates() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3, 6))


def test_sign_flip_negates_and_scales(updates: np.ndarray) -> None:
    original = updates.copy()
    np.testing.assert_allclose(attacks.sign_flip(updates), -updates)
    np.testing.assert_allclose(attacks.sign_flip(updates, scale=4.0), -4.0 * updates)
    np.testing.assert_array_equal(updates, original)


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_sign_flip_rejects_non_positive_scale(updates: np.ndarray, scale: float) -> None:
    with pytest.raises(ValueError, match="scale must be positive"):
        attacks.sign_flip(updates, scale)


def test_scale_multiplies(updates: np.ndarray) -> None:
    np.testing.assert_allclose(attacks.scale(updates, 10.0), 10.0 * updates)


def test_updates_must_be_two_dimensional() -> None:
    with pytest.raises(ValueError, match=r"\(n_updates, n_parameters\)"):
        attacks.scale(np.ones(4))


def test_gaussian_noise_is_reproducible(updates: np.ndarray) -> None:
    first = attacks.gaussian_noise(updates, std=0.5, random_state=3)
    second = attacks.gaussian_noise(updates, std=0.5, random_state=3)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, updates)


def test_gaussian_noise_replace_ignores_updates(updates: np.ndarray) -> None:
    noise = attacks.gaussian_noise(updates, std=2.0, replace=True, random_state=1)
    same = attacks.gaussian_noise(np.zeros_like(updates), std=2.0, replace=True, random_state=1)
    np.testing.assert_array_equal(noise, same)


def test_gaussian_noise_std_statistics() -> None:
    noise = attacks.gaussian_noise(np.zeros((200, 500)), std=3.0, replace=True, random_state=0)
    assert noise.std() == pytest.approx(3.0, rel=0.01)
    assert abs(noise.mean()) < 0.05


def test_gaussian_noise_rejects_negative_std(updates: np.ndarray) -> None:
    with pytest.raises(ValueError, match="std"):
        attacks.gaussian_noise(updates, std=-1.0)


@pytest.mark.parametrize(
    ("n_updates", "n_malicious", "expected"),
    [(10, 1, -0.1397), (10, 2, 0.0), (10, 3, 0.1800), (10, 4, 0.4307), (50, 10, 0.2533)],
)
def test_lie_z_known_values(n_updates: int, n_malicious: int, expected: float) -> None:
    assert attacks.lie_z(n_updates, n_malicious) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(("n_updates", "n_malicious"), [(10, 0), (10, 10), (3, 5)])
def test_lie_z_rejects_bad_counts(n_updates: int, n_malicious: int) -> None:
    with pytest.raises(ValueError, match="n_malicious"):
        attacks.lie_z(n_updates, n_malicious)


def test_lie_z_rejects_attacker_majority() -> None:
    with pytest.raises(ValueError, match="no finite z"):
        attacks.lie_z(10, 6)


def test_lie_colluders_send_one_target() -> None:
    benign = np.random.default_rng(2).normal(size=(6, 5))
    poisoned = attacks.little_is_enough(benign, n_malicious=4)
    z = attacks.lie_z(10, 4)
    assert poisoned.shape == (4, 5)
    np.testing.assert_allclose(poisoned, np.tile(benign.mean(0) - z * benign.std(0), (4, 1)))
    explicit = attacks.little_is_enough(benign, n_malicious=2, z=1.5)
    np.testing.assert_allclose(explicit[0], benign.mean(0) - 1.5 * benign.std(0))


def test_lie_stays_inside_honest_spread() -> None:
    benign = np.random.default_rng(3).normal(size=(8, 40))
    poisoned = attacks.little_is_enough(benign, n_malicious=2)[0]
    assert np.all(poisoned >= benign.min(axis=0))
    assert np.all(poisoned <= benign.max(axis=0))


def test_frame_puts_mean_of_others_on_target() -> None:
    rng = np.random.default_rng(5)
    benign = rng.normal(size=(6, 20))
    target = rng.normal(size=20)

    colluders = attacks.frame(benign, target, n_malicious=3, random_state=1)

    assert colluders.shape == (3, 20)
    np.testing.assert_allclose(np.vstack([benign, colluders]).mean(axis=0), target)
    # The noise keeps them apart, so that they are no copies of each other.
    assert np.linalg.norm(colluders[0] - colluders[1]) > 0.1
    np.testing.assert_array_equal(
        attacks.frame(benign, target, n_malicious=3, random_state=1), colluders
    )


@pytest.mark.parametrize(
    ("target", "n_malicious", "relative_noise", "message"),
    [
        (np.zeros(4), 2, 0.3, "target has shape"),
        (np.zeros(20), 0, 0.3, "n_malicious"),
        (np.zeros(20), 2, -1.0, "relative_noise"),
    ],
)
def test_frame_rejects_bad_parameters(
    target: np.ndarray, n_malicious: int, relative_noise: float, message: str
) -> None:
    benign = np.random.default_rng(6).normal(size=(6, 20))
    with pytest.raises(ValueError, match=message):
        attacks.frame(benign, target, n_malicious, relative_noise)


def test_shift_features_moves_means_by_std() -> None:
    X = np.random.default_rng(4).normal(loc=5.0, scale=2.0, size=(300, 3))
    original = X.copy()
    shifted = attacks.shift_features(X, shift=3.0)
    np.testing.assert_allclose(shifted.mean(0) - X.mean(0), 3.0 * X.std(0))
    np.testing.assert_allclose(shifted.std(0), X.std(0))
    np.testing.assert_array_equal(X, original)


def test_shift_features_only_chosen_columns() -> None:
    X = np.random.default_rng(5).normal(size=(100, 3))
    shifted = attacks.shift_features(X, shift=2.0, columns=[1])
    np.testing.assert_array_equal(shifted[:, [0, 2]], X[:, [0, 2]])
    assert shifted[:, 1].mean() > X[:, 1].mean() + 1.9 * X[:, 1].std()


def test_shift_features_moves_constant_column() -> None:
    X = np.column_stack([np.full(10, 4.0), np.arange(10.0)])
    shifted = attacks.shift_features(X, shift=1.0)
    np.testing.assert_allclose(shifted[:, 0], 8.0)


def test_mislabel_mixes_the_requested_share() -> None:
    normal = np.zeros((100, 2))
    anomalous = np.ones((30, 2))
    mixed = attacks.mislabel(normal, anomalous, fraction=0.4, random_state=0)
    assert mixed.shape == normal.shape
    assert int(mixed[:, 0].sum()) == 40


def test_mislabel_draws_with_replacement_when_short() -> None:
    mixed = attacks.mislabel(np.zeros((50, 1)), np.ones((5, 1)), fraction=0.5, random_state=1)
    assert int(mixed.sum()) == 25


def test_mislabel_without_fraction_keeps_normal_rows() -> None:
    normal = np.arange(20.0).reshape(10, 2)
    mixed = attacks.mislabel(normal, np.ones((3, 2)), fraction=0.0, random_state=2)
    np.testing.assert_array_equal(np.sort(mixed, axis=0), normal)


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_mislabel_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        attacks.mislabel(np.zeros((4, 1)), np.ones((2, 1)), fraction)


def test_mislabel_rejects_feature_mismatch() -> None:
    with pytest.raises(ValueError, match="features"):
        attacks.mislabel(np.zeros((4, 2)), np.ones((2, 3)))


def test_free_ride_zero_and_stale(updates: np.ndarray) -> None:
    np.testing.assert_array_equal(attacks.free_ride(updates), np.zeros_like(updates))
    stale = updates[::-1].copy()
    copy = attacks.free_ride(updates, previous=stale)
    np.testing.assert_array_equal(copy, stale)
    copy[0, 0] += 1.0
    assert stale[0, 0] != copy[0, 0]


def test_free_ride_noise_disguises_copy(updates: np.ndarray) -> None:
    disguised = attacks.free_ride(updates, previous=updates, noise=1e-3, random_state=0)
    assert not np.array_equal(disguised, updates)
    np.testing.assert_allclose(disguised, updates, atol=1e-2)


def test_free_ride_rejects_shape_mismatch(updates: np.ndarray) -> None:
    with pytest.raises(ValueError, match="previous has shape"):
        attacks.free_ride(updates, previous=np.zeros((2, 6)))


def test_sybil_copies_target() -> None:
    target = np.arange(5.0)
    copies = attacks.sybil(target, 3)
    assert copies.shape == (3, 5)
    np.testing.assert_array_equal(copies, np.tile(target, (3, 1)))


def test_sybil_noise_keeps_copies_close() -> None:
    target = np.random.default_rng(6).normal(size=50)
    copies = attacks.sybil(target, 4, noise=1e-3, random_state=0)
    assert len({row.tobytes() for row in copies}) == 4
    assert np.abs(copies - target).max() < 1e-2


def test_sybil_rejects_no_copies() -> None:
    with pytest.raises(ValueError, match="n_sybils"):
        attacks.sybil(np.ones(3), 0)


def test_inflate_multiplies_counts() -> None:
    counts = np.array([10.0, 30.0])

    inflated = attacks.inflate(counts, 1000.0)

    np.testing.assert_array_equal(inflated, [10_000.0, 30_000.0])
    np.testing.assert_array_equal(counts, [10.0, 30.0])


@pytest.mark.parametrize("factor", [1.0, 0.5, -2.0])
def test_inflate_rejects_factor_not_above_one(factor: float) -> None:
    with pytest.raises(ValueError, match="invalid factor"):
        attacks.inflate(np.array([1.0]), factor)


def test_on_off_schedule() -> None:
    active = [attacks.on_off_active(r, start=4, on_rounds=2, off_rounds=1) for r in range(1, 12)]
    assert active == [False, False, False, True, True, False, True, True, False, True, True]


def test_on_off_without_pause_always_attacks() -> None:
    assert all(attacks.on_off_active(r, 2, on_rounds=1, off_rounds=0) for r in range(2, 9))


def test_on_off_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError, match="on_rounds"):
        attacks.on_off_active(5, 1, on_rounds=0)


def test_replay_picks_oldest_or_lag() -> None:
    history = [np.full(2, float(i)) for i in range(4)]
    assert attacks.replay(history) is history[0]
    assert attacks.replay(history, lag=1) is history[-1]
    assert attacks.replay(history, lag=3) is history[1]


def test_replay_rejects_empty_history_and_bad_lag() -> None:
    with pytest.raises(ValueError, match="history is empty"):
        attacks.replay([])
    with pytest.raises(ValueError, match="lag"):
        attacks.replay([np.zeros(2)], lag=2)
