"""Sensors of fltrust: trust, anomaly score and the federation's figures."""

from __future__ import annotations

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import STATE_UNAVAILABLE, STATE_UNKNOWN, EntityCategory, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, snapshot_platform
from syrupy.assertion import SnapshotAssertion

from .conftest import ENTRY_ID, EdgeNode, advance


@pytest.fixture
def platforms() -> list[Platform]:
    """Set up only the sensor platform."""
    return [Platform.SENSOR]


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_sensors_snapshot(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
) -> None:
    """Test the sensors after a node and its device were discovered."""
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    node.send_state("thermostat", anomaly=True, score=0.82, threshold=0.5)
    await hass.async_block_till_done()

    await snapshot_platform(hass, entity_registry, snapshot, ENTRY_ID)


async def test_sensor_unique_ids(
    hass: HomeAssistant, init_integration: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    """Test the unique ids that automations, the demo and the end-to-end tests rely on."""
    EdgeNode(hass, "node-1").send_heartbeat()
    await hass.async_block_till_done()

    unique_ids = {
        entry.unique_id for entry in er.async_entries_for_config_entry(entity_registry, ENTRY_ID)
    }
    assert unique_ids == {
        f"{ENTRY_ID}_round",
        f"{ENTRY_ID}_model_version",
        f"{ENTRY_ID}_rejected_messages",
        f"{ENTRY_ID}_node-1_trust",
        f"{ENTRY_ID}_node-1_thermostat_trust",
        f"{ENTRY_ID}_node-1_thermostat_anomaly_score",
    }


async def test_federation_sensor_categories(
    hass: HomeAssistant, init_integration: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    """Test the round and model version are diagnostic, and rejected messages stay primary."""
    categories = {
        entry.unique_id: entry.entity_category
        for entry in er.async_entries_for_config_entry(entity_registry, ENTRY_ID)
    }

    assert categories[f"{ENTRY_ID}_round"] is EntityCategory.DIAGNOSTIC
    assert categories[f"{ENTRY_ID}_model_version"] is EntityCategory.DIAGNOSTIC
    assert categories[f"{ENTRY_ID}_rejected_messages"] is None


async def test_model_version_sensor_disabled_by_default(
    hass: HomeAssistant, init_integration: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    """Test only the model version sensor starts disabled, its value shown by the round sensor."""
    disabled = {
        entry.unique_id: entry.disabled_by
        for entry in er.async_entries_for_config_entry(entity_registry, ENTRY_ID)
    }

    assert disabled == {
        f"{ENTRY_ID}_round": None,
        f"{ENTRY_ID}_model_version": er.RegistryEntryDisabler.INTEGRATION,
        f"{ENTRY_ID}_rejected_messages": None,
    }
    assert hass.states.get("sensor.test_federation_model_version") is None
    assert hass.states.get("sensor.test_federation_round").attributes["model_version"] == 0


async def test_sensors_added_for_new_devices(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Test a device announced in a later heartbeat gets its sensors."""
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    await hass.async_block_till_done()
    assert hass.states.get("sensor.garage_door_trust") is None

    node.send_heartbeat(
        devices=(
            EdgeNode.device("thermostat", "temperature", "Hall thermostat"),
            EdgeNode.device("door", "contact", "Garage door"),
        )
    )
    await hass.async_block_till_done()

    assert hass.states.get("sensor.garage_door_trust").state == "80.0"
    assert hass.states.get("sensor.garage_door_anomaly_score").state == STATE_UNKNOWN


async def test_anomaly_score_unavailable_when_node_silent(
    hass: HomeAssistant, init_integration: MockConfigEntry, frozen_time: FrozenDateTimeFactory
) -> None:
    """Test the anomaly score goes unavailable after three missed heartbeats, trust does not."""
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    node.send_state("thermostat", anomaly=False, score=0.1)
    await hass.async_block_till_done()
    assert hass.states.get("sensor.hall_thermostat_anomaly_score").state == "0.1"

    # The heartbeat interval is 30 s, below the 60 s round interval: the node is
    # silent for more than 3 x 60 s.
    await advance(hass, frozen_time, 241)

    assert hass.states.get("sensor.hall_thermostat_anomaly_score").state == STATE_UNAVAILABLE
    assert hass.states.get("sensor.hall_thermostat_trust").state == "80.0"
    assert hass.states.get("sensor.node_1_trust").state == "80.0"

    node.send_heartbeat()
    await hass.async_block_till_done()
    assert hass.states.get("sensor.hall_thermostat_anomaly_score").state == "0.1"


async def test_rejected_messages_counted(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Test the federation counts every rejection, and the node only its own messages."""
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    node.send_raw(node.topic("heartbeat"), b"not json")
    node.send_raw(node.topic("heartbeat"), b"[]")
    node.send_state("fridge", anomaly=False, score=0.1)
    await hass.async_block_till_done()

    assert hass.states.get("sensor.test_federation_rejected_messages").state == "3"
    trust = hass.states.get("sensor.node_1_trust")
    assert trust.attributes["rejected"] == 1
    assert trust.attributes["last_rejection"] == (
        "unannounced_device: state for device 'fridge' that no heartbeat announced"
    )
