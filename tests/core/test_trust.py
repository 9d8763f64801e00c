"""Trust score dynamics."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fltrust_core.scoring import UpdateScore
from fltrust_core.trust import (
    GROWTH_WINDOW,
    DeviceTrust,
    NodeTrust,
    TrustChange,
    TrustConfig,
    TrustStatus,
)

CONFIG = TrustConfig()


def _warm(trust: NodeTrust, beats: int = 5) -> None:
    for _ in range(beats):
        trust.observe_heartbeat(100, 2, 0, 1000, 10.0)


def test_good_node_rises_slowly() -> None:
    trust = NodeTrust(score=CONFIG.initial_score)
    _warm(trust)
    scores = [trust.close_round("n", r, 0.0, CONFIG).score for r in range(1, 6)]
    assert scores == sorted(scores)
    assert scores[-1] < 95
    assert trust.status == TrustStatus.TRUSTED


def test_unknown_peer_surge_lowers_network_signal() -> None:
    trust = NodeTrust()
    _warm(trust)
    trust.observe_heartbeat(100, 2, 40, 1000, 10.0)
    assert trust.network < 0.01
    change = trust.close_round("n", 1, 0.0, CONFIG)
    assert change.score < CONFIG.initial_score - 10
    assert change.dropped
    assert change.reasons[0].startswith("network")


@pytest.mark.parametrize(
    ("previous", "score", "status", "dropped"),
    [
        (80.0, 79.0, TrustStatus.REAUTH_REQUIRED, True),
        (80.0, 65.0, TrustStatus.TRUSTED, True),
        (80.0, 75.0, TrustStatus.TRUSTED, False),
        # A threshold raised above the score changes the status while the score rises.
        (80.0, 82.0, TrustStatus.REAUTH_REQUIRED, False),
        (80.0, 80.0, TrustStatus.QUARANTINED, False),
    ],
)
def test_dropped_only_when_score_falls(
    previous: float, score: float, status: TrustStatus, dropped: bool
) -> None:
    change = TrustChange("n", previous, score, TrustStatus.TRUSTED, status, {}, [])

    assert change.dropped is dropped


def test_traffic_surge_lowers_network_signal() -> None:
    trust = NodeTrust()
    _warm(trust)
    trust.observe_heartbeat(100, 2, 0, 30000, 10.0)
    assert trust.network == pytest.approx(0.1)


def test_heartbeat_right_after_another_no_surge() -> None:
    trust = NodeTrust()
    _warm(trust)
    trust.observe_heartbeat(100, 2, 0, 200, 1e-3)
    assert trust.network == 1.0


def test_baseline_not_dragged_by_attack() -> None:
    trust = NodeTrust()
    _warm(trust)
    for _ in range(10):
        trust.observe_heartbeat(100, 2, 40, 1000, 10.0)
    assert trust.unknown_peers_mean < 1.0


def test_anomaly_burst_alone_does_not_quarantine() -> None:
    trust = NodeTrust()
    _warm(trust)
    for round_number in range(1, 20):
        trust.observe_heartbeat(100, 90, 0, 1000, 10.0)
        trust.close_round("n", round_number, 0.0, CONFIG)
    assert trust.behaviour == pytest.approx(0.2)
    assert trust.status != TrustStatus.QUARANTINED


def test_hysteresis_keeps_reauth_until_margin() -> None:
    trust = NodeTrust(score=58.0, status=TrustStatus.REAUTH_REQUIRED)
    _warm(trust)
    for round_number in range(1, 20):
        trust.close_round("n", round_number, 0.0, CONFIG)
        if trust.score < CONFIG.reauth_threshold + CONFIG.hysteresis:
            assert trust.status == TrustStatus.REAUTH_REQUIRED
    assert trust.status == TrustStatus.TRUSTED


def test_quarantine_is_sticky_until_release() -> None:
    trust = NodeTrust(score=20.0)
    trust.close_round("n", 1, 0.0, CONFIG)
    assert trust.status == TrustStatus.QUARANTINED
    assert trust.quarantined_round == 1
    frozen = trust.score
    for round_number in range(2, 40):
        trust.close_round("n", round_number, 1e6, CONFIG)
    assert trust.status == TrustStatus.QUARANTINED
    assert trust.score == frozen
    trust.release(CONFIG)
    assert trust.status == TrustStatus.REAUTH_REQUIRED
    assert trust.score == CONFIG.reauth_threshold - CONFIG.hysteresis


def test_security_events_fade_with_half_life() -> None:
    trust = NodeTrust()
    trust.record_event(0.0, "bad_signature", 2.0)
    fresh = trust.security_signal(0.0, CONFIG)
    later = trust.security_signal(CONFIG.event_half_life, CONFIG)
    assert fresh == pytest.approx(0.3679, abs=1e-4)
    assert later == pytest.approx(0.6065, abs=1e-4)


def test_on_off_attacker_loses_fast_regains_slowly() -> None:
    trust = NodeTrust()
    _warm(trust)
    for round_number in range(1, 10):
        trust.close_round("n", round_number, 0.0, CONFIG)
    high = trust.score
    trust.observe_integrity(0.0)
    dropped = trust.close_round("n", 10, 0.0, CONFIG).score
    assert high - dropped > 35
    trust.observe_integrity(1.0)
    recovered = trust.close_round("n", 11, 0.0, CONFIG).score
    assert recovered - dropped < 10


def _rounds(
    trust: NodeTrust, evidences: list[float], deviations: list[float] | None = None
) -> list[TrustChange]:
    """Close one round per evidence, each with one scored update of kind "k".

    Without ``deviations`` a full evidence comes with a deviation of 1 and
    any other with 5.
    """
    changes = []
    if deviations is None:
        deviations = [1.0 if evidence >= 1.0 else 5.0 for evidence in evidences]
    for evidence, deviation in zip(evidences, deviations, strict=True):
        score = UpdateScore(
            cosine=1.0,
            norm_ratio=1.0,
            deviation=deviation,
            evidence=evidence,
            weight=1.0,
            clip=1.0,
            center_clip=1.0,
            distances=(0.1,),
        )
        round_number = len(trust.history) + 1
        trust.observe_update("k", [np.ones(3)], score, f"digest-{round_number}", 1)
        trust.observe_integrity(evidence)
        changes.append(trust.close_round("n", round_number, 0.0, CONFIG))
    return changes


def test_relapse_on_probation_quarantines_at_once() -> None:
    trust = NodeTrust()
    _warm(trust)
    _rounds(trust, [1.0] * 5)

    # Less than half the evidence: a drop, and probation.
    [first] = _rounds(trust, [0.4])
    assert first.status == TrustStatus.TRUSTED
    assert trust.update_baseline("k").probation > 0

    # The score alone would stay above the quarantine threshold.
    alone = NodeTrust.from_dict(trust.to_dict())
    alone.update_baselines = {}
    alone.observe_integrity(0.0)
    assert alone.close_round("n", 7, 0.0, CONFIG).score > CONFIG.quarantine_threshold

    [second] = _rounds(trust, [0.0])
    assert second.status == TrustStatus.QUARANTINED
    assert second.score <= CONFIG.quarantine_threshold
    assert second.reasons[0] == "inconsistent update soon after another"


def test_relapse_under_watch_quarantines_at_once() -> None:
    trust = NodeTrust()
    _warm(trust)
    _rounds(trust, [1.0] * 5)

    # A stray within the tolerance keeps its evidence but starts a watch.
    [first] = _rounds(trust, [1.0], [2.5])
    assert first.status == TrustStatus.TRUSTED
    assert trust.update_baseline("k").watch > 0
    assert trust.update_baseline("k").probation == 0

    [second] = _rounds(trust, [0.0], [3.5])
    assert second.status == TrustStatus.QUARANTINED
    assert second.reasons[0] == "inconsistent update soon after another"


def test_consistent_updates_end_probation() -> None:
    trust = NodeTrust()
    _warm(trust)
    _rounds(trust, [1.0, 1.0, 1.0, 0.4, 1.0, 1.0, 1.0])
    assert trust.update_baseline("k").probation == 0

    [change] = _rounds(trust, [0.0])
    assert change.status == TrustStatus.REAUTH_REQUIRED
    assert "relapsed" not in trust.to_dict()


@pytest.mark.parametrize(
    "stored",
    [{"spreads": None}, {"parts": [[0.5]], "watch": "soon"}, {"parts": 3}],
    ids=["parts", "watch", "shape"],
)
def test_invalid_stored_baseline_fails_restore(stored: dict[str, Any]) -> None:
    data = NodeTrust(update_baselines={"pump": stored}).to_dict()
    with pytest.raises(ValueError, match="invalid stored update baseline of kind pump"):
        NodeTrust.from_dict(data)


def test_storage_round_trip() -> None:
    trust = NodeTrust()
    _warm(trust)
    trust.record_event(5.0, "replayed", 0.5, "counter 3")
    trust.close_round("n", 1, 5.0, CONFIG)
    assert NodeTrust.from_dict(trust.to_dict()) == trust


def test_device_trust_drops_while_anomalous() -> None:
    device = DeviceTrust()
    for _ in range(30):
        device.observe_state(False)
    assert device.score(90.0) == pytest.approx(90.0)
    for _ in range(20):
        device.observe_state(True)
    assert device.score(90.0) < 40.0


def test_growth_restarts_only_in_first_updates() -> None:
    baseline = {"parts": [[0.5, -0.25]], "spreads": None, "probation": 0}
    trust = NodeTrust(update_baselines={"pump": baseline}, update_samples={"pump": [100, 3]})

    assert not trust.grown_data("pump", 125)
    assert trust.grown_data("pump", 126)
    assert not trust.grown_data("heater", 1000)
    trust.update_samples["pump"] = [100, GROWTH_WINDOW]
    assert not trust.grown_data("pump", 1000)
    restored = NodeTrust.from_dict(json.loads(json.dumps(trust.to_dict())))
    assert restored.update_samples == {"pump": [100, GROWTH_WINDOW]}


def test_release_forgets_typical_kinds() -> None:
    trust = NodeTrust(status=TrustStatus.QUARANTINED, typical_kinds={"pump": True})

    trust.release(TrustConfig())

    # A node whose device moved to another operating regime may then train the regime.
    assert trust.typical_kinds == {}
