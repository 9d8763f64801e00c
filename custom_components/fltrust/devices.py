"""Home Assistant devices of one federation: the coordinator, its edge nodes and their devices.

Identifiers and entity unique ids join the config entry id, the node id and
the device id with underscores, and node and device ids may contain
underscores themselves. Node ``a_b`` and device ``b`` of node ``a`` would
therefore share identifiers, so the first one registered keeps them and the
later one gets no Home Assistant device and no entities.
"""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr

from .const import DOMAIN, FEDERATION_MODEL, LOGGER, MANUFACTURER, NODE_MODEL
from .models import DeviceData, NodeData


def federation_key(entry_id: str) -> str:
    """Return the identifier and unique id prefix of the federation itself."""
    return entry_id


def node_key(entry_id: str, node_id: str) -> str:
    """Return the identifier and unique id prefix of an edge node."""
    return f"{entry_id}_{node_id}"


def device_key(entry_id: str, node_id: str, device_id: str) -> str:
    """Return the identifier and unique id prefix of a watched device."""
    return f"{entry_id}_{node_id}_{device_id}"


class FederationDevices:
    """The Home Assistant devices of one config entry, and their map back to node ids."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry) -> None:
        """Store the config entry; nothing is registered yet."""
        self._hass = hass
        self._entry = entry
        self.federation_device_id = ""
        # Home Assistant device id of each registered node.
        self.node_device_ids: dict[str, str] = {}
        # Identifier -> (node id, device id or None) of every registered device.
        self._owners: dict[str, tuple[str, str | None]] = {}
        # Identifier -> the name and the software version or kind last written to the registry.
        self._written: dict[str, tuple[str, str | None]] = {}

    @callback
    def async_register_federation(self) -> None:
        """Register the device that carries the federation-wide entities."""
        device = dr.async_get(self._hass).async_get_or_create(
            config_entry_id=self._entry.entry_id,
            identifiers={(DOMAIN, federation_key(self._entry.entry_id))},
            name=self._entry.title,
            manufacturer=MANUFACTURER,
            model=FEDERATION_MODEL,
            entry_type=dr.DeviceEntryType.SERVICE,
        )
        self.federation_device_id = device.id

    def _claim(self, key: str, owner: tuple[str, str | None]) -> bool:
        current = self._owners.setdefault(key, owner)
        if current == owner:
            return True
        LOGGER.warning(
            "%s: %s %s has the same identifier %s as %s %s; it gets no entities, rename one "
            "of them on its edge node",
            self._entry.entry_id,
            "device" if owner[1] else "node",
            "/".join(part for part in owner if part),
            key,
            "device" if current[1] else "node",
            "/".join(part for part in current if part),
        )
        return False

    def is_node_registered(self, node_id: str) -> bool:
        """Return whether the node has a Home Assistant device."""
        return node_id in self.node_device_ids

    def is_device_registered(self, node_id: str, device_id: str) -> bool:
        """Return whether the watched device has a Home Assistant device."""
        key = device_key(self._entry.entry_id, node_id, device_id)
        return self._owners.get(key) == (node_id, device_id)

    def node_for_device(self, ha_device_id: str) -> str | None:
        """Return the node id behind a Home Assistant device id, or None for other devices."""
        for node_id, registered_id in self.node_device_ids.items():
            if registered_id == ha_device_id:
                return node_id
        return None

    def watched_device_for(self, device_entry: dr.DeviceEntry) -> tuple[str, str] | None:
        """Return the node id and device id behind a watched device's Home Assistant device."""
        for domain, key in device_entry.identifiers:
            owner = self._owners.get(key) if domain == DOMAIN else None
            if owner is not None and owner[1] is not None:
                return owner[0], owner[1]
        return None

    @callback
    def async_forget_device(self, node_id: str, device_id: str) -> None:
        """Stop tracking a forgotten device, so that it is registered anew if it comes back."""
        key = device_key(self._entry.entry_id, node_id, device_id)
        self._owners.pop(key, None)
        self._written.pop(key, None)

    @callback
    def async_forget_node(self, node_id: str) -> None:
        """Remove the devices that a forgotten node watched and stop tracking the node."""
        registry = dr.async_get(self._hass)
        for key, (owner, device_id) in list(self._owners.items()):
            if owner != node_id:
                continue
            del self._owners[key]
            self._written.pop(key, None)
            if device_id is None:
                continue
            device = registry.async_get_device_by_identifier((DOMAIN, key), self._entry.entry_id)
            if device is not None:
                registry.async_update_device(device.id, remove_config_entry_id=self._entry.entry_id)
        self.node_device_ids.pop(node_id, None)

    @callback
    def async_register(self, nodes: dict[str, NodeData]) -> None:
        """Register new nodes and devices and update changed names and software versions.

        A node's device is registered before its watched devices because they
        link to it with ``via_device_id``.
        """
        for node in nodes.values():
            if self._async_register_node(node):
                for device in node.devices.values():
                    self._async_register_device(node.node_id, device)

    def _async_register_node(self, node: NodeData) -> bool:
        key = node_key(self._entry.entry_id, node.node_id)
        if not self._claim(key, (node.node_id, None)):
            return False
        written = (node.node_id, node.software or None)
        if self._written.get(key) != written:
            device = dr.async_get(self._hass).async_get_or_create(
                config_entry_id=self._entry.entry_id,
                identifiers={(DOMAIN, key)},
                name=node.node_id,
                manufacturer=MANUFACTURER,
                model=NODE_MODEL,
                sw_version=node.software or None,
                via_device_id=self.federation_device_id,
            )
            self.node_device_ids[node.node_id] = device.id
            self._written[key] = written
        return True

    def _async_register_device(self, node_id: str, device: DeviceData) -> None:
        key = device_key(self._entry.entry_id, node_id, device.device_id)
        if not self._claim(key, (node_id, device.device_id)):
            return
        written = (device.name, device.kind)
        if self._written.get(key) != written:
            dr.async_get(self._hass).async_get_or_create(
                config_entry_id=self._entry.entry_id,
                identifiers={(DOMAIN, key)},
                name=device.name,
                model=device.kind,
                via_device_id=self.node_device_ids[node_id],
            )
            self._written[key] = written
