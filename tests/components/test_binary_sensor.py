"""Binary sensors of fltrust: quarantine, re-authentication, connectivity and anomaly."""

from __future__ import annotations

import logging

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.binary_sensor import BinarySensorDeviceClass
from homeassistant.const import (
    ATTR_DEVICE_CLASS,
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
    Platform,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, snapshot_platform
from syrupy.assertion import SnapshotAssertion

from .conftest import ENTRY_ID, EdgeNode, advance


@pytest.fixture
def platforms() -> list[Platform]:
    """Set up only the binary sensor platform."""
    return [Platform.BINARY_SENSOR]


async def test_binary_sensors_snapshot(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
) -> None:
    """Test the binary sensors after a node and its device were discovered."""
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    node.send_state("thermostat", anomaly=True, score=0.82, threshold=0.5)
    await hass.async_block_till_done()

    await snapshot_platform(hass, entity_registry, snapshot, ENTRY_ID)


async def test_binary_sensor_unique_ids(
    hass: HomeAssistant, init_integration: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    """Test the unique ids that automations, the demo and the end-to-end tests rely on."""
    EdgeNode(hass, "node-1").send_heartbeat()
    await hass.async_block_till_done()

    unique_ids = {
        entry.unique_id for entry in er.async_entries_for_config_entry(entity_registry, ENTRY_ID)
    }
    assert unique_ids == {
        f"{ENTRY_ID}_node-1_quarantined",
        f"{ENTRY_ID}_node-1_reauth_required",
        f"{ENTRY_ID}_node-1_connected",
        f"{ENTRY_ID}_node-1_thermostat_anomaly",
    }


async def test_binary_sensor_device_classes(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Test the node and device status sensors carry the problem or connectivity class."""
    EdgeNode(hass, "node-1").send_heartbeat()
    await hass.async_block_till_done()

    expected = {
        "binary_sensor.node_1_quarantined": BinarySensorDeviceClass.PROBLEM,
        "binary_sensor.node_1_re_authentication_required": BinarySensorDeviceClass.PROBLEM,
        "binary_sensor.node_1_connectivity": BinarySensorDeviceClass.CONNECTIVITY,
        "binary_sensor.hall_thermostat_anomaly": BinarySensorDeviceClass.PROBLEM,
    }
    for entity_id, device_class in expected.items():
        state = hass.states.get(entity_id)
        assert state is not None, entity_id
        assert state.attributes.get(ATTR_DEVICE_CLASS) == device_class, entity_id


async def test_anomaly_unknown_before_first_state(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Test the anomaly sensor is unknown until the node reports the device's state."""
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.hall_thermostat_anomaly").state == STATE_UNKNOWN

    node.send_state("thermostat", anomaly=False, score=0.1)
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.hall_thermostat_anomaly").state == STATE_OFF

    node.send_state("thermostat", anomaly=True, score=0.9)
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.hall_thermostat_anomaly").state == STATE_ON


async def test_silent_node_disconnected(
    hass: HomeAssistant, init_integration: MockConfigEntry, frozen_time: FrozenDateTimeFactory
) -> None:
    """Test a node silent for three heartbeat intervals is disconnected, and back when heard.

    Its 30 s heartbeat interval is below the 60 s round interval, so three
    round intervals count.
    """
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    node.send_state("thermostat", anomaly=True, score=0.9)
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.node_1_connectivity").state == STATE_ON

    # The round timer ticks every 60 s; at 180 s the node is still within 3 x 60 s.
    await advance(hass, frozen_time, 180)
    assert hass.states.get("binary_sensor.node_1_connectivity").state == STATE_ON

    await advance(hass, frozen_time, 60)
    assert hass.states.get("binary_sensor.node_1_connectivity").state == STATE_OFF
    assert hass.states.get("binary_sensor.hall_thermostat_anomaly").state == STATE_UNAVAILABLE
    assert hass.states.get("binary_sensor.node_1_quarantined").state == STATE_OFF

    node.send_heartbeat()
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.node_1_connectivity").state == STATE_ON
    assert hass.states.get("binary_sensor.hall_thermostat_anomaly").state == STATE_ON


async def test_disconnect_logged_once(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    frozen_time: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test a node going silent is logged once at info level, and so is its return."""
    caplog.set_level(logging.INFO, logger="custom_components.fltrust")
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    await hass.async_block_till_done()

    def messages(text: str) -> list[logging.LogRecord]:
        return [record for record in caplog.records if text in record.getMessage()]

    await advance(hass, frozen_time, 180)
    assert messages("node-1 sent no message") == []

    # The node stays silent for three more round ticks, and only the first one logs it.
    for _ in range(3):
        await advance(hass, frozen_time, 60)
    disconnected = messages("node-1 sent no message for more than 180 s")
    assert len(disconnected) == 1
    assert disconnected[0].levelno == logging.INFO
    assert messages("node-1 is connected again") == []

    node.send_heartbeat()
    await hass.async_block_till_done()
    await advance(hass, frozen_time, 60)
    reconnected = messages("node-1 is connected again")
    assert len(reconnected) == 1
    assert reconnected[0].levelno == logging.INFO
    assert len(messages("node-1 sent no message")) == 1


async def test_first_heartbeat_keeps_node_connected(
    hass: HomeAssistant, init_integration: MockConfigEntry, frozen_time: FrozenDateTimeFactory
) -> None:
    """Test the first heartbeat, which reports an interval close to 0, does not flap the node."""
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat(interval=0.001)
    await hass.async_block_till_done()

    await advance(hass, frozen_time, 60)
    assert hass.states.get("binary_sensor.node_1_connectivity").state == STATE_ON
    await advance(hass, frozen_time, 120)
    assert hass.states.get("binary_sensor.node_1_connectivity").state == STATE_ON

    await advance(hass, frozen_time, 60)
    assert hass.states.get("binary_sensor.node_1_connectivity").state == STATE_OFF


async def test_claimed_long_interval_capped(
    hass: HomeAssistant, init_integration: MockConfigEntry, frozen_time: FrozenDateTimeFactory
) -> None:
    """Test a heartbeat that claims a huge interval keeps its node connected for 3 hours at most."""
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat(interval=1e308)
    await hass.async_block_till_done()

    await advance(hass, frozen_time, 3 * 3600 - 60)
    assert hass.states.get("binary_sensor.node_1_connectivity").state == STATE_ON

    await advance(hass, frozen_time, 120)
    assert hass.states.get("binary_sensor.node_1_connectivity").state == STATE_OFF
