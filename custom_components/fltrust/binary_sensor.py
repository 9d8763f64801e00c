"""Binary sensors of fltrust: quarantine, re-authentication, connectivity and anomalies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, override

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.util import dt as dt_util

from .coordinator import FltrustConfigEntry, FltrustCoordinator
from .core.trust import TrustStatus
from .entity import FltrustDeviceEntity, FltrustNodeEntity, async_add_entities_for_new_nodes
from .models import DeviceData, NodeData

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class FltrustNodeBinarySensorEntityDescription(BinarySensorEntityDescription):
    """A binary sensor of one edge node."""

    is_on_fn: Callable[[NodeData], bool | None]
    attributes_fn: Callable[[FltrustCoordinator, str], dict[str, Any] | None] = lambda *_: None


@dataclass(frozen=True, kw_only=True)
class FltrustDeviceBinarySensorEntityDescription(BinarySensorEntityDescription):
    """A binary sensor of one watched device."""

    is_on_fn: Callable[[DeviceData], bool | None]
    # Whether the state is a reading that goes stale while the node is disconnected.
    requires_connection: bool = False


def _broker_access_attributes(
    coordinator: FltrustCoordinator, node_id: str
) -> dict[str, Any] | None:
    """Return what the broker last confirmed about the node's account, once there is a result."""
    if coordinator.broker_access is None:
        return None
    record = coordinator.broker_access.records.get(node_id)
    if record is None:
        return None
    return {"broker_access": record.state.value}


NODE_BINARY_SENSORS: tuple[FltrustNodeBinarySensorEntityDescription, ...] = (
    FltrustNodeBinarySensorEntityDescription(
        key="quarantined",
        translation_key="quarantined",
        device_class=BinarySensorDeviceClass.PROBLEM,
        is_on_fn=lambda node: node.status == TrustStatus.QUARANTINED,
        attributes_fn=_broker_access_attributes,
    ),
    FltrustNodeBinarySensorEntityDescription(
        key="reauth_required",
        translation_key="reauth_required",
        device_class=BinarySensorDeviceClass.PROBLEM,
        # Off once the node responded to its challenge, even while its trust is
        # still below the threshold: nothing more is required of it.
        is_on_fn=lambda node: node.status == TrustStatus.REAUTH_REQUIRED and not node.authenticated,
    ),
    FltrustNodeBinarySensorEntityDescription(
        key="connected",
        device_class=BinarySensorDeviceClass.CONNECTIVITY,
        entity_category=EntityCategory.DIAGNOSTIC,
        is_on_fn=lambda node: node.is_connected(dt_util.utcnow().timestamp()),
    ),
)

DEVICE_BINARY_SENSORS: tuple[FltrustDeviceBinarySensorEntityDescription, ...] = (
    FltrustDeviceBinarySensorEntityDescription(
        key="anomaly",
        translation_key="anomaly",
        device_class=BinarySensorDeviceClass.PROBLEM,
        is_on_fn=lambda device: device.anomaly,
        requires_connection=True,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: FltrustConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the binary sensors of each node and device as they appear."""
    coordinator = entry.runtime_data
    async_add_entities_for_new_nodes(
        entry,
        async_add_entities,
        lambda node_id: (
            FltrustNodeBinarySensor(coordinator, node_id, description)
            for description in NODE_BINARY_SENSORS
        ),
        lambda node_id, device_id: (
            FltrustDeviceBinarySensor(coordinator, node_id, device_id, description)
            for description in DEVICE_BINARY_SENSORS
        ),
    )


class FltrustNodeBinarySensor(FltrustNodeEntity, BinarySensorEntity):
    """A binary sensor of one edge node."""

    entity_description: FltrustNodeBinarySensorEntityDescription

    @property
    @override
    def is_on(self) -> bool | None:
        """Return the sensor's state."""
        return self.entity_description.is_on_fn(self.node)

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the state of the node's broker account on the quarantine sensor."""
        return self.entity_description.attributes_fn(self.coordinator, self.node_id)


class FltrustDeviceBinarySensor(FltrustDeviceEntity, BinarySensorEntity):
    """A binary sensor of one watched device."""

    entity_description: FltrustDeviceBinarySensorEntityDescription

    def __init__(
        self,
        coordinator: FltrustCoordinator,
        node_id: str,
        device_id: str,
        description: FltrustDeviceBinarySensorEntityDescription,
    ) -> None:
        """Create the binary sensor of one device."""
        super().__init__(
            coordinator, node_id, device_id, description, description.requires_connection
        )

    @property
    @override
    def is_on(self) -> bool | None:
        """Return the sensor's state."""
        return self.entity_description.is_on_fn(self.device)
