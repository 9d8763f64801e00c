"""The demo's round view, read from states shaped like Home Assistant's ``/api/states``."""

from __future__ import annotations

from typing import Any

import pytest

# The demo's tools talk to Home Assistant over aiohttp, which the edge venv lacks.
pytest.importorskip("aiohttp")

from fltrust_lab.hass import FederationSettings
from fltrust_lab.monitor import FederationMonitor
from fltrust_lab.nodes import NodeSpec
from fltrust_lab.scenario import FederationPlan

ENTRY_ID = "entry1"


def _monitor() -> FederationMonitor:
    settings = FederationSettings(
        name="Home",
        topic_prefix="fltrust/home",
        federation_key="k" * 32,
        round_interval=12,
        round_timeout=8,
        min_nodes=1,
    )
    plan = FederationPlan(settings=settings, nodes=(NodeSpec("n1", devices=()),))
    monitor = FederationMonitor(plan=plan, entry_id=ENTRY_ID)
    monitor.update_registry(
        [
            {"unique_id": f"{ENTRY_ID}_round", "entity_id": "sensor.home_round"},
            {"unique_id": f"{ENTRY_ID}_n1_trust", "entity_id": "sensor.n1_trust"},
            {"unique_id": f"{ENTRY_ID}_n1_quarantined", "entity_id": "binary_sensor.n1_q"},
        ]
    )
    return monitor


def _states(last_round: int | None, **attributes: Any) -> dict[str, dict[str, Any]]:
    return {
        "sensor.home_round": {
            "state": str(last_round or 0),
            "attributes": {"last_round": last_round, **attributes},
        },
        "sensor.n1_trust": {"state": "71.5", "attributes": {}},
        "binary_sensor.n1_q": {"state": "off", "attributes": {}},
    }


def test_row_recorded_once_per_closed_round() -> None:
    monitor = _monitor()

    first = monitor.observe(
        _states(3, model_version=2, last_round_duration=4.5, participants=["n1"], rejected=1)
    )
    repeated = monitor.observe(_states(3, model_version=2))
    nothing_closed = monitor.observe(_states(None))

    assert first is not None
    assert (first.round, first.model_version, first.duration) == (3, 2, 4.5)
    assert first.participants == ("n1",)
    assert first.trust == {"n1": 71.5}
    assert first.quarantined == {"n1": False}
    assert repeated is None
    assert nothing_closed is None
    assert len(monitor.rows) == 1


def test_model_version_missing_from_attributes() -> None:
    row = _monitor().observe(_states(1))

    assert row is not None
    assert row.model_version is None
