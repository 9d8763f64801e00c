"""Base entities of the fltrust integration and the adding of entities for new nodes.

Three kinds of entities exist, each on its own Home Assistant device: the
federation's (round, model version, rejected messages), each edge node's
(trust, quarantine, re-authentication, connectivity) and each watched
device's (trust, anomaly, anomaly score). Unique ids are the device's
identifier followed by the description key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import override

from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity, EntityDescription
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.update_coordinator import CoordinatorEntity
from homeassistant.util import dt as dt_util

from .const import DOMAIN
from .coordinator import FltrustConfigEntry, FltrustCoordinator
from .devices import device_key, federation_key, node_key
from .models import DeviceData, NodeData


class FltrustEntity(CoordinatorEntity[FltrustCoordinator]):
    """An entity that shows part of the coordinator's snapshot."""

    _attr_has_entity_name = True

    def __init__(
        self, coordinator: FltrustCoordinator, description: EntityDescription, key: str
    ) -> None:
        """Attach the entity to the Home Assistant device with identifier ``key``."""
        super().__init__(coordinator)
        self.entity_description = description
        self._attr_unique_id = f"{key}_{description.key}"
        self._attr_device_info = DeviceInfo(identifiers={(DOMAIN, key)})


class FltrustFederationEntity(FltrustEntity):
    """An entity of the federation as a whole."""

    def __init__(self, coordinator: FltrustCoordinator, description: EntityDescription) -> None:
        """Attach the entity to the federation's device."""
        super().__init__(
            coordinator, description, federation_key(coordinator.config_entry.entry_id)
        )


class FltrustNodeEntity(FltrustEntity):
    """An entity of one edge node. The coordinator keeps its values while the node is silent."""

    def __init__(
        self, coordinator: FltrustCoordinator, node_id: str, description: EntityDescription
    ) -> None:
        """Attach the entity to the node's device."""
        super().__init__(
            coordinator, description, node_key(coordinator.config_entry.entry_id, node_id)
        )
        self.node_id = node_id

    @property
    def node(self) -> NodeData:
        """The node's latest snapshot."""
        return self.coordinator.data.nodes[self.node_id]


class FltrustDeviceEntity(FltrustEntity):
    """An entity of one device that a node watches.

    With ``requires_connection`` the entity shows a reading that only the node
    can refresh, so it is unavailable while the node is disconnected.
    """

    def __init__(
        self,
        coordinator: FltrustCoordinator,
        node_id: str,
        device_id: str,
        description: EntityDescription,
        requires_connection: bool,
    ) -> None:
        """Attach the entity to the watched device's Home Assistant device."""
        super().__init__(
            coordinator,
            description,
            device_key(coordinator.config_entry.entry_id, node_id, device_id),
        )
        self.node_id = node_id
        self.device_id = device_id
        self._requires_connection = requires_connection

    @property
    def node(self) -> NodeData:
        """The latest snapshot of the node that watches the device."""
        return self.coordinator.data.nodes[self.node_id]

    @property
    def device(self) -> DeviceData:
        """The device's latest snapshot."""
        return self.node.devices[self.device_id]

    @property
    @override
    def available(self) -> bool:
        """Return False while the node is disconnected, for readings only the node refreshes."""
        if not super().available:
            return False
        return not self._requires_connection or self.node.is_connected(dt_util.utcnow().timestamp())


@callback
def async_add_entities_for_new_nodes(
    entry: FltrustConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    node_entities: Callable[[str], Iterable[Entity]],
    device_entities: Callable[[str, str], Iterable[Entity]],
) -> None:
    """Add entities for every node and device now and whenever new ones are discovered.

    ``node_entities(node_id)`` and ``device_entities(node_id, device_id)``
    return a platform's entities of one node or device. Nodes and devices
    without a Home Assistant device (see ``devices``) get none.
    """
    coordinator = entry.runtime_data
    added_nodes: set[str] = set()
    added_devices: set[tuple[str, str]] = set()

    @callback
    def _async_add_new() -> None:
        entities: list[Entity] = []
        for node_id, node in coordinator.data.nodes.items():
            if not coordinator.devices.is_node_registered(node_id):
                continue
            if node_id not in added_nodes:
                added_nodes.add(node_id)
                entities.extend(node_entities(node_id))
            for device_id in node.devices:
                if (node_id, device_id) in added_devices or not (
                    coordinator.devices.is_device_registered(node_id, device_id)
                ):
                    continue
                added_devices.add((node_id, device_id))
                entities.extend(device_entities(node_id, device_id))
        if entities:
            async_add_entities(entities)

    _async_add_new()
    entry.async_on_unload(coordinator.async_add_listener(_async_add_new))
