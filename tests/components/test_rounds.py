"""Federated rounds: announcement, aggregation, deadlines, poisoning, quarantine and release."""

from __future__ import annotations

from unittest.mock import MagicMock

import numpy as np
import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.fltrust.const import (
    DOMAIN,
    EVENT_QUARANTINED,
    EVENT_RELEASED,
    EVENT_TRUST_DROPPED,
)
from custom_components.fltrust.core import protocol, security

from .conftest import (
    ENTRY_ID,
    PARAMS,
    PREFIX,
    ROUND_INTERVAL,
    ROUND_TIMEOUT,
    EdgeNode,
    advance,
    kind_model,
    now,
    published,
    send_poisoned_rounds,
)

NODE_IDS = ("node-a", "node-b", "node-c")
# Trust after one good round: the initial 80 moves a tenth of the way to the raw score 100.
TRUST_AFTER_GOOD_ROUND = 82.0


def _verify_downlink(hass: HomeAssistant, envelope: dict) -> None:
    """Check a coordinator message's Ed25519 signature with the entry's public key."""
    entry = hass.config_entries.async_get_entry(ENTRY_ID)
    public_key = security.load_public_key(entry.runtime_data.public_key)
    security.verify_ed25519(public_key, envelope)


async def _join(hass: HomeAssistant, node_ids: tuple[str, ...] = NODE_IDS) -> list[EdgeNode]:
    nodes = [EdgeNode(hass, node_id) for node_id in node_ids]
    for node in nodes:
        node.send_heartbeat()
    await hass.async_block_till_done()
    return nodes


async def test_round_aggregates_weighted_mean(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mqtt_mock: MagicMock,
    frozen_time: FrozenDateTimeFactory,
) -> None:
    """Test three updates close the round and the model is their weighted mean."""
    nodes = await _join(hass)

    await advance(hass, frozen_time, ROUND_INTERVAL)

    announcements = published(mqtt_mock, protocol.round_topic(PREFIX))
    assert len(announcements) == 1
    announcement, qos, retain = announcements[0]
    assert retain is True
    assert qos == 1
    _verify_downlink(hass, announcement)
    assert announcement["body"]["round"] == 1
    assert announcement["body"]["deadline"] == now() + ROUND_TIMEOUT
    assert announcement["body"]["params"] == PARAMS.as_dict()
    assert hass.states.get("sensor.test_federation_round").state == "1"
    assert hass.states.get("sensor.test_federation_round").attributes["round_open"] is True

    rng = np.random.default_rng(3)
    base = rng.normal(size=PARAMS.rff_components)
    sent = {
        "node-a": (base + 0.05 * rng.normal(size=base.size), 0.40, 100),
        "node-b": (base + 0.05 * rng.normal(size=base.size), 0.50, 300),
        "node-c": (base + 0.05 * rng.normal(size=base.size), 0.70, 600),
    }
    frozen_time.tick(5)
    for node in nodes:
        coef, offset, n_samples = sent[node.node_id]
        node.send_update(1, kind_model(coef, offset, n_samples))
    await hass.async_block_till_done()

    models = published(mqtt_mock, protocol.model_topic(PREFIX))
    # The first model message is the retained version 0 published at start-up.
    assert len(models) == 2
    model, qos, retain = models[-1]
    assert retain is True
    assert qos == 1
    _verify_downlink(hass, model)
    body = model["body"]
    assert body["version"] == 1
    assert body["round"] == 1
    assert body["contributors"] == dict.fromkeys(NODE_IDS, TRUST_AFTER_GOOD_ROUND / 100)

    # FedAvg: each update weighs its sample count times its sender's trust weight.
    weights = np.array([sent[n][2] * body["contributors"][n] for n in NODE_IDS])
    coefs = np.array([sent[n][0] for n in NODE_IDS])
    offsets = np.array([sent[n][1] for n in NODE_IDS])
    expected_coef = (weights[:, None] * coefs).sum(axis=0) / weights.sum()
    expected_offset = float((weights * offsets).sum() / weights.sum())
    aggregated = body["kinds"]["temperature"]
    np.testing.assert_allclose(aggregated["svm"]["coef"], expected_coef, rtol=1e-12)
    assert aggregated["svm"]["offset"] == pytest.approx(expected_offset, rel=1e-12)
    assert aggregated["n_samples"] == 1000
    # Normalization statistics are summed with the trust weights alone.
    expected_count = sum(sent[n][2] * body["contributors"][n] for n in NODE_IDS)
    assert aggregated["stats"]["count"] == pytest.approx(expected_count, rel=1e-12)

    round_state = hass.states.get("sensor.test_federation_round")
    assert round_state.state == "1"
    assert round_state.attributes["round_open"] is False
    assert round_state.attributes["last_round_duration"] == 5.0
    assert round_state.attributes["participants"] == list(NODE_IDS)
    assert round_state.attributes["dropped"] == []
    assert round_state.attributes["aggregated"] is True
    assert round_state.attributes["model_version"] == 1
    assert hass.states.get("sensor.node_a_trust").state == str(TRUST_AFTER_GOOD_ROUND)


async def test_round_closes_at_deadline(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mqtt_mock: MagicMock,
    frozen_time: FrozenDateTimeFactory,
) -> None:
    """Test a round missing one update waits for its deadline, then aggregates the others."""
    nodes = await _join(hass)
    await advance(hass, frozen_time, ROUND_INTERVAL)
    for node in nodes[:2]:
        node.send_update(1, kind_model(np.ones(PARAMS.rff_components)))
    await hass.async_block_till_done()
    assert len(published(mqtt_mock, protocol.model_topic(PREFIX))) == 1

    await advance(hass, frozen_time, ROUND_TIMEOUT - 1)
    assert len(published(mqtt_mock, protocol.model_topic(PREFIX))) == 1

    await advance(hass, frozen_time, 1)

    models = published(mqtt_mock, protocol.model_topic(PREFIX))
    assert len(models) == 2
    assert models[-1][0]["body"]["version"] == 1
    assert sorted(models[-1][0]["body"]["contributors"]) == ["node-a", "node-b"]
    round_state = hass.states.get("sensor.test_federation_round")
    assert round_state.attributes["participants"] == ["node-a", "node-b"]
    assert round_state.attributes["last_round_duration"] == float(ROUND_TIMEOUT)


async def test_unload_during_round_logs_discarded_updates(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mqtt_mock: MagicMock,
    frozen_time: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test unloading with a round open logs that the round ends without a model."""
    nodes = await _join(hass)
    await advance(hass, frozen_time, ROUND_INTERVAL)
    nodes[0].send_update(1, kind_model(np.ones(PARAMS.rff_components)))
    await hass.async_block_till_done()

    assert await hass.config_entries.async_unload(init_integration.entry_id)
    await hass.async_block_till_done()

    assert "Round 1 ends without a model because the coordinator stops" in caplog.text
    assert "the 1 update(s) it received are discarded" in caplog.text
    assert len(published(mqtt_mock, protocol.model_topic(PREFIX))) == 1


async def test_round_below_quorum_keeps_model(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mqtt_mock: MagicMock,
    frozen_time: FrozenDateTimeFactory,
) -> None:
    """Test a round with fewer updates than the minimum nodes does not change the model."""
    nodes = await _join(hass, ("node-a", "node-b"))
    await advance(hass, frozen_time, ROUND_INTERVAL)
    nodes[0].send_update(1, kind_model(np.ones(PARAMS.rff_components)))
    await advance(hass, frozen_time, ROUND_TIMEOUT)

    assert len(published(mqtt_mock, protocol.model_topic(PREFIX))) == 1
    round_state = hass.states.get("sensor.test_federation_round")
    assert round_state.attributes["aggregated"] is False
    assert round_state.attributes["model_version"] == 0


async def test_no_round_without_active_nodes(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mqtt_mock: MagicMock,
    frozen_time: FrozenDateTimeFactory,
) -> None:
    """Test the round timer announces nothing while no node is active."""
    await advance(hass, frozen_time, ROUND_INTERVAL)

    assert published(mqtt_mock, protocol.round_topic(PREFIX)) == []
    assert hass.states.get("sensor.test_federation_round").state == "0"


async def test_poisoned_update_quarantines_node(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mqtt_mock: MagicMock,
    frozen_time: FrozenDateTimeFactory,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Test a sign-flipped update scaled by ten drops trust, then quarantines, then release."""
    dropped = async_capture_events(hass, EVENT_TRUST_DROPPED)
    quarantined = async_capture_events(hass, EVENT_QUARANTINED)
    released = async_capture_events(hass, EVENT_RELEASED)
    nodes = await _join(hass)

    rounds_until_quarantine, base = await send_poisoned_rounds(
        hass, frozen_time, nodes, "node-c", seed=5, n_samples=200, until=lambda: bool(quarantined)
    )

    node_c_device = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{ENTRY_ID}_node-c"), ENTRY_ID
    )
    assert dropped
    assert {event.data["node_id"] for event in dropped} == {"node-c"}
    first_drop = dropped[0].data
    assert first_drop["config_entry_id"] == ENTRY_ID
    assert first_drop["device_id"] == node_c_device.id
    assert first_drop["round"] == 1
    assert first_drop["trust"] < first_drop["previous_trust"]
    assert first_drop["previous_trust"] == 80.0
    assert first_drop["status"] == "reauth_required"
    assert any(reason.startswith("integrity") for reason in first_drop["reasons"])

    assert len(quarantined) == 1
    assert rounds_until_quarantine <= 3
    quarantine = quarantined[0].data
    assert quarantine["node_id"] == "node-c"
    assert quarantine["device_id"] == node_c_device.id
    assert quarantine["trust"] < 30
    assert quarantine["status"] == "quarantined"
    assert quarantine["reasons"]

    assert hass.states.get("binary_sensor.node_c_quarantined").state == STATE_ON
    assert hass.states.get("sensor.node_c_trust").attributes["status"] == "quarantined"
    assert hass.states.get("binary_sensor.node_a_quarantined").state == STATE_OFF
    assert float(hass.states.get("sensor.node_a_trust").state) > 80
    commands = [
        (envelope["body"]["action"], retain)
        for envelope, _, retain in published(mqtt_mock, protocol.command_topic(PREFIX, "node-c"))
    ]
    assert ("quarantine", True) in commands

    # Updates of a quarantined node no longer count, and are not waited for.
    await advance(hass, frozen_time, ROUND_INTERVAL)
    next_round = rounds_until_quarantine + 1
    for node in nodes:
        node.send_update(next_round, kind_model(base, n_samples=200))
    await hass.async_block_till_done()
    round_state = hass.states.get("sensor.test_federation_round")
    assert round_state.attributes["last_round"] == next_round
    assert round_state.attributes["participants"] == ["node-a", "node-b"]

    await hass.services.async_call(
        DOMAIN,
        "release",
        {"config_entry_id": ENTRY_ID, "node_id": "node-c"},
        blocking=True,
    )
    await hass.async_block_till_done()

    assert len(released) == 1
    release = released[0].data
    assert release["node_id"] == "node-c"
    assert release["device_id"] == node_c_device.id
    assert release["previous_trust"] < 30
    assert release["trust"] == 55.0
    assert release["status"] == "reauth_required"
    assert release["round"] == next_round
    assert hass.states.get("binary_sensor.node_c_quarantined").state == STATE_OFF
    assert hass.states.get("binary_sensor.node_c_re_authentication_required").state == STATE_ON
    commands = [
        envelope["body"]
        for envelope, _, _ in published(mqtt_mock, protocol.command_topic(PREFIX, "node-c"))
    ]
    assert commands[-2]["action"] == "release"
    assert commands[-1]["action"] == "reauthenticate"
    assert len(commands[-1]["nonce"]) == 32
    for envelope, _, _ in published(mqtt_mock, protocol.command_topic(PREFIX, "node-c")):
        _verify_downlink(hass, envelope)
