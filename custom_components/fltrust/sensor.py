"""Sensors of fltrust: trust scores, anomaly scores and federation figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, override

from homeassistant.components.sensor import (
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from .coordinator import FltrustConfigEntry, FltrustCoordinator
from .entity import (
    FltrustDeviceEntity,
    FltrustFederationEntity,
    FltrustNodeEntity,
    async_add_entities_for_new_nodes,
)
from .models import DeviceData, FederationData, NodeData

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class FltrustFederationSensorEntityDescription(SensorEntityDescription):
    """A sensor of the whole federation."""

    value_fn: Callable[[FederationData], StateType]
    attributes_fn: Callable[[FederationData], dict[str, Any]] | None = None


@dataclass(frozen=True, kw_only=True)
class FltrustNodeSensorEntityDescription(SensorEntityDescription):
    """A sensor of one edge node."""

    value_fn: Callable[[NodeData], StateType]
    attributes_fn: Callable[[NodeData], dict[str, Any]] | None = None


@dataclass(frozen=True, kw_only=True)
class FltrustDeviceSensorEntityDescription(SensorEntityDescription):
    """A sensor of one watched device."""

    value_fn: Callable[[DeviceData], StateType]
    attributes_fn: Callable[[DeviceData], dict[str, Any]] | None = None
    # Whether the value is a reading that goes stale while the node is disconnected.
    requires_connection: bool = False


def _round_attributes(data: FederationData) -> dict[str, Any]:
    last = data.last_round
    return {
        "round_open": data.round_open,
        "last_round": last.round if last else None,
        "last_round_duration": last.duration if last else None,
        "participants": last.participants if last else [],
        "dropped": last.dropped if last else [],
        "rejected": last.rejected if last else 0,
        "aggregated": last.aggregated if last else None,
        "model_version": data.model_version,
    }


def _node_trust_attributes(node: NodeData) -> dict[str, Any]:
    return {
        "status": node.status,
        **node.signals,
        "last_rejection": node.last_rejection or None,
        "rejected": node.rejected,
    }


FEDERATION_SENSORS: tuple[FltrustFederationSensorEntityDescription, ...] = (
    FltrustFederationSensorEntityDescription(
        key="round",
        translation_key="round",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda data: data.round,
        attributes_fn=_round_attributes,
    ),
    FltrustFederationSensorEntityDescription(
        key="model_version",
        translation_key="model_version",
        entity_category=EntityCategory.DIAGNOSTIC,
        # The round sensor carries the version too; this one is for history graphs.
        entity_registry_enabled_default=False,
        value_fn=lambda data: data.model_version,
    ),
    FltrustFederationSensorEntityDescription(
        key="rejected_messages",
        translation_key="rejected_messages",
        state_class=SensorStateClass.TOTAL_INCREASING,
        value_fn=lambda data: data.rejected_total,
    ),
)

NODE_SENSORS: tuple[FltrustNodeSensorEntityDescription, ...] = (
    FltrustNodeSensorEntityDescription(
        key="trust",
        translation_key="node_trust",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda node: node.trust,
        attributes_fn=_node_trust_attributes,
    ),
)

DEVICE_SENSORS: tuple[FltrustDeviceSensorEntityDescription, ...] = (
    FltrustDeviceSensorEntityDescription(
        key="trust",
        translation_key="device_trust",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda device: device.trust,
    ),
    FltrustDeviceSensorEntityDescription(
        key="anomaly_score",
        translation_key="anomaly_score",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=3,
        value_fn=lambda device: device.anomaly_score,
        attributes_fn=lambda device: {"threshold": device.threshold},
        requires_connection=True,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: FltrustConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the federation's sensors, and those of each node and device as they appear."""
    coordinator = entry.runtime_data
    async_add_entities(
        FltrustFederationSensor(coordinator, description) for description in FEDERATION_SENSORS
    )
    async_add_entities_for_new_nodes(
        entry,
        async_add_entities,
        lambda node_id: (
            FltrustNodeSensor(coordinator, node_id, description) for description in NODE_SENSORS
        ),
        lambda node_id, device_id: (
            FltrustDeviceSensor(coordinator, node_id, device_id, description)
            for description in DEVICE_SENSORS
        ),
    )


class FltrustFederationSensor(FltrustFederationEntity, SensorEntity):
    """A sensor of the whole federation."""

    entity_description: FltrustFederationSensorEntityDescription

    @property
    @override
    def native_value(self) -> StateType:
        """Return the sensor's value."""
        return self.entity_description.value_fn(self.coordinator.data)

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the sensor's attributes."""
        if self.entity_description.attributes_fn is None:
            return None
        return self.entity_description.attributes_fn(self.coordinator.data)


class FltrustNodeSensor(FltrustNodeEntity, SensorEntity):
    """A sensor of one edge node."""

    entity_description: FltrustNodeSensorEntityDescription

    @property
    @override
    def native_value(self) -> StateType:
        """Return the sensor's value."""
        return self.entity_description.value_fn(self.node)

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the sensor's attributes."""
        if self.entity_description.attributes_fn is None:
            return None
        return self.entity_description.attributes_fn(self.node)


class FltrustDeviceSensor(FltrustDeviceEntity, SensorEntity):
    """A sensor of one watched device."""

    entity_description: FltrustDeviceSensorEntityDescription

    def __init__(
        self,
        coordinator: FltrustCoordinator,
        node_id: str,
        device_id: str,
        description: FltrustDeviceSensorEntityDescription,
    ) -> None:
        """Create the sensor of one device."""
        super().__init__(
            coordinator, node_id, device_id, description, description.requires_connection
        )

    @property
    @override
    def native_value(self) -> StateType:
        """Return the sensor's value."""
        return self.entity_description.value_fn(self.device)

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the sensor's attributes."""
        if self.entity_description.attributes_fn is None:
            return None
        return self.entity_description.attributes_fn(self.device)
