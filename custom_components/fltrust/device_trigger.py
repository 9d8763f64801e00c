"""Device triggers of edge nodes: "trust dropped" and "quarantined".

Both listen to the bus events the coordinator fires, filtered by the node's
Home Assistant device id, so automations built in the UI need no event names.
"""

from __future__ import annotations

import voluptuous as vol
from homeassistant.components.device_automation import DEVICE_TRIGGER_BASE_SCHEMA
from homeassistant.components.device_automation.exceptions import (
    InvalidDeviceAutomationConfig,
)
from homeassistant.components.homeassistant.triggers import event as event_trigger
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_DEVICE_ID, CONF_DOMAIN, CONF_PLATFORM, CONF_TYPE
from homeassistant.core import CALLBACK_TYPE, HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.trigger import TriggerActionType, TriggerInfo
from homeassistant.helpers.typing import ConfigType

from .const import DOMAIN, EVENT_QUARANTINED, EVENT_TRUST_DROPPED
from .coordinator import FltrustCoordinator

TRIGGER_EVENTS = {
    "trust_dropped": EVENT_TRUST_DROPPED,
    "quarantined": EVENT_QUARANTINED,
}

TRIGGER_SCHEMA = DEVICE_TRIGGER_BASE_SCHEMA.extend(
    {vol.Required(CONF_TYPE): vol.In(TRIGGER_EVENTS)}
)


def _is_node_device(hass: HomeAssistant, device_id: str) -> bool | None:
    """Return whether ``device_id`` is an edge node's device, or None when it cannot tell yet.

    It cannot tell while the device's fltrust entry is not loaded.
    """
    device = dr.async_get(hass).async_get(device_id)
    if device is None:
        return False
    entry = hass.config_entries.async_get_entry(device.config_entry_id)
    if entry is None or entry.domain != DOMAIN:
        return False
    if entry.state is not ConfigEntryState.LOADED:
        return None
    coordinator: FltrustCoordinator = entry.runtime_data
    return coordinator.devices.node_for_device(device_id) is not None


async def async_validate_trigger_config(hass: HomeAssistant, config: ConfigType) -> ConfigType:
    """Validate a trigger, rejecting one on a device that is not an edge node."""
    config = TRIGGER_SCHEMA(config)
    if _is_node_device(hass, config[CONF_DEVICE_ID]) is False:
        raise InvalidDeviceAutomationConfig(
            translation_domain=DOMAIN,
            translation_key="invalid_trigger_device",
            translation_placeholders={
                "device_id": config[CONF_DEVICE_ID],
                "type": config[CONF_TYPE],
            },
        )
    return config


async def async_get_triggers(hass: HomeAssistant, device_id: str) -> list[dict[str, str]]:
    """Return the triggers of an edge node's device, and none for other devices."""
    if not _is_node_device(hass, device_id):
        return []
    return [
        {
            CONF_PLATFORM: "device",
            CONF_DOMAIN: DOMAIN,
            CONF_DEVICE_ID: device_id,
            CONF_TYPE: trigger_type,
        }
        for trigger_type in TRIGGER_EVENTS
    ]


async def async_attach_trigger(
    hass: HomeAssistant,
    config: ConfigType,
    action: TriggerActionType,
    trigger_info: TriggerInfo,
) -> CALLBACK_TYPE:
    """Listen for the bus event of the trigger type, from this device only."""
    event_config = event_trigger.TRIGGER_SCHEMA(
        {
            event_trigger.CONF_PLATFORM: "event",
            event_trigger.CONF_EVENT_TYPE: TRIGGER_EVENTS[config[CONF_TYPE]],
            event_trigger.CONF_EVENT_DATA: {CONF_DEVICE_ID: config[CONF_DEVICE_ID]},
        }
    )
    return await event_trigger.async_attach_trigger(
        hass, event_config, action, trigger_info, platform_type="device"
    )
