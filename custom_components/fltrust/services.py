"""Actions of the fltrust integration: node release, node keys and broker accounts.

All actions are admin-only: a release lets a node's updates count again, a
node key lets its holder sign messages as that node, and a broker account
lets its holder publish on the node's topics.
"""

from __future__ import annotations

import voluptuous as vol
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.service import async_register_admin_service

from .broker_access import BrokerAccessError
from .const import (
    CONF_CONFIG_ENTRY_ID,
    CONF_NODE_ID,
    CONF_SENSOR_TOPICS,
    DOMAIN,
    LOGGER,
    SERVICE_CREATE_NODE_ACCOUNT,
    SERVICE_ISSUE_NODE_KEY,
    SERVICE_RELEASE,
    SERVICE_REPLACE_NODE_KEY,
)
from .coordinator import FltrustCoordinator, NodeNotQuarantinedError
from .core.dynsec import validate_sensor_topic
from .core.protocol import ID_PATTERN, is_valid_id
from .core.trust import TrustStatus

NODE_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_CONFIG_ENTRY_ID): cv.string,
        vol.Required(CONF_NODE_ID): cv.string,
    }
)

ACCOUNT_SCHEMA = NODE_SCHEMA.extend(
    {
        vol.Optional(CONF_SENSOR_TOPICS, default=list): vol.All(cv.ensure_list, [cv.string]),
    }
)


def _get_coordinator(hass: HomeAssistant, entry_id: str) -> FltrustCoordinator:
    """Return the coordinator of a loaded fltrust entry or raise ServiceValidationError."""
    entry = hass.config_entries.async_get_entry(entry_id)
    if entry is None or entry.domain != DOMAIN:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="entry_not_found",
            translation_placeholders={"entry_id": entry_id},
        )
    if entry.state is not ConfigEntryState.LOADED:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="entry_not_loaded",
            translation_placeholders={"title": entry.title},
        )
    coordinator: FltrustCoordinator = entry.runtime_data
    return coordinator


def _valid_node_id(node_id: str) -> str:
    """Return ``node_id``, or raise ServiceValidationError if it is not a valid node id."""
    if not is_valid_id(node_id):
        # Only the start of an overlong id goes into the message.
        displayed = node_id if len(node_id) <= 80 else f"{node_id[:80]}…"
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="invalid_node_id",
            translation_placeholders={"node_id": displayed, "pattern": ID_PATTERN.pattern},
        )
    return node_id


async def _async_release(call: ServiceCall) -> None:
    """Lift the quarantine of one node."""
    coordinator = _get_coordinator(call.hass, call.data[CONF_CONFIG_ENTRY_ID])
    node_id = _valid_node_id(call.data[CONF_NODE_ID])
    placeholders = {"node_id": node_id, "title": coordinator.config_entry.title}
    try:
        await coordinator.async_release(node_id, call.context)
    except KeyError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="node_not_found",
            translation_placeholders=placeholders,
        ) from err
    except NodeNotQuarantinedError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="node_not_quarantined",
            translation_placeholders=placeholders,
        ) from err


def _key_response(
    coordinator: FltrustCoordinator, node_id: str, node_key: str, generation: int
) -> ServiceResponse:
    """Return what a node's ``[security]`` section needs, with the key's generation."""
    return {
        "node_id": node_id,
        "node_key": node_key,
        "key_generation": generation,
        "coordinator_public_key": coordinator.public_key,
        "topic_prefix": coordinator.prefix,
    }


async def _async_issue_node_key(call: ServiceCall) -> ServiceResponse:
    """Return the key an edge node signs with and the key it verifies the coordinator with."""
    coordinator = _get_coordinator(call.hass, call.data[CONF_CONFIG_ENTRY_ID])
    node_id = _valid_node_id(call.data[CONF_NODE_ID])
    LOGGER.info(
        "%s: issued the key of node %s to user %s",
        coordinator.config_entry.entry_id,
        node_id,
        call.context.user_id,
    )
    node_key, generation = await coordinator.async_node_key(node_id)
    return _key_response(coordinator, node_id, node_key, generation)


async def _async_replace_node_key(call: ServiceCall) -> ServiceResponse:
    """Give a node a new key, so that its current one stops working, and return the new one."""
    coordinator = _get_coordinator(call.hass, call.data[CONF_CONFIG_ENTRY_ID])
    node_id = _valid_node_id(call.data[CONF_NODE_ID])
    try:
        node_key, generation = await coordinator.async_replace_node_key(node_id)
    except KeyError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="node_not_found",
            translation_placeholders={"node_id": node_id, "title": coordinator.config_entry.title},
        ) from err
    except ValueError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="node_key_not_replaced",
            translation_placeholders={"node_id": node_id, "error": str(err)},
        ) from err
    LOGGER.info(
        "%s: issued the new key of node %s to user %s",
        coordinator.config_entry.entry_id,
        node_id,
        call.context.user_id,
    )
    return _key_response(coordinator, node_id, node_key, generation)


async def _async_create_node_account(call: ServiceCall) -> ServiceResponse:
    """Create a node's broker account, confined to its topics, and return its login once."""
    coordinator = _get_coordinator(call.hass, call.data[CONF_CONFIG_ENTRY_ID])
    node_id = _valid_node_id(call.data[CONF_NODE_ID])
    title = coordinator.config_entry.title
    access = coordinator.broker_access
    if access is None:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="broker_access_off",
            translation_placeholders={"title": title},
        )

    topics = []
    for topic in call.data[CONF_SENSOR_TOPICS]:
        try:
            topics.append(validate_sensor_topic(topic.strip(), coordinator.prefix))
        except ValueError as err:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="invalid_sensor_topic",
                translation_placeholders={"topic": topic[:80], "reason": str(err)},
            ) from err

    node = coordinator.data.nodes.get(node_id)
    if node is not None and node.status == TrustStatus.QUARANTINED:
        # The new account would not be disabled, and so would lift the cut.
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="account_for_quarantined_node",
            translation_placeholders={"node_id": node_id, "title": title},
        )

    try:
        username, password = await access.async_create_account(node_id, tuple(topics))
    except BrokerAccessError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="broker_account_failed",
            translation_placeholders={"node_id": node_id, "title": title, "error": str(err)},
        ) from err

    LOGGER.info(
        "%s: issued the broker account %s of node %s to user %s",
        coordinator.config_entry.entry_id,
        username,
        node_id,
        call.context.user_id,
    )
    return {"node_id": node_id, "username": username, "password": password}


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the fltrust actions."""
    async_register_admin_service(
        hass,
        DOMAIN,
        SERVICE_RELEASE,
        _async_release,
        NODE_SCHEMA,  # type: ignore[arg-type]  # HA loads probatio as voluptuous
    )
    async_register_admin_service(
        hass,
        DOMAIN,
        SERVICE_ISSUE_NODE_KEY,
        _async_issue_node_key,
        NODE_SCHEMA,  # type: ignore[arg-type]  # HA loads probatio as voluptuous
        supports_response=SupportsResponse.ONLY,
    )
    async_register_admin_service(
        hass,
        DOMAIN,
        SERVICE_REPLACE_NODE_KEY,
        _async_replace_node_key,
        NODE_SCHEMA,  # type: ignore[arg-type]  # HA loads probatio as voluptuous
        supports_response=SupportsResponse.ONLY,
    )
    async_register_admin_service(
        hass,
        DOMAIN,
        SERVICE_CREATE_NODE_ACCOUNT,
        _async_create_node_account,
        ACCOUNT_SCHEMA,  # type: ignore[arg-type]  # HA loads probatio as voluptuous
        supports_response=SupportsResponse.ONLY,
    )
