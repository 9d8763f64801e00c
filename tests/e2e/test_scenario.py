"""The demo's scenario, data preparation and acceptance targets, without processes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fltrust_core.security import generate_federation_key
from fltrust_lab import DEFAULT_SHARED_DATA
from fltrust_lab.datasets import nab_labels, shared_sets_present
from fltrust_lab.scenario import (
    MIN_ROUNDS,
    QUARANTINE_WITHIN_ROUNDS,
    compromise_round_for,
    plan_scenario,
)
from fltrust_lab.summary import check_targets

KEYS = (generate_federation_key(), generate_federation_key())


def test_nab_labels_match_windows() -> None:
    ambient = nab_labels("ambient")
    machine = nab_labels("machine")

    assert (len(ambient), sum(ambient)) == (7267, 726)
    assert (len(machine), sum(machine)) == (22695, 2268)


@pytest.mark.parametrize("rounds", [MIN_ROUNDS, 10, 12, 20])
def test_compromise_round_leaves_room(rounds: int) -> None:
    turned = compromise_round_for(rounds)

    assert turned >= 2
    assert turned + QUARANTINE_WITHIN_ROUNDS < rounds


def test_scenario_without_shared_data(tmp_path: Path) -> None:
    scenario = plan_scenario(
        tmp_path / "missing", tmp_path, KEYS, rounds=12, round_interval=12, round_timeout=8
    )
    nodes = scenario.nodes

    assert not scenario.uses_shared_data
    assert len(nodes) >= 5
    assert [node.node_id for _, node in nodes if node.compromised] == ["plant-machine-3"]
    assert {plan.settings.topic_prefix for plan in scenario.federations} == {
        "fltrust/home",
        "fltrust/plant",
    }
    for _, node in nodes:
        for device in node.devices:
            assert device.data.n_anomalies > 0, f"{node.node_id} replays no anomaly"
            # Every replay ends after (rounds - 1) round intervals.
            assert device.data.n_rows / device.rows_per_second == pytest.approx(11 * 12)


@pytest.mark.skipif(
    not all(shared_sets_present(DEFAULT_SHARED_DATA).values()),
    reason=f"shared TON_IoT and SKAB data not found in {DEFAULT_SHARED_DATA}",
)
def test_scenario_with_shared_data(tmp_path: Path) -> None:
    scenario = plan_scenario(
        DEFAULT_SHARED_DATA, tmp_path, KEYS, rounds=12, round_interval=12, round_timeout=8
    )
    compromised = [node.node_id for _, node in scenario.nodes if node.compromised]
    thermostat = next(
        node.devices[0].data for _, node in scenario.nodes if node.node_id == "home-thermostat"
    )
    with thermostat.path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    stamps = [row["timestamp"] for row in rows]

    assert scenario.uses_shared_data
    assert len(scenario.nodes) == 7
    assert compromised == ["plant-pump-3"]
    assert stamps == sorted(stamps)
    assert {row["thermostat_status"] for row in rows} <= {"0", "1"}
    assert all(value == value.strip() for row in rows for value in row.values())
    assert not list(Path(__file__).resolve().parents[2].glob("data/**/*ton_iot*"))


def _summary(nodes: list[dict], figures: dict | None = None) -> dict:
    device = {
        "node_id": "n1",
        "device_id": "d1",
        **(
            figures
            or dict.fromkeys(("auc", "precision", "recall", "f1", "fpr", "flag_all_f1"), 0.5)
        ),
    }
    return {"nodes": nodes, "devices": [device]}


def _node(node_id: str, compromised: bool, turned: int | None, caught: int | None) -> dict:
    return {
        "node_id": node_id,
        "compromised": compromised,
        "compromise_round": turned,
        "quarantined": caught is not None,
        "quarantined_at_round": caught,
    }


@pytest.mark.parametrize(
    ("caught", "passed"),
    [(5, True), (8, True), (9, False), (4, False), (None, False)],
)
def test_target_quarantine_within_rounds(caught: int | None, passed: bool) -> None:
    targets = check_targets(_summary([_node("bad", True, 5, caught)]))

    assert targets[0].name.startswith("compromised node quarantined")
    assert targets[0].passed is passed


def test_target_benign_node_quarantined() -> None:
    targets = {t.name: t for t in check_targets(_summary([_node("good", False, None, 6)]))}

    assert not targets["no benign node quarantined"].passed
    assert "good" in targets["no benign node quarantined"].detail


def test_target_missing_detection_figures() -> None:
    figures = {
        "auc": None,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "fpr": 0.0,
        "flag_all_f1": 0.5,
    }
    targets = {t.name: t for t in check_targets(_summary([], figures))}

    assert not targets["every device has detection figures"].passed
    assert "n1/d1" in targets["every device has detection figures"].detail
