"""Removing the device of an edge node taken out of service."""

from __future__ import annotations

import itertools
from typing import Any
from unittest.mock import MagicMock

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.fltrust.const import DOMAIN
from custom_components.fltrust.core import protocol

from .conftest import (
    ENTRY_ID,
    PREFIX,
    EdgeNode,
    advance,
)

# Longer than the time after which the test nodes count as disconnected (180 s).
SILENCE = 300


@pytest.fixture
async def federation(hass: HomeAssistant, quarantined_node: MockConfigEntry) -> MockConfigEntry:
    """Return the federation with node-1 quarantined and node-2 trusted, and the config API."""
    assert await async_setup_component(hass, "config", {})
    return quarantined_node


async def _remove(
    hass: HomeAssistant, hass_ws_client: WebSocketGenerator, device: dr.DeviceEntry
) -> dict[str, Any]:
    client = await hass_ws_client(hass)
    await client.send_json_auto_id(
        {
            "type": "config/device_registry/remove_config_entry",
            "config_entry_id": ENTRY_ID,
            "device_id": device.id,
        }
    )
    response = await client.receive_json()
    await hass.async_block_till_done()
    return response


def _device(device_registry: dr.DeviceRegistry, key: str) -> dr.DeviceEntry | None:
    return device_registry.async_get_device_by_identifier((DOMAIN, key), ENTRY_ID)


async def test_remove_silent_node(
    hass: HomeAssistant,
    federation: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
    frozen_time: FrozenDateTimeFactory,
    mqtt_mock: MagicMock,
    hass_storage: dict[str, Any],
) -> None:
    """Test a silent node's device, its watched devices and its record go away."""
    await advance(hass, frozen_time, SILENCE)
    node = _device(device_registry, f"{ENTRY_ID}_node-2")
    thermostat = _device(device_registry, f"{ENTRY_ID}_node-2_thermostat")
    assert thermostat is not None

    response = await _remove(hass, hass_ws_client, node)

    assert response["success"], response
    assert _device(device_registry, f"{ENTRY_ID}_node-2") is None
    assert _device(device_registry, f"{ENTRY_ID}_node-2_thermostat") is None
    assert not [
        entry
        for entry in er.async_entries_for_config_entry(entity_registry, ENTRY_ID)
        if entry.unique_id.startswith(f"{ENTRY_ID}_node-2")
    ]
    assert "node-2" not in hass_storage[f"{DOMAIN}.{ENTRY_ID}"]["data"]["nodes"]
    assert "node-2" in hass_storage[f"{DOMAIN}.{ENTRY_ID}"]["data"]["replay"]
    cleared = [
        call.args
        for call in mqtt_mock.async_publish.call_args_list
        if call.args[0] == protocol.command_topic(PREFIX, "node-2")
    ]
    assert cleared[-1][1:4] == (b"", 1, True)
    assert _device(device_registry, f"{ENTRY_ID}_node-1") is not None

    # A node that comes back starts over, with fresh entities. Its counter must
    # pass the one the federation kept.
    returning = EdgeNode(hass, "node-2")
    returning.counter = itertools.count(10**6)
    returning.send_heartbeat()
    await hass.async_block_till_done()
    assert hass.states.get("sensor.node_2_trust").state == "80.0"


@pytest.mark.parametrize(
    ("node_id", "wait", "message"),
    [("node-1", SILENCE, "is quarantined"), ("node-2", 0, "still sending messages")],
)
async def test_remove_refused(
    hass: HomeAssistant,
    federation: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    device_registry: dr.DeviceRegistry,
    frozen_time: FrozenDateTimeFactory,
    node_id: str,
    wait: float,
    message: str,
) -> None:
    """Test a quarantined or connected node keeps its device and its record."""
    await advance(hass, frozen_time, wait)
    node = _device(device_registry, f"{ENTRY_ID}_{node_id}")

    response = await _remove(hass, hass_ws_client, node)

    assert not response["success"]
    assert message in response["error"]["message"]
    assert _device(device_registry, f"{ENTRY_ID}_{node_id}") is not None
    assert node_id in federation.runtime_data.data.nodes


async def test_federation_device_stays(
    hass: HomeAssistant,
    federation: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Test the federation's own device cannot be removed."""
    response = await _remove(hass, hass_ws_client, _device(device_registry, ENTRY_ID))

    assert not response["success"]
    assert _device(device_registry, ENTRY_ID) is not None


async def test_remove_unwatched_device(
    hass: HomeAssistant,
    federation: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
    hass_storage: dict[str, Any],
) -> None:
    """Test a device its node stopped announcing can be deleted, a watched one cannot."""
    node = EdgeNode(hass, "node-2")
    node.counter = itertools.count(10**6)
    thermostat = EdgeNode.device("thermostat", "temperature", "Hall thermostat")
    porch = EdgeNode.device("porch", "temperature", "Porch sensor")
    node.send_heartbeat((thermostat, porch))
    await hass.async_block_till_done()
    node.send_heartbeat((thermostat,))
    await hass.async_block_till_done()

    response = await _remove(
        hass, hass_ws_client, _device(device_registry, f"{ENTRY_ID}_node-2_thermostat")
    )

    assert not response["success"]
    assert "still watches device thermostat" in response["error"]["message"]

    response = await _remove(
        hass, hass_ws_client, _device(device_registry, f"{ENTRY_ID}_node-2_porch")
    )

    assert response["success"], response
    assert _device(device_registry, f"{ENTRY_ID}_node-2_porch") is None
    assert not [
        entry
        for entry in er.async_entries_for_config_entry(entity_registry, ENTRY_ID)
        if entry.unique_id.startswith(f"{ENTRY_ID}_node-2_porch")
    ]
    stored = hass_storage[f"{DOMAIN}.{ENTRY_ID}"]["data"]["nodes"]["node-2"]["devices"]
    assert set(stored) == {"thermostat"}
    assert _device(device_registry, f"{ENTRY_ID}_node-2_thermostat") is not None
    assert hass.states.get("sensor.hall_thermostat_trust") is not None

    # Announced again, it comes back as a new device.
    node.send_heartbeat((thermostat, porch))
    await hass.async_block_till_done()
    assert _device(device_registry, f"{ENTRY_ID}_node-2_porch") is not None
    assert hass.states.get("sensor.porch_sensor_trust") is not None


async def test_remove_device_of_unknown_node(
    hass: HomeAssistant,
    federation: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Test devices of nodes the federation has no record of, as after a start over, can go."""
    stale_node = device_registry.async_get_or_create(
        config_entry_id=ENTRY_ID, identifiers={(DOMAIN, f"{ENTRY_ID}_gone")}, name="gone"
    )
    stale_device = device_registry.async_get_or_create(
        config_entry_id=ENTRY_ID,
        identifiers={(DOMAIN, f"{ENTRY_ID}_gone_sensor")},
        name="Gone sensor",
    )

    for device in (stale_device, stale_node):
        response = await _remove(hass, hass_ws_client, device)
        assert response["success"], response

    assert _device(device_registry, f"{ENTRY_ID}_gone") is None
    assert _device(device_registry, f"{ENTRY_ID}_gone_sensor") is None
    assert _device(device_registry, ENTRY_ID) is not None
