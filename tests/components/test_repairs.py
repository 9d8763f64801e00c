"""The repair issue of a quarantined node and its fix flow, which releases the node."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any
from unittest.mock import MagicMock

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockUser,
    async_capture_events,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.fltrust.const import DOMAIN, EVENT_RELEASED
from custom_components.fltrust.coordinator import quarantine_issue_id
from custom_components.fltrust.core import protocol

from .conftest import (
    ENTRY_ID,
    PREFIX,
    EdgeNode,
    published,
    send_poisoned_rounds,
)

FIX_URL = "/api/repairs/issues/fix"
NODE_1_ISSUE = quarantine_issue_id(ENTRY_ID, "node-1")


@pytest.fixture(autouse=True)
async def repairs(hass: HomeAssistant) -> None:
    """Set up Home Assistant's repairs integration, which runs the fix flows."""
    assert await async_setup_component(hass, "repairs", {})


async def _start_fix(client: Any, issue_id: str) -> dict[str, Any]:
    response = await client.post(FIX_URL, json={"handler": DOMAIN, "issue_id": issue_id})
    assert response.status == HTTPStatus.OK
    return await response.json()


async def _submit_fix(client: Any, flow_id: str) -> dict[str, Any]:
    response = await client.post(f"{FIX_URL}/{flow_id}", json={})
    assert response.status == HTTPStatus.OK
    return await response.json()


async def test_issue_for_stored_quarantine(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test a node quarantined before the start gets a fixable issue, others none."""
    issue = issue_registry.async_get_issue(DOMAIN, NODE_1_ISSUE)

    assert issue is not None
    assert issue.is_fixable is True
    assert issue.is_persistent is False
    assert issue.severity == ir.IssueSeverity.ERROR
    assert issue.translation_key == "node_quarantined"
    assert issue.translation_placeholders == {
        "title": quarantined_node.title,
        "node_id": "node-1",
    }
    assert issue.data == {"entry_id": ENTRY_ID, "node_id": "node-1"}
    assert issue_registry.async_get_issue(DOMAIN, quarantine_issue_id(ENTRY_ID, "node-2")) is None


async def test_issue_when_round_quarantines(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    mqtt_mock: MagicMock,
    frozen_time: FrozenDateTimeFactory,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test a quarantine during the rounds opens the node's issue."""
    nodes = [EdgeNode(hass, node_id) for node_id in ("node-a", "node-b", "node-c")]
    for node in nodes:
        node.send_heartbeat()
    await hass.async_block_till_done()
    issue_id = quarantine_issue_id(ENTRY_ID, "node-c")

    await send_poisoned_rounds(
        hass,
        frozen_time,
        nodes,
        "node-c",
        seed=5,
        n_samples=200,
        until=lambda: issue_registry.async_get_issue(DOMAIN, issue_id) is not None,
    )

    issue = issue_registry.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.data == {"entry_id": ENTRY_ID, "node_id": "node-c"}
    assert issue_registry.async_get_issue(DOMAIN, quarantine_issue_id(ENTRY_ID, "node-a")) is None


async def test_fix_flow_releases_node(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    mqtt_mock: MagicMock,
    hass_client: ClientSessionGenerator,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test confirming the fix flow releases the node and closes the issue."""
    released = async_capture_events(hass, EVENT_RELEASED)
    client = await hass_client()

    flow = await _start_fix(client, NODE_1_ISSUE)

    assert flow["type"] == "form"
    assert flow["step_id"] == "confirm"
    assert flow["description_placeholders"] == {
        "title": quarantined_node.title,
        "node_id": "node-1",
        "trust": "20.0",
        "reauth_threshold": "60",
    }
    assert hass.states.get("binary_sensor.node_1_quarantined").state == STATE_ON

    result = await _submit_fix(client, flow["flow_id"])
    await hass.async_block_till_done()

    assert result["type"] == "create_entry"
    assert hass.states.get("binary_sensor.node_1_quarantined").state == STATE_OFF
    assert hass.states.get("sensor.node_1_trust").attributes["status"] == "reauth_required"
    assert len(released) == 1
    assert released[0].data["node_id"] == "node-1"
    commands = [
        envelope["body"]["action"]
        for envelope, _, _ in published(mqtt_mock, protocol.command_topic(PREFIX, "node-1"))
    ]
    assert commands[-2:] == ["release", "reauthenticate"]
    assert issue_registry.async_get_issue(DOMAIN, NODE_1_ISSUE) is None


async def test_release_action_closes_issue(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test a release by the action deletes the node's issue."""
    await hass.services.async_call(
        DOMAIN, "release", {"config_entry_id": ENTRY_ID, "node_id": "node-1"}, blocking=True
    )
    await hass.async_block_till_done()

    assert issue_registry.async_get_issue(DOMAIN, NODE_1_ISSUE) is None


async def test_fix_flow_after_other_release(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    hass_client: ClientSessionGenerator,
) -> None:
    """Test a flow whose node was released meanwhile aborts without a second release."""
    released = async_capture_events(hass, EVENT_RELEASED)
    client = await hass_client()
    flow = await _start_fix(client, NODE_1_ISSUE)
    await hass.services.async_call(
        DOMAIN, "release", {"config_entry_id": ENTRY_ID, "node_id": "node-1"}, blocking=True
    )
    await hass.async_block_till_done()

    result = await _submit_fix(client, flow["flow_id"])

    assert result["type"] == "abort"
    assert result["reason"] == "not_quarantined"
    assert len(released) == 1


async def test_fix_flow_after_unload(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    hass_client: ClientSessionGenerator,
) -> None:
    """Test a flow whose federation was unloaded meanwhile aborts."""
    client = await hass_client()
    flow = await _start_fix(client, NODE_1_ISSUE)
    await hass.config_entries.async_unload(quarantined_node.entry_id)
    await hass.async_block_till_done()

    result = await _submit_fix(client, flow["flow_id"])

    assert result["type"] == "abort"
    assert result["reason"] == "entry_not_loaded"


async def test_unload_and_setup_issue(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test an unload drops the issue and the next set-up opens it again from storage."""
    await hass.config_entries.async_unload(quarantined_node.entry_id)
    await hass.async_block_till_done()

    assert issue_registry.async_get_issue(DOMAIN, NODE_1_ISSUE) is None

    assert await hass.config_entries.async_setup(quarantined_node.entry_id)
    await hass.async_block_till_done()

    assert issue_registry.async_get_issue(DOMAIN, NODE_1_ISSUE) is not None
    assert hass.states.get("binary_sensor.node_1_quarantined").state == STATE_ON


async def test_fix_flow_admin_only(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    hass_admin_user: MockUser,
) -> None:
    """Test a user without admin rights cannot start the release."""
    hass_admin_user.groups = []
    client = await hass_client()

    response = await client.post(FIX_URL, json={"handler": DOMAIN, "issue_id": NODE_1_ISSUE})

    assert response.status == HTTPStatus.UNAUTHORIZED
    assert hass.states.get("binary_sensor.node_1_quarantined").state == STATE_ON
