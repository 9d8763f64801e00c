"""The automation blueprint that notifies about dropped trust and quarantines."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from unittest.mock import PropertyMock, patch

import pytest
from homeassistant.components import automation
from homeassistant.components.blueprint.models import DomainBlueprints
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import async_mock_service

from custom_components.fltrust.const import EVENT_QUARANTINED, EVENT_RELEASED, EVENT_TRUST_DROPPED

from .conftest import ENTRY_ID

BLUEPRINTS = Path(__file__).parents[2] / "custom_components/fltrust/blueprints/automation"


@pytest.fixture(autouse=True)
def blueprint_folder() -> Generator[None]:
    """Load automation blueprints from the integration's folder instead of the config folder."""
    with patch.object(
        DomainBlueprints, "blueprint_folder", new_callable=PropertyMock, return_value=BLUEPRINTS
    ):
        yield


async def _setup_blueprint(
    hass: HomeAssistant,
    quarantine_notification: bool = True,
    notify_action: str | None = "notify.phone",
) -> None:
    inputs = {"trust_below": 50, "quarantine_notification": quarantine_notification}
    if notify_action is not None:
        inputs["notify_action"] = notify_action
    assert await async_setup_component(
        hass,
        automation.DOMAIN,
        {
            automation.DOMAIN: {
                "use_blueprint": {"path": "fltrust/quarantine_notify.yaml", "input": inputs}
            }
        },
    )
    await hass.async_block_till_done()


def _event_data(trust: float, previous: float, status: str = "reauth_required") -> dict:
    return {
        "config_entry_id": ENTRY_ID,
        "device_id": "abc",
        "node_id": "node-c",
        "trust": trust,
        "previous_trust": previous,
        "round": 3,
        "status": status,
        "reasons": ["integrity 0.01", "security 0.61"],
    }


async def test_trust_drop_below_threshold_notifies(hass: HomeAssistant) -> None:
    """Test a drop below the chosen trust notifies, and a drop above it does not."""
    notifications = async_mock_service(hass, "notify", "phone")
    await _setup_blueprint(hass)

    hass.bus.async_fire(EVENT_TRUST_DROPPED, _event_data(70.0, 85.0))
    await hass.async_block_till_done()
    assert notifications == []

    hass.bus.async_fire(EVENT_TRUST_DROPPED, _event_data(42.2, 80.0))
    await hass.async_block_till_done()

    assert len(notifications) == 1
    assert notifications[0].data["title"] == "fltrust: trust of node-c dropped"
    assert notifications[0].data["message"] == (
        "Trust of node node-c dropped from 80.0 to 42.2 in round 3 (integrity 0.01, security 0.61)."
    )


async def test_quarantine_creates_persistent_notification(hass: HomeAssistant) -> None:
    """Test a quarantine notifies and leaves release instructions in a persistent notification."""
    notifications = async_mock_service(hass, "notify", "phone")
    persistent = async_mock_service(hass, "persistent_notification", "create")
    await _setup_blueprint(hass)

    hass.bus.async_fire(EVENT_QUARANTINED, _event_data(26.3, 42.2))
    await hass.async_block_till_done()

    assert len(notifications) == 1
    assert notifications[0].data["title"] == "fltrust: node-c quarantined"
    assert len(persistent) == 1
    assert persistent[0].data["notification_id"] == f"fltrust_quarantined_{ENTRY_ID}_node-c"
    message = persistent[0].data["message"]
    assert "fltrust.release" in message
    assert f"config_entry_id {ENTRY_ID}" in message
    assert "node_id node-c" in message


async def test_quarantine_without_persistent_notification(hass: HomeAssistant) -> None:
    """Test the persistent notification can be switched off."""
    notifications = async_mock_service(hass, "notify", "phone")
    persistent = async_mock_service(hass, "persistent_notification", "create")
    await _setup_blueprint(hass, quarantine_notification=False)

    hass.bus.async_fire(EVENT_QUARANTINED, _event_data(26.3, 42.2))
    await hass.async_block_till_done()

    assert len(notifications) == 1
    assert persistent == []


async def test_drop_into_quarantine_notifies_once(hass: HomeAssistant) -> None:
    """Test a drop into quarantine sends the quarantine notification only."""
    notifications = async_mock_service(hass, "notify", "phone")
    async_mock_service(hass, "persistent_notification", "create")
    await _setup_blueprint(hass)

    hass.bus.async_fire(EVENT_TRUST_DROPPED, _event_data(26.3, 42.2, status="quarantined"))
    hass.bus.async_fire(EVENT_QUARANTINED, _event_data(26.3, 42.2, status="quarantined"))
    await hass.async_block_till_done()

    assert [n.data["title"] for n in notifications] == ["fltrust: node-c quarantined"]


async def test_release_dismisses_persistent_notification(hass: HomeAssistant) -> None:
    """Test a release dismisses the node's persistent quarantine notification."""
    async_mock_service(hass, "notify", "phone")
    dismissed = async_mock_service(hass, "persistent_notification", "dismiss")
    await _setup_blueprint(hass)

    hass.bus.async_fire(EVENT_RELEASED, _event_data(55.0, 20.0))
    await hass.async_block_till_done()

    assert len(dismissed) == 1
    assert dismissed[0].data["notification_id"] == f"fltrust_quarantined_{ENTRY_ID}_node-c"


async def test_default_inputs_use_persistent_notifications(hass: HomeAssistant) -> None:
    """Test the default inputs, without a notify action, still notify on a drop and quarantine."""
    persistent = async_mock_service(hass, "persistent_notification", "create")
    await _setup_blueprint(hass, notify_action=None)

    hass.bus.async_fire(EVENT_TRUST_DROPPED, _event_data(42.2, 80.0))
    hass.bus.async_fire(EVENT_QUARANTINED, _event_data(26.3, 42.2, status="quarantined"))
    await hass.async_block_till_done()

    assert [call.data["notification_id"] for call in persistent] == [
        f"fltrust_trust_dropped_{ENTRY_ID}_node-c",
        f"fltrust_quarantined_{ENTRY_ID}_node-c",
    ]
    assert persistent[0].data["message"] == (
        "Trust of node node-c dropped from 80.0 to 42.2 in round 3 (integrity 0.01, security 0.61)."
    )


async def test_missing_notify_action_keeps_release_instructions(hass: HomeAssistant) -> None:
    """Test a notify action that does not exist leaves the quarantine notification in place."""
    persistent = async_mock_service(hass, "persistent_notification", "create")
    await _setup_blueprint(hass, notify_action="notify.removed_phone")

    hass.bus.async_fire(EVENT_QUARANTINED, _event_data(26.3, 42.2, status="quarantined"))
    await hass.async_block_till_done()

    assert len(persistent) == 1
    assert "fltrust.release" in persistent[0].data["message"]
