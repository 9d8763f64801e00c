"""Device triggers of edge nodes: trust dropped and quarantined."""

from __future__ import annotations

from typing import Any
from unittest.mock import MagicMock

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components import automation
from homeassistant.components.device_automation import DeviceAutomationType
from homeassistant.components.device_automation.exceptions import InvalidDeviceAutomationConfig
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_get_device_automations,
    async_mock_service,
)

from custom_components.fltrust.const import DOMAIN, EVENT_QUARANTINED
from custom_components.fltrust.device_trigger import async_validate_trigger_config

from .conftest import ENTRY_ID, EdgeNode, send_poisoned_rounds


@pytest.fixture
def automation_calls(hass: HomeAssistant) -> list[ServiceCall]:
    """Record the calls of the automations' test action."""
    return async_mock_service(hass, "test", "automation")


def _device(device_registry: dr.DeviceRegistry, key: str) -> dr.DeviceEntry:
    device = device_registry.async_get_device_by_identifier((DOMAIN, key), ENTRY_ID)
    assert device is not None
    return device


async def _add_automations(hass: HomeAssistant, device_id: str) -> None:
    """Add one automation per trigger type that records the event it saw."""
    assert await async_setup_component(
        hass,
        automation.DOMAIN,
        {
            automation.DOMAIN: [
                {
                    "triggers": {
                        "platform": "device",
                        "domain": DOMAIN,
                        "device_id": device_id,
                        "type": trigger_type,
                    },
                    "actions": {
                        "action": "test.automation",
                        "data": {
                            "type": trigger_type,
                            "node_id": "{{ trigger.event.data.node_id }}",
                            "trust": "{{ trigger.event.data.trust }}",
                        },
                    },
                }
                for trigger_type in ("trust_dropped", "quarantined")
            ]
        },
    )


async def test_node_device_triggers(
    hass: HomeAssistant, init_integration: MockConfigEntry, device_registry: dr.DeviceRegistry
) -> None:
    """Test node devices offer both triggers, and other devices none."""
    EdgeNode(hass, "node-1").send_heartbeat()
    await hass.async_block_till_done()
    node = _device(device_registry, f"{ENTRY_ID}_node-1")

    triggers = await async_get_device_automations(hass, DeviceAutomationType.TRIGGER, node.id)

    assert sorted(
        (trigger["type"], trigger["domain"], trigger["device_id"], trigger["platform"])
        for trigger in triggers
        if trigger["domain"] == DOMAIN
    ) == [
        ("quarantined", DOMAIN, node.id, "device"),
        ("trust_dropped", DOMAIN, node.id, "device"),
    ]
    for key in (ENTRY_ID, f"{ENTRY_ID}_node-1_thermostat"):
        other = _device(device_registry, key)
        triggers = await async_get_device_automations(hass, DeviceAutomationType.TRIGGER, other.id)
        assert [trigger for trigger in triggers if trigger["domain"] == DOMAIN] == []


async def test_trigger_on_federation_device_rejected(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test an automation with a trigger on the federation's device does not load."""
    federation = _device(device_registry, ENTRY_ID)

    await _add_automations(hass, federation.id)
    await hass.async_block_till_done()

    automations = hass.states.async_entity_ids(automation.DOMAIN)
    states = [hass.states.get(entity_id).state for entity_id in automations]
    assert states == ["unavailable", "unavailable"]
    assert "is not an fltrust edge node" in caplog.text


async def test_invalid_trigger_error_translated(
    hass: HomeAssistant, init_integration: MockConfigEntry, device_registry: dr.DeviceRegistry
) -> None:
    """Test the error for a trigger on a device that is not an edge node is translated."""
    federation = _device(device_registry, ENTRY_ID)
    config = {
        "platform": "device",
        "domain": DOMAIN,
        "device_id": federation.id,
        "type": "quarantined",
    }

    with pytest.raises(InvalidDeviceAutomationConfig) as err:
        await async_validate_trigger_config(hass, config)

    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == "invalid_trigger_device"
    assert err.value.translation_placeholders == {
        "device_id": federation.id,
        "type": "quarantined",
    }
    # Home Assistant drops the final full stop of a translated exception message.
    assert str(err.value) == (
        f"Device {federation.id} is not an fltrust edge node, so it has no quarantined trigger"
    )


async def test_trigger_filters_by_device(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
    automation_calls: list[ServiceCall],
) -> None:
    """Test a trigger fires for its own node's events only."""
    EdgeNode(hass, "node-1").send_heartbeat()
    EdgeNode(hass, "node-2").send_heartbeat()
    await hass.async_block_till_done()
    node_1 = _device(device_registry, f"{ENTRY_ID}_node-1")
    node_2 = _device(device_registry, f"{ENTRY_ID}_node-2")
    await _add_automations(hass, node_1.id)

    hass.bus.async_fire(EVENT_QUARANTINED, {"device_id": node_2.id, "node_id": "node-2"})
    await hass.async_block_till_done()
    assert automation_calls == []

    hass.bus.async_fire(
        EVENT_QUARANTINED, {"device_id": node_1.id, "node_id": "node-1", "trust": 25.0}
    )
    await hass.async_block_till_done()
    assert [call.data for call in automation_calls] == [
        {"type": "quarantined", "node_id": "node-1", "trust": 25.0}
    ]


async def test_triggers_fire_on_poisoning(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
    mqtt_mock: MagicMock,
    frozen_time: FrozenDateTimeFactory,
    automation_calls: list[ServiceCall],
) -> None:
    """Test both triggers fire when a node's poisoned updates get it quarantined."""
    nodes = [EdgeNode(hass, node_id) for node_id in ("node-a", "node-b", "node-c")]
    for node in nodes:
        node.send_heartbeat()
    await hass.async_block_till_done()
    await _add_automations(hass, _device(device_registry, f"{ENTRY_ID}_node-c").id)

    await send_poisoned_rounds(hass, frozen_time, nodes, "node-c", seed=11)

    fired: dict[str, list[dict[str, Any]]] = {}
    for call in automation_calls:
        fired.setdefault(call.data["type"], []).append(call.data)
    assert set(fired) == {"trust_dropped", "quarantined"}
    assert {data["node_id"] for data in fired["trust_dropped"]} == {"node-c"}
    assert len(fired["quarantined"]) == 1
    assert fired["quarantined"][0]["trust"] < 30
