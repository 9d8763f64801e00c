"""The fltrust integration: federated anomaly detection and trust scores for IoT nodes."""

from __future__ import annotations

from typing import Any

from homeassistant.components import mqtt
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady, HomeAssistantError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.storage import Store
from homeassistant.helpers.typing import ConfigType

from .broker_access import BrokerAccessError
from .const import (
    BACKUP_SUFFIX,
    CONF_TOPIC_PREFIX,
    DOMAIN,
    LOGGER,
    ROUND_SETTINGS,
    STORAGE_VERSION,
)
from .coordinator import (
    FltrustConfigEntry,
    FltrustCoordinator,
    NodeConnectedError,
    NodeQuarantinedError,
    state_issue_id,
)
from .core.protocol import command_topic, model_topic, round_topic
from .services import async_setup_services

PLATFORMS = [Platform.BINARY_SENSOR, Platform.SENSOR]
CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the fltrust actions."""
    async_setup_services(hass)
    return True


async def async_migrate_entry(hass: HomeAssistant, entry: FltrustConfigEntry) -> bool:
    """Move the round and trust settings of an entry from its data to its options.

    Entries of version 1.1 kept them in the data and changed them with a
    reconfigure flow. From 1.2 on the options flow changes them.
    """
    if entry.version > 1:
        # A newer version of the integration wrote this entry.
        return False
    if entry.minor_version < 2:
        settings = {key: entry.data[key] for key in ROUND_SETTINGS if key in entry.data}
        data = {key: value for key, value in entry.data.items() if key not in ROUND_SETTINGS}
        hass.config_entries.async_update_entry(
            entry, data=data, options={**entry.options, **settings}, minor_version=2
        )
        LOGGER.debug("%s: moved the round and trust settings to the options", entry.entry_id)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: FltrustConfigEntry) -> bool:
    """Set up one federation from a config entry."""
    if not await mqtt.async_wait_for_mqtt_client(hass):
        raise ConfigEntryNotReady(translation_domain=DOMAIN, translation_key="mqtt_unavailable")
    coordinator = FltrustCoordinator(hass, entry)
    await coordinator.async_config_entry_first_refresh()
    entry.runtime_data = coordinator
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    await coordinator.async_start()
    return True


async def async_unload_entry(hass: HomeAssistant, entry: FltrustConfigEntry) -> bool:
    """Unload a config entry. The coordinator saves the state when the entry unloads."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: FltrustConfigEntry, device_entry: dr.DeviceEntry
) -> bool:
    """Let a person delete the device of a retired edge node or of a device it stopped watching.

    For an edge node the federation drops the node's record. Its watched devices
    go with it, and the federation device stays. A quarantined or still connected
    node stays. With broker access on, the node's broker account is disabled too.
    A watched device can be deleted once its node's heartbeats no longer list it.
    """
    coordinator = entry.runtime_data
    node_id = coordinator.devices.node_for_device(device_entry.id)
    if node_id is None:
        return await _async_remove_watched_device(entry, device_entry)
    placeholders = {"node_id": node_id, "title": entry.title}
    try:
        await coordinator.async_forget_node(node_id)
    except KeyError:
        return True
    except NodeQuarantinedError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="remove_quarantined_node",
            translation_placeholders=placeholders,
        ) from err
    except NodeConnectedError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="remove_connected_node",
            translation_placeholders=placeholders,
        ) from err
    except BrokerAccessError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="remove_node_account_failed",
            translation_placeholders={**placeholders, "error": str(err)},
        ) from err
    return True


async def _async_remove_watched_device(
    entry: FltrustConfigEntry, device_entry: dr.DeviceEntry
) -> bool:
    """Forget a watched device that its node no longer announces, or an orphaned device.

    An orphaned device belongs to no node or device that the federation has a record
    of. Return False for the federation's device and for devices of other integrations.
    """
    coordinator = entry.runtime_data
    watched = coordinator.devices.watched_device_for(device_entry)
    if watched is None:
        # A device of a node or device that the federation has no record of, as after
        # a start over, can go. The federation's own device stays.
        own = {key for domain, key in device_entry.identifiers if domain == DOMAIN}
        return (
            bool(own)
            and entry.entry_id not in own
            and all(key.startswith(f"{entry.entry_id}_") for key in own)
        )
    node_id, device_id = watched
    try:
        await coordinator.async_forget_device(node_id, device_id)
    except KeyError:
        return True
    except ValueError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="remove_watched_device",
            translation_placeholders={"node_id": node_id, "device_id": device_id},
        ) from err
    return True


async def async_remove_entry(hass: HomeAssistant, entry: FltrustConfigEntry) -> None:
    """Delete the federation's stored state and clear its retained messages on the broker.

    A federation set up again on the same prefix would otherwise hand its
    nodes the old model and the old quarantine commands.
    """
    store: Store[dict[str, Any]] = Store(hass, STORAGE_VERSION, f"{DOMAIN}.{entry.entry_id}")
    backup: Store[dict[str, Any]] = Store(
        hass, STORAGE_VERSION, f"{DOMAIN}.{entry.entry_id}.{BACKUP_SUFFIX}"
    )
    # The repair issue of a state that could not be loaded has nothing left to repair.
    ir.async_delete_issue(hass, DOMAIN, state_issue_id(entry.entry_id))
    stored = await store.async_load()
    if stored is None:
        stored = await backup.async_load()
    await store.async_remove()
    await backup.async_remove()
    prefix = entry.data[CONF_TOPIC_PREFIX]
    nodes = stored.get("nodes", {}) if isinstance(stored, dict) else {}
    topics = [model_topic(prefix), round_topic(prefix)]
    topics += [command_topic(prefix, node_id) for node_id in nodes if isinstance(node_id, str)]
    try:
        for topic in topics:
            # An empty retained message deletes the retained one.
            await mqtt.async_publish(hass, topic, b"", 1, True)
    except HomeAssistantError as err:
        LOGGER.warning(
            "Could not clear the retained messages under %s/ after removing %s: %s",
            prefix,
            entry.title,
            err,
        )
