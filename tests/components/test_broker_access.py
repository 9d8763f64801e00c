"""Cutting and restoring a quarantined node's broker access through Mosquitto's dynamic security."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import MagicMock, patch

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_mqtt_message,
)
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.fltrust.broker_access import AccessState
from custom_components.fltrust.const import (
    CONF_BROKER_ACCESS,
    CONF_BROKER_USERNAME,
    DOMAIN,
    EVENT_QUARANTINED,
)
from custom_components.fltrust.core.dynsec import CONTROL_TOPIC, RESPONSE_TOPIC

from .conftest import (
    ENTRY_ID,
    PREFIX,
    EdgeNode,
    advance,
    send_poisoned_rounds,
    set_up_with_quarantined_node,
)

# Commands wait for responses on a frozen clock, so a regression would hang instead of failing.
pytestmark = pytest.mark.timeout(120)

ISSUE_NODE_1 = f"broker_access_{ENTRY_ID}_node-1"


def _commands(mqtt_mock: MagicMock) -> list[dict[str, Any]]:
    """Return the dynamic-security commands the integration published, in order."""
    commands = []
    for call in mqtt_mock.async_publish.call_args_list:
        topic, payload, qos, retain = call.args[:4]
        if topic == CONTROL_TOPIC:
            assert (qos, retain) == (1, False)
            commands += json.loads(payload)["commands"]
    return commands


async def _sent(hass: HomeAssistant, mqtt_mock: MagicMock, count: int) -> list[dict[str, Any]]:
    """Return the commands once at least ``count`` went out.

    Commands go out from background tasks, which ``async_block_till_done``
    does not wait for, so the test yields to the loop until they appear.
    """
    for _ in range(200):
        await hass.async_block_till_done()
        if len(_commands(mqtt_mock)) >= count:
            break
        await asyncio.sleep(0)
    commands = _commands(mqtt_mock)
    assert len(commands) == count
    return commands


def _respond(hass: HomeAssistant, command: dict[str, Any], error: str | None = None) -> None:
    """Publish the response the plugin sends to ``command``."""
    response = {"command": command["command"], "correlationData": command["correlationData"]}
    if error is not None:
        response["error"] = error
    async_fire_mqtt_message(hass, RESPONSE_TOPIC, json.dumps({"responses": [response]}))


async def _release_node_1(hass: HomeAssistant) -> None:
    """Release node-1 through the action."""
    await hass.services.async_call(
        DOMAIN, "release", {"config_entry_id": ENTRY_ID, "node_id": "node-1"}, blocking=True
    )


@dataclass
class Subscriptions:
    """Confirmations of the response subscription, held back while ``hold`` is set."""

    hold: bool = False
    held: list[Callable[[], None]] = field(default_factory=list)


@pytest.fixture(autouse=True)
def subscriptions() -> Iterator[Subscriptions]:
    """Confirm the response subscription at once, as the broker does, unless a test holds it.

    The harness's MQTT client never reports subscriptions as done.
    """
    state = Subscriptions()

    def on_subscribe_done(
        hass: HomeAssistant, topic: str, qos: int, callback: Callable[[], None]
    ) -> Callable[[], None]:
        assert (topic, qos) == (RESPONSE_TOPIC, 1)
        if state.hold:
            state.held.append(callback)
        else:
            hass.loop.call_soon(callback)
        return lambda: None

    with patch(
        "custom_components.fltrust.broker_access.mqtt.async_on_subscribe_done", on_subscribe_done
    ):
        yield state


@pytest.fixture
def options() -> dict[str, Any]:
    """Return the options of the test federation."""
    return {CONF_BROKER_ACCESS: True, CONF_BROKER_USERNAME: "fltrust-{node_id}"}


@pytest.fixture
async def quarantined_node(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    frozen_time: FrozenDateTimeFactory,
    options: dict[str, Any],
) -> MockConfigEntry:
    """Return the federation, set up with the options and node-1 quarantined."""
    await set_up_with_quarantined_node(hass, mock_config_entry, hass_storage, options)
    return mock_config_entry


async def test_cut_at_start_restored_on_release(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    mqtt_mock: MagicMock,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test a node quarantined before the start loses its account, and gets it back on release."""
    [disable] = await _sent(hass, mqtt_mock, 1)
    assert disable["command"] == "disableClient"
    assert disable["username"] == "fltrust-node-1"

    _respond(hass, disable)
    await hass.async_block_till_done(wait_background_tasks=True)

    coordinator = quarantined_node.runtime_data
    assert coordinator.broker_access.records["node-1"].state is AccessState.CUT
    assert issue_registry.async_get_issue(DOMAIN, ISSUE_NODE_1) is None
    sensor = hass.states.get("binary_sensor.node_1_quarantined")
    assert sensor.attributes["broker_access"] == "cut"
    assert "broker_access" not in hass.states.get("binary_sensor.node_2_quarantined").attributes

    await _release_node_1(hass)
    await hass.async_block_till_done()
    enable = (await _sent(hass, mqtt_mock, 2))[-1]
    assert enable["command"] == "enableClient"
    assert enable["username"] == "fltrust-node-1"
    assert enable["correlationData"] != disable["correlationData"]
    _respond(hass, enable)
    await hass.async_block_till_done(wait_background_tasks=True)

    assert coordinator.broker_access.records["node-1"].state is AccessState.RESTORED
    sensor = hass.states.get("binary_sensor.node_1_quarantined")
    assert sensor.attributes["broker_access"] == "restored"


async def test_unknown_account_raises_issue_until_cut(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    mqtt_mock: MagicMock,
    issue_registry: ir.IssueRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test the plugin's error becomes a repair issue naming the node and its account."""
    [disable] = await _sent(hass, mqtt_mock, 1)

    _respond(hass, disable, error="Client not found")
    await hass.async_block_till_done(wait_background_tasks=True)

    issue = issue_registry.async_get_issue(DOMAIN, ISSUE_NODE_1)
    assert issue is not None
    assert issue.translation_key == "broker_access_cut_failed"
    assert issue.severity is ir.IssueSeverity.ERROR
    assert issue.translation_placeholders["username"] == "fltrust-node-1"
    assert issue.translation_placeholders["error"] == "Client not found"
    record = quarantined_node.runtime_data.broker_access.records["node-1"]
    assert record.state is AccessState.FAILED
    sensor = hass.states.get("binary_sensor.node_1_quarantined")
    assert sensor.attributes["broker_access"] == "failed"
    assert "could not cut the broker access of node node-1" in caplog.text

    # Unloading the federation withdraws its issue.
    await hass.config_entries.async_unload(quarantined_node.entry_id)
    await hass.async_block_till_done()
    assert issue_registry.async_get_issue(DOMAIN, ISSUE_NODE_1) is None

    # The next start tries again and raises the issue again, and a later success clears it.
    assert await hass.config_entries.async_setup(quarantined_node.entry_id)
    await hass.async_block_till_done()
    retry = (await _sent(hass, mqtt_mock, 2))[-1]
    assert retry["command"] == "disableClient"
    _respond(hass, retry, error="Client not found")
    await hass.async_block_till_done(wait_background_tasks=True)
    assert issue_registry.async_get_issue(DOMAIN, ISSUE_NODE_1) is not None

    await _release_node_1(hass)
    await hass.async_block_till_done()
    enable = (await _sent(hass, mqtt_mock, 3))[-1]
    assert enable["command"] == "enableClient"
    _respond(hass, enable)
    await hass.async_block_till_done(wait_background_tasks=True)

    assert issue_registry.async_get_issue(DOMAIN, ISSUE_NODE_1) is None


async def test_broker_without_plugin_raises_issue(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    options: dict[str, Any],
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test a command without a response ends in a repair issue instead of waiting forever."""
    with patch("custom_components.fltrust.broker_access.RESPONSE_TIMEOUT", 0.01):
        await set_up_with_quarantined_node(hass, mock_config_entry, hass_storage, options)
        await asyncio.sleep(0.05)
        await hass.async_block_till_done()

    issue = issue_registry.async_get_issue(DOMAIN, ISSUE_NODE_1)
    assert issue is not None
    assert "no response" in issue.translation_placeholders["error"]
    assert "dynamic-security plugin" in issue.translation_placeholders["error"]
    assert mock_config_entry.state is ConfigEntryState.LOADED


async def test_own_account_never_disabled(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    frozen_time: FrozenDateTimeFactory,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test a pattern that names Home Assistant's own MQTT account leaves it alone."""
    [mqtt_entry] = hass.config_entries.async_entries("mqtt")
    hass.config_entries.async_update_entry(
        mqtt_entry, data={**mqtt_entry.data, "username": "homeassistant-node-1"}
    )
    options = {CONF_BROKER_ACCESS: True, CONF_BROKER_USERNAME: "homeassistant-{node_id}"}

    await set_up_with_quarantined_node(hass, mock_config_entry, hass_storage, options)
    await hass.async_block_till_done(wait_background_tasks=True)

    assert _commands(mqtt_mock) == []
    issue = issue_registry.async_get_issue(DOMAIN, ISSUE_NODE_1)
    assert "account Home Assistant logs in" in issue.translation_placeholders["error"]
    with pytest.raises(HomeAssistantError):
        await _create_account(hass, mqtt_mock, {"node_id": "node-1"}, [])


@pytest.mark.parametrize("options", [{}, {CONF_BROKER_ACCESS: False}])
async def test_option_off_sends_no_command(
    hass: HomeAssistant, quarantined_node: MockConfigEntry, mqtt_mock: MagicMock
) -> None:
    """Test nothing reaches the plugin unless the option is on."""
    await _release_node_1(hass)
    await hass.async_block_till_done()

    assert _commands(mqtt_mock) == []
    assert quarantined_node.runtime_data.broker_access is None
    assert "broker_access" not in hass.states.get("binary_sensor.node_1_quarantined").attributes


async def test_quarantine_in_a_round_cuts_access(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    frozen_time: FrozenDateTimeFactory,
    options: dict[str, Any],
) -> None:
    """Test a node that a round quarantines loses its account, and only that node."""
    mock_config_entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(
        mock_config_entry, options={**mock_config_entry.options, **options}
    )
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    quarantined = async_capture_events(hass, EVENT_QUARANTINED)
    nodes = [EdgeNode(hass, node_id) for node_id in ("node-a", "node-b", "node-c")]
    for node in nodes:
        node.send_heartbeat()
    await hass.async_block_till_done()

    await send_poisoned_rounds(
        hass, frozen_time, nodes, "node-c", seed=5, until=lambda: bool(quarantined)
    )

    assert [event.data["node_id"] for event in quarantined] == ["node-c"]
    [disable] = await _sent(hass, mqtt_mock, 1)
    assert (disable["command"], disable["username"]) == ("disableClient", "fltrust-node-c")
    _respond(hass, disable)
    await hass.async_block_till_done(wait_background_tasks=True)
    record = mock_config_entry.runtime_data.broker_access.records["node-c"]
    assert record.state is AccessState.CUT
    await hass.config_entries.async_unload(mock_config_entry.entry_id)
    await hass.async_block_till_done()


async def test_foreign_and_invalid_responses_ignored(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    mqtt_mock: MagicMock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test responses to other clients' commands and junk leave the waiting command alone."""
    [disable] = await _sent(hass, mqtt_mock, 1)

    async_fire_mqtt_message(hass, RESPONSE_TOPIC, b"not json")
    async_fire_mqtt_message(
        hass,
        RESPONSE_TOPIC,
        json.dumps({"responses": [{"command": "disableClient", "error": "Client not found"}]}),
    )
    await hass.async_block_till_done()
    assert "node-1" not in quarantined_node.runtime_data.broker_access.records
    assert "ignored an invalid response" in caplog.text

    _respond(hass, disable)
    await hass.async_block_till_done(wait_background_tasks=True)
    record = quarantined_node.runtime_data.broker_access.records["node-1"]
    assert record.state is AccessState.CUT


async def _create_account(
    hass: HomeAssistant, mqtt_mock: MagicMock, data: dict[str, Any], errors: list[str | None]
) -> dict[str, Any]:
    """Call the account action and respond to its commands, one by one, with ``errors``.

    The action sends each command after the response to the one before.
    """
    before = len(_commands(mqtt_mock))
    task = hass.async_create_task(
        hass.services.async_call(
            DOMAIN,
            "create_node_account",
            {"config_entry_id": ENTRY_ID, **data},
            blocking=True,
            return_response=True,
        )
    )
    for error in errors:
        for _ in range(100):
            await asyncio.sleep(0)
            if len(_commands(mqtt_mock)) > before or task.done():
                break
        assert len(_commands(mqtt_mock)) == before + 1, "the action sent no further command"
        _respond(hass, _commands(mqtt_mock)[before], error)
        before += 1
    return await task


async def test_create_node_account(
    hass: HomeAssistant, quarantined_node: MockConfigEntry, mqtt_mock: MagicMock
) -> None:
    """Test the action creates a confined account and returns its login once."""
    [_disable] = await _sent(hass, mqtt_mock, 1)

    response = await _create_account(
        hass,
        mqtt_mock,
        {"node_id": "node-3", "sensor_topics": ["zigbee2mqtt/kitchen"]},
        [None, None],
    )

    create_role, create_client = _commands(mqtt_mock)[1:]
    assert response["username"] == "fltrust-node-3"
    assert len(response["password"]) >= 32
    assert create_client["command"] == "createClient"
    assert create_client["username"] == "fltrust-node-3"
    assert create_client["password"] == response["password"]
    assert create_client["clientid"] == "fltrust-edge-node-3"
    assert create_client["roles"] == [{"rolename": "fltrust-node-3"}]
    assert create_role["command"] == "createRole"
    topics = {acl["topic"] for acl in create_role["acls"] if acl["allow"]}
    assert topics == {
        f"{PREFIX}/node/node-3/#",
        f"{PREFIX}/node/node-3/command",
        f"{PREFIX}/coordinator/#",
        "zigbee2mqtt/kitchen",
    }


async def test_new_account_clears_failed_restore(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    mqtt_mock: MagicMock,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test a node released without an account loses its failure once it gets one."""
    [disable] = await _sent(hass, mqtt_mock, 1)
    _respond(hass, disable)
    await hass.async_block_till_done(wait_background_tasks=True)
    await _release_node_1(hass)
    enable = (await _sent(hass, mqtt_mock, 2))[-1]
    _respond(hass, enable, error="Client not found")
    await hass.async_block_till_done(wait_background_tasks=True)
    assert issue_registry.async_get_issue(DOMAIN, ISSUE_NODE_1) is not None

    await _create_account(hass, mqtt_mock, {"node_id": "node-1"}, [None, None])
    await hass.async_block_till_done()

    assert issue_registry.async_get_issue(DOMAIN, ISSUE_NODE_1) is None
    assert "node-1" not in quarantined_node.runtime_data.broker_access.records
    sensor = hass.states.get("binary_sensor.node_1_quarantined")
    assert sensor.attributes.get("broker_access") is None


async def test_create_node_account_never_takes_over(
    hass: HomeAssistant, quarantined_node: MockConfigEntry, mqtt_mock: MagicMock
) -> None:
    """Test an existing role or account stops the action and leaves nothing half made."""
    with pytest.raises(HomeAssistantError) as failed:
        await _create_account(hass, mqtt_mock, {"node_id": "node-2"}, ["Role already exists"])
    assert failed.value.translation_key == "broker_account_failed"
    assert "Role already exists" in failed.value.translation_placeholders["error"]
    # No account was created that could get the other role.
    assert [command["command"] for command in _commands(mqtt_mock)[1:]] == ["createRole"]

    with pytest.raises(HomeAssistantError):
        await _create_account(
            hass, mqtt_mock, {"node_id": "node-2"}, [None, "Client already exists", None]
        )
    assert [command["command"] for command in _commands(mqtt_mock)[2:]] == [
        "createRole",
        "createClient",
        "deleteRole",
    ]
    assert _commands(mqtt_mock)[-1]["rolename"] == "fltrust-node-2"


async def test_no_account_for_quarantined_node(
    hass: HomeAssistant, quarantined_node: MockConfigEntry, mqtt_mock: MagicMock
) -> None:
    """Test a quarantined node gets no new account, which would lift the cut."""
    await _sent(hass, mqtt_mock, 1)

    with pytest.raises(ServiceValidationError) as rejected:
        await _create_account(hass, mqtt_mock, {"node_id": "node-1"}, [])

    assert rejected.value.translation_key == "account_for_quarantined_node"
    assert len(_commands(mqtt_mock)) == 1


@pytest.mark.parametrize("topic", ["#", "$CONTROL/dynamic-security/#", f"{PREFIX}/node/+/state"])
async def test_create_node_account_rejects_topic(
    hass: HomeAssistant, quarantined_node: MockConfigEntry, mqtt_mock: MagicMock, topic: str
) -> None:
    """Test a sensor topic that would open the federation's or the broker's topics is rejected."""
    with pytest.raises(ServiceValidationError) as rejected:
        await hass.services.async_call(
            DOMAIN,
            "create_node_account",
            {"config_entry_id": ENTRY_ID, "node_id": "node-3", "sensor_topics": [topic]},
            blocking=True,
            return_response=True,
        )

    assert rejected.value.translation_key == "invalid_sensor_topic"
    assert len(_commands(mqtt_mock)) == 1


@pytest.mark.parametrize("options", [{}])
async def test_create_node_account_needs_option(
    hass: HomeAssistant, quarantined_node: MockConfigEntry
) -> None:
    """Test the action explains that broker access must be turned on first."""
    with pytest.raises(ServiceValidationError) as rejected:
        await hass.services.async_call(
            DOMAIN,
            "create_node_account",
            {"config_entry_id": ENTRY_ID, "node_id": "node-3"},
            blocking=True,
            return_response=True,
        )

    assert rejected.value.translation_key == "broker_access_off"


async def test_commands_wait_for_subscription(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    frozen_time: FrozenDateTimeFactory,
    options: dict[str, Any],
    subscriptions: Subscriptions,
) -> None:
    """Test no command goes out before the broker confirmed the response subscription."""
    subscriptions.hold = True
    await set_up_with_quarantined_node(hass, mock_config_entry, hass_storage, options)

    assert _commands(mqtt_mock) == []

    subscriptions.held[0]()
    await hass.async_block_till_done()
    [disable] = await _sent(hass, mqtt_mock, 1)
    assert disable["username"] == "fltrust-node-1"


async def test_late_failure_does_not_hide_release(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    mqtt_mock: MagicMock,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test a disable that fails after a successful release leaves the release's result."""
    [disable] = await _sent(hass, mqtt_mock, 1)
    await _release_node_1(hass)
    await hass.async_block_till_done()
    enable = (await _sent(hass, mqtt_mock, 2))[-1]

    _respond(hass, enable)
    _respond(hass, disable, error="Client not found")
    await hass.async_block_till_done(wait_background_tasks=True)

    record = quarantined_node.runtime_data.broker_access.records["node-1"]
    assert record.state is AccessState.RESTORED
    assert issue_registry.async_get_issue(DOMAIN, ISSUE_NODE_1) is None


async def test_options_flow(
    hass: HomeAssistant, init_integration: MockConfigEntry, entry_options: dict[str, Any]
) -> None:
    """Test the options flow checks the username pattern, saves it and reloads the entry."""
    result = await hass.config_entries.options.async_init(init_integration.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"

    for template in ("fltrust", "{node_id}-{node_id}", "fltrust/{node_id}", "a b{node_id}"):
        result = await hass.config_entries.options.async_configure(
            result["flow_id"], {CONF_BROKER_ACCESS: True, CONF_BROKER_USERNAME: template}
        )
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {CONF_BROKER_USERNAME: "invalid_username_template"}

    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_BROKER_ACCESS: True, CONF_BROKER_USERNAME: " node-{node_id} "}
    )
    await hass.async_block_till_done()

    assert result["type"] is FlowResultType.CREATE_ENTRY
    # Round settings left out of the form keep their values.
    assert init_integration.options == {
        **entry_options,
        CONF_BROKER_ACCESS: True,
        CONF_BROKER_USERNAME: "node-{node_id}",
    }
    coordinator = init_integration.runtime_data
    assert coordinator.broker_access is not None
    assert coordinator.broker_access.username_template == "node-{node_id}"


async def test_options_flow_rejects_shared_pattern(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Test two federations cannot manage accounts under the same username pattern."""
    other = MockConfigEntry(
        domain=DOMAIN,
        title="Other federation",
        unique_id="other/prefix",
        data=init_integration.data,
        options={
            **init_integration.options,
            CONF_BROKER_ACCESS: True,
            CONF_BROKER_USERNAME: "fltrust-{node_id}",
        },
        minor_version=2,
    )
    other.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(init_integration.entry_id)

    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_BROKER_ACCESS: True, CONF_BROKER_USERNAME: "fltrust-{node_id}"}
    )
    assert result["errors"] == {CONF_BROKER_USERNAME: "username_template_in_use"}

    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_BROKER_ACCESS: True, CONF_BROKER_USERNAME: "home-{node_id}"}
    )
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize(
    ("error", "removed"),
    [(None, True), ("Client not found", True), ("Unauthorized", False)],
)
async def test_retired_node_loses_account(
    hass: HomeAssistant,
    quarantined_node: MockConfigEntry,
    mqtt_mock: MagicMock,
    hass_ws_client: WebSocketGenerator,
    device_registry: dr.DeviceRegistry,
    frozen_time: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
    error: str | None,
    removed: bool,
) -> None:
    """Test deleting a retired node's device disables its account, or keeps the node.

    A node without an account of that name has nothing to disable, so it goes.
    """
    assert await async_setup_component(hass, "config", {})
    [disable_quarantined] = await _sent(hass, mqtt_mock, 1)
    _respond(hass, disable_quarantined)
    await advance(hass, frozen_time, 300)
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{ENTRY_ID}_node-2"), ENTRY_ID
    )
    client = await hass_ws_client(hass)

    await client.send_json_auto_id(
        {
            "type": "config/device_registry/remove_config_entry",
            "config_entry_id": ENTRY_ID,
            "device_id": device.id,
        }
    )
    [_, disable] = await _sent(hass, mqtt_mock, 2)
    _respond(hass, disable, error)
    response = await client.receive_json()
    await hass.async_block_till_done()

    assert (disable["command"], disable["username"]) == ("disableClient", "fltrust-node-2")
    assert response["success"] is removed
    node_device = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{ENTRY_ID}_node-2"), ENTRY_ID
    )
    assert (node_device is None) is removed
    no_account = "retired node node-2 has no broker account fltrust-node-2" in caplog.text
    assert no_account is (error == "Client not found")
    if not removed:
        assert "Unauthorized" in response["error"]["message"]
        assert "node-2" in quarantined_node.runtime_data.data.nodes
