"""The fltrust.release, issue_node_key and replace_node_key actions."""

from __future__ import annotations

from typing import Any
from unittest.mock import MagicMock

import pytest
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError, Unauthorized
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockUser,
    async_capture_events,
)

from custom_components.fltrust.const import DOMAIN, EVENT_RELEASED
from custom_components.fltrust.core import protocol, security

from .conftest import (
    ENTRY_ID,
    FEDERATION_KEY,
    PREFIX,
    EdgeNode,
    published,
)


async def _call(
    hass: HomeAssistant,
    service: str,
    data: dict[str, Any],
    context: Context | None = None,
    return_response: bool = False,
) -> Any:
    return await hass.services.async_call(
        DOMAIN,
        service,
        data,
        blocking=True,
        context=context,
        return_response=return_response,
    )


async def test_release_quarantined_node(
    hass: HomeAssistant, quarantined_node: MockConfigEntry, mqtt_mock: MagicMock
) -> None:
    """Test a release lifts the quarantine, commands the node and fires the event."""
    released = async_capture_events(hass, EVENT_RELEASED)
    assert hass.states.get("binary_sensor.node_1_quarantined").state == STATE_ON
    context = Context()

    await _call(hass, "release", {"config_entry_id": ENTRY_ID, "node_id": "node-1"}, context)
    await hass.async_block_till_done()

    assert hass.states.get("binary_sensor.node_1_quarantined").state == STATE_OFF
    assert hass.states.get("binary_sensor.node_1_re_authentication_required").state == STATE_ON
    assert hass.states.get("sensor.node_1_trust").state == "55.0"
    [challenge] = [
        envelope["body"]["nonce"]
        for envelope, _, _ in published(mqtt_mock, protocol.command_topic(PREFIX, "node-1"))
        if envelope["body"]["action"] == "reauthenticate"
    ]
    # Above the counters that the stored state contains for node-1.
    EdgeNode(hass, "node-1").send("auth", {"nonce": challenge}, counter=10**6)
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.node_1_re_authentication_required").state == STATE_OFF
    assert hass.states.get("sensor.node_1_trust").state == "55.0"
    assert len(released) == 1
    assert released[0].context is context
    assert released[0].data == {
        "config_entry_id": ENTRY_ID,
        "device_id": released[0].data["device_id"],
        "node_id": "node-1",
        "trust": 55.0,
        "previous_trust": 20.0,
        "round": 4,
        "status": "reauth_required",
        "reasons": ["released by a user"],
    }
    assert released[0].data["device_id"]
    actions = [
        envelope["body"]["action"]
        for envelope, _, retain in published(mqtt_mock, protocol.command_topic(PREFIX, "node-1"))
        if retain
    ]
    assert actions == ["release", "reauthenticate"]


@pytest.mark.parametrize(
    ("data", "translation_key"),
    [
        ({"config_entry_id": "no-such-entry", "node_id": "node-1"}, "entry_not_found"),
        ({"config_entry_id": ENTRY_ID, "node_id": "node-9"}, "node_not_found"),
        ({"config_entry_id": ENTRY_ID, "node_id": "node-2"}, "node_not_quarantined"),
        ({"config_entry_id": ENTRY_ID, "node_id": "Kitchen/Pi"}, "invalid_node_id"),
    ],
)
async def test_release_errors(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    data: dict[str, str],
    translation_key: str,
) -> None:
    """Test a release of an unknown entry, an unknown node or a trusted node fails clearly."""
    with pytest.raises(ServiceValidationError) as err:
        await _call(hass, "release", data)

    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == translation_key
    assert hass.states.get("binary_sensor.node_1_quarantined").state == STATE_ON


async def test_release_other_domain_entry(
    hass: HomeAssistant, quarantined_node: MockConfigEntry
) -> None:
    """Test an entry id of another integration is reported as not found."""
    other = MockConfigEntry(domain="demo", entry_id="other-entry")
    other.add_to_hass(hass)

    with pytest.raises(ServiceValidationError) as err:
        await _call(hass, "release", {"config_entry_id": "other-entry", "node_id": "node-1"})

    assert err.value.translation_key == "entry_not_found"


async def test_release_unloaded_entry(
    hass: HomeAssistant, quarantined_node: MockConfigEntry
) -> None:
    """Test a release on an unloaded federation fails with entry_not_loaded."""
    await hass.config_entries.async_unload(quarantined_node.entry_id)
    await hass.async_block_till_done()

    with pytest.raises(ServiceValidationError) as err:
        await _call(hass, "release", {"config_entry_id": ENTRY_ID, "node_id": "node-1"})

    assert err.value.translation_key == "entry_not_loaded"


async def test_issue_node_key(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    """Test the issued key is the node key an edge node derives from the federation key."""
    response = await _call(
        hass,
        "issue_node_key",
        {"config_entry_id": ENTRY_ID, "node_id": "kitchen-pi"},
        return_response=True,
    )

    federation_key = bytes.fromhex(FEDERATION_KEY)
    assert response == {
        "node_id": "kitchen-pi",
        "node_key": security.derive_node_key(federation_key, "kitchen-pi").hex(),
        "key_generation": 0,
        "coordinator_public_key": security.public_key_hex(
            security.derive_coordinator_private_key(federation_key)
        ),
        "topic_prefix": PREFIX,
    }


async def test_replace_node_key(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test a replaced key is rejected without a trust charge, and the new one works."""
    node = EdgeNode(hass, "kitchen-pi")
    node.send_heartbeat()
    await hass.async_block_till_done()
    trust = hass.states.get("sensor.kitchen_pi_trust").state
    data = {"config_entry_id": ENTRY_ID, "node_id": "kitchen-pi"}

    response = await _call(hass, "replace_node_key", data, return_response=True)

    federation_key = bytes.fromhex(FEDERATION_KEY)
    new_key = security.derive_node_key(federation_key, "kitchen-pi", 1).hex()
    assert response["node_key"] == new_key
    assert response["key_generation"] == 1
    assert response["coordinator_public_key"] == security.public_key_hex(
        security.derive_coordinator_private_key(federation_key)
    )
    assert await _call(hass, "issue_node_key", data, return_response=True) == response
    # Saved at once, so a crash cannot bring the replaced key back.
    stored = hass_storage[f"{DOMAIN}.{ENTRY_ID}"]["data"]
    assert stored["key_generations"] == {"kitchen-pi": 1}
    assert "replaced the key of node kitchen-pi with generation 1" in caplog.text

    node.send_heartbeat()
    await hass.async_block_till_done()

    assert "reason revoked_key" in caplog.text
    assert hass.states.get("sensor.kitchen_pi_trust").state == trust
    assert hass.states.get("sensor.test_federation_rejected_messages").state == "1"

    node.key = bytes.fromhex(new_key)
    node.send_heartbeat()
    await hass.async_block_till_done()

    assert hass.states.get("sensor.test_federation_rejected_messages").state == "1"


async def test_replace_unknown_node_key(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Test a node id that never sent a verified message is rejected, not taken as replaced."""
    with pytest.raises(ServiceValidationError) as err:
        await _call(
            hass,
            "replace_node_key",
            {"config_entry_id": ENTRY_ID, "node_id": "kitchen-pl"},
            return_response=True,
        )

    assert err.value.translation_key == "node_not_found"
    response = await _call(
        hass,
        "issue_node_key",
        {"config_entry_id": ENTRY_ID, "node_id": "kitchen-pl"},
        return_response=True,
    )
    assert response["key_generation"] == 0


async def test_replace_node_key_survives_reload(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Test the key generation is kept over an unload and a new set-up."""
    EdgeNode(hass, "kitchen-pi").send_heartbeat()
    await hass.async_block_till_done()
    data = {"config_entry_id": ENTRY_ID, "node_id": "kitchen-pi"}
    await _call(hass, "replace_node_key", data, return_response=True)
    await _call(hass, "replace_node_key", data, return_response=True)

    await hass.config_entries.async_reload(ENTRY_ID)
    await hass.async_block_till_done()

    response = await _call(hass, "issue_node_key", data, return_response=True)
    assert response["key_generation"] == 2
    expected = security.derive_node_key(bytes.fromhex(FEDERATION_KEY), "kitchen-pi", 2)
    assert response["node_key"] == expected.hex()


async def test_issue_node_key_invalid_id(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Test a node id that cannot appear in a topic is rejected."""
    with pytest.raises(ServiceValidationError) as err:
        await _call(
            hass,
            "issue_node_key",
            {"config_entry_id": ENTRY_ID, "node_id": "Kitchen/Pi"},
            return_response=True,
        )

    assert err.value.translation_key == "invalid_node_id"
    assert err.value.translation_placeholders["node_id"] == "Kitchen/Pi"


async def test_overlong_node_id_shortened_in_error(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Test an overlong node id appears only by its start in the error."""
    with pytest.raises(ServiceValidationError) as err:
        await _call(hass, "release", {"config_entry_id": ENTRY_ID, "node_id": "x" * 5000})

    assert err.value.translation_key == "invalid_node_id"
    assert err.value.translation_placeholders["node_id"] == "x" * 80 + "…"


async def test_issue_node_key_requires_response(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Test the key action cannot be called without asking for its response."""
    with pytest.raises(ServiceValidationError):
        await _call(hass, "issue_node_key", {"config_entry_id": ENTRY_ID, "node_id": "node-1"})


@pytest.mark.parametrize(
    ("service", "return_response"),
    [
        ("release", False),
        ("issue_node_key", True),
        ("replace_node_key", True),
        ("create_node_account", True),
    ],
)
async def test_actions_admin_only(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_read_only_user: MockUser,
    service: str,
    return_response: bool,
) -> None:
    """Test users without admin rights can neither release nodes nor get keys."""
    with pytest.raises(Unauthorized):
        await _call(
            hass,
            service,
            {"config_entry_id": ENTRY_ID, "node_id": "node-1"},
            Context(user_id=hass_read_only_user.id),
            return_response,
        )
