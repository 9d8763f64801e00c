"""Set-up, unload and restart of the fltrust integration."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import MagicMock, patch

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.fltrust.const import DOMAIN
from custom_components.fltrust.coordinator import settings_from_entry
from custom_components.fltrust.core import protocol, security
from custom_components.fltrust.core.federation import Federation
from custom_components.fltrust.core.trust import TrustStatus

from .conftest import ENTRY_ID, PREFIX, EdgeNode, advance, federation_with_nodes, now, published

STORAGE_KEY = f"{DOMAIN}.{ENTRY_ID}"
BACKUP_KEY = f"{DOMAIN}.{ENTRY_ID}.backup"


async def test_setup_and_unload(
    hass: HomeAssistant, init_integration: MockConfigEntry, mqtt_mock: MagicMock
) -> None:
    """Test the entry loads, subscribes and publishes the model, then unloads cleanly."""
    entry = init_integration
    assert entry.state is ConfigEntryState.LOADED

    subscribed = [call.args[0] for call in mqtt_mock.async_subscribe.call_args_list]
    assert protocol.uplink_subscription(PREFIX) in subscribed

    models = published(mqtt_mock, protocol.model_topic(PREFIX))
    assert len(models) == 1
    envelope, qos, retain = models[0]
    assert retain is True
    assert qos == 1
    assert envelope["type"] == "model"
    assert envelope["body"]["version"] == 0
    public_key = security.load_public_key(entry.runtime_data.public_key)
    security.verify_ed25519(public_key, envelope)

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED


async def test_remove_entry_clears_state_and_retained(
    hass: HomeAssistant,
    mock_config_entry: MockConfigEntry,
    mqtt_mock: MagicMock,
    hass_storage: dict[str, Any],
) -> None:
    """Test removing an entry deletes its storage and the retained model and commands."""
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    EdgeNode(hass, "node-1").send_heartbeat()
    await hass.async_block_till_done()
    assert await hass.config_entries.async_unload(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    assert STORAGE_KEY in hass_storage
    assert BACKUP_KEY in hass_storage
    mqtt_mock.async_publish.reset_mock()

    await hass.config_entries.async_remove(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    assert STORAGE_KEY not in hass_storage
    assert BACKUP_KEY not in hass_storage
    cleared = {
        call.args[0]
        for call in mqtt_mock.async_publish.call_args_list
        if call.args[1] in (b"", "") and call.args[3] is True
    }
    assert cleared == {
        protocol.model_topic(PREFIX),
        protocol.round_topic(PREFIX),
        protocol.command_topic(PREFIX, "node-1"),
    }


async def test_setup_retries_without_mqtt(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> None:
    """Test the entry waits for MQTT when the MQTT integration is not available."""
    mock_config_entry.add_to_hass(hass)
    with patch("custom_components.fltrust.mqtt.async_wait_for_mqtt_client", return_value=False):
        await hass.config_entries.async_setup(mock_config_entry.entry_id)
        await hass.async_block_till_done()
    assert mock_config_entry.state is ConfigEntryState.SETUP_RETRY


async def test_unload_saves_state(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    """Test unloading writes nodes, replay counters and the round to storage."""
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    node.send_heartbeat()
    await hass.async_block_till_done()

    assert await hass.config_entries.async_unload(init_integration.entry_id)
    await hass.async_block_till_done()

    stored = hass_storage[STORAGE_KEY]["data"]
    assert "node-1" in stored["nodes"]
    assert stored["replay"] == {"node-1": 2}
    assert set(stored["nodes"]["node-1"]["devices"]) == {"thermostat"}


async def test_reload_keeps_accepting_a_lagging_clock(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
    frozen_time: FrozenDateTimeFactory,
) -> None:
    """Test a clean unload marks the state, so a reload accepts messages stamped before it."""
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    await hass.async_block_till_done()
    # A heartbeat stamped now, but published after the reload, as a lagging clock would.
    late = node.envelope("heartbeat", _heartbeat_body())

    assert await hass.config_entries.async_unload(init_integration.entry_id)
    await hass.async_block_till_done()
    assert hass_storage[STORAGE_KEY]["data"]["clean"] is True
    await advance(hass, frozen_time, 30)
    assert await hass.config_entries.async_setup(init_integration.entry_id)
    await hass.async_block_till_done()
    node.send_raw(node.topic("heartbeat"), protocol.encode(late))
    await hass.async_block_till_done()

    assert "clean" not in hass_storage[STORAGE_KEY]["data"]
    assert hass.states.get("sensor.test_federation_rejected_messages").state == "0"


async def test_stop_saves_state(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    """Test Home Assistant stopping writes the state without waiting for the save delay."""
    EdgeNode(hass, "node-1").send_heartbeat()
    await hass.async_block_till_done()
    assert STORAGE_KEY not in hass_storage

    hass.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    await hass.async_block_till_done()

    assert hass_storage[STORAGE_KEY]["data"]["replay"] == {"node-1": 1}


async def test_changes_saved_after_delay(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
    frozen_time: FrozenDateTimeFactory,
) -> None:
    """Test a change is written to storage once the save delay has passed."""
    EdgeNode(hass, "node-1").send_heartbeat()
    await hass.async_block_till_done()
    assert STORAGE_KEY not in hass_storage

    await advance(hass, frozen_time, 11)

    assert hass_storage[STORAGE_KEY]["data"]["replay"] == {"node-1": 1}


async def test_new_federation_rejects_recorded_messages(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    frozen_time: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test a federation without stored state rejects messages sent before it started."""
    node = EdgeNode(hass, "node-1")
    # Recorded from an earlier federation with the same key, a minute before set-up.
    recorded = node.envelope("heartbeat", _heartbeat_body())
    frozen_time.tick(60)
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    node.send_raw(node.topic("heartbeat"), protocol.encode(recorded))
    await hass.async_block_till_done()

    assert "reason stale" in caplog.text
    assert hass.states.get("sensor.test_federation_rejected_messages").state == "1"
    node.send_heartbeat()
    await hass.async_block_till_done()
    assert hass.states.get("sensor.node_1_trust") is not None


async def test_state_restored_after_restart(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    frozen_time: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test trust, the round, the model version and replay counters survive a restart."""
    federation = Federation(settings_from_entry(mock_config_entry))
    node = EdgeNode(hass, "node-1")
    for counter in (1, 2, 3):
        envelope = node.envelope("heartbeat", _heartbeat_body(), counter=counter)
        federation.handle_message(node.topic("heartbeat"), protocol.encode(envelope), now())
    federation.round = 7
    federation.model.version = 4
    federation.nodes["node-1"].trust.score = 42.5
    hass_storage[STORAGE_KEY] = {
        "version": 1,
        "minor_version": 1,
        "key": STORAGE_KEY,
        "data": json.loads(json.dumps(federation.to_dict())),
    }

    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    # The state was not saved on a clean stop, as after a crash, so a round and a
    # model may have gone out after the save: both numbers move one ahead.
    round_state = hass.states.get("sensor.test_federation_round")
    assert round_state.state == "8"
    assert round_state.attributes["model_version"] == 5
    assert hass.states.get("sensor.node_1_trust").state == "42.5"
    models = published(mqtt_mock, protocol.model_topic(PREFIX))
    assert models[-1][0]["body"]["version"] == 5

    # A message recorded before the restart is a replay afterwards.
    replayed = node.envelope("heartbeat", _heartbeat_body(), counter=3)
    node.send_raw(node.topic("heartbeat"), protocol.encode(replayed))
    await hass.async_block_till_done()
    assert hass.states.get("sensor.test_federation_rejected_messages").state == "1"
    assert "rejected a message from known node node-1, reason replayed" in caplog.text

    await hass.config_entries.async_unload(mock_config_entry.entry_id)
    await hass.async_block_till_done()


@pytest.mark.parametrize(
    "data",
    [
        {"round": "seven", "nodes": {}},
        {"nodes": []},
        {"replay": []},
        {"nodes": {"node-1": {"trust": {"score": "x"}}}},
        {"nodes": {"node-1": {"trust": {"update_baselines": {"pump": {"watch": 1}}}}}},
    ],
    ids=["round", "nodes", "replay", "score", "baseline"],
)
async def test_invalid_stored_state(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    data: dict[str, Any],
) -> None:
    """Test the entry fails instead of starting empty when the stored state is invalid."""
    hass_storage[STORAGE_KEY] = {
        "version": 1,
        "minor_version": 1,
        "key": STORAGE_KEY,
        "data": data,
    }
    mock_config_entry.add_to_hass(hass)
    await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    assert mock_config_entry.state is ConfigEntryState.SETUP_ERROR
    assert "stored federation state" in caplog.text
    assert hass_storage[STORAGE_KEY]["data"] == data


def _quarantined_state(entry: MockConfigEntry) -> dict[str, Any]:
    """Return the stored state of a federation with node-1 quarantined and node-2 trusted."""
    federation = federation_with_nodes(entry, "node-1", "node-2")
    federation.nodes["node-1"].trust.status = TrustStatus.QUARANTINED
    federation.nodes["node-1"].trust.score = 20.0
    federation.round = 4
    return json.loads(json.dumps(federation.to_dict(clean=True)))


def _put(hass_storage: dict[str, Any], key: str, data: dict[str, Any]) -> None:
    hass_storage[key] = {"version": 1, "minor_version": 1, "key": key, "data": data}


@pytest.mark.parametrize(
    "main", [None, {}, {"version": 1, "round": 4}], ids=["lost", "empty", "cut"]
)
async def test_backup_replaces_damaged_state(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    main: dict[str, Any] | None,
) -> None:
    """Test a lost or damaged state file is replaced by its backup, quarantine included."""
    if main is not None:
        _put(hass_storage, STORAGE_KEY, main)
    _put(hass_storage, BACKUP_KEY, _quarantined_state(mock_config_entry))
    mock_config_entry.add_to_hass(hass)

    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    assert hass.states.get("binary_sensor.node_1_quarantined").state == "on"
    # The backup may predate the last round, so the round number moves one ahead.
    assert hass.states.get("sensor.test_federation_round").state == "5"
    assert "restored it from the backup" in caplog.text
    restored = hass_storage[STORAGE_KEY]["data"]
    assert restored["nodes"]["node-1"]["trust"]["status"] == "quarantined"
    # The backup was saved on a clean stop, but it may predate the last messages.
    assert "clean" not in restored


async def test_damaged_state_and_backup(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test the entry fails when both the state file and its backup are damaged."""
    _put(hass_storage, STORAGE_KEY, {})
    _put(hass_storage, BACKUP_KEY, {"version": 1})
    mock_config_entry.add_to_hass(hass)

    await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    assert mock_config_entry.state is ConfigEntryState.SETUP_ERROR
    assert "and its backup in" in caplog.text
    assert hass_storage[STORAGE_KEY]["data"] == {}


async def test_lost_state_and_backup(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    hass_client: ClientSessionGenerator,
    issue_registry: ir.IssueRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test an entry that saved its state once does not start empty when both files are gone.

    Home Assistant sets a file that is not valid JSON aside and loads nothing,
    as if it were missing. Only the repair issue's fix flow starts over, and
    the replaced key generations that the entry keeps survive that.
    """
    assert await async_setup_component(hass, "repairs", {})
    mock_config_entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(
        mock_config_entry,
        data={**mock_config_entry.data, "state_saved": True, "key_generations": {"node-1": 2}},
    )

    await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    assert mock_config_entry.state is ConfigEntryState.SETUP_ERROR
    assert "missing or not valid JSON, and it has no backup" in caplog.text
    issue_id = f"stored_state_unusable_{ENTRY_ID}"
    issue = issue_registry.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.is_fixable
    assert STORAGE_KEY not in hass_storage

    client = await hass_client()
    response = await client.post(
        "/api/repairs/issues/fix", json={"handler": DOMAIN, "issue_id": issue_id}
    )
    flow = await response.json()
    assert flow["step_id"] == "confirm"
    response = await client.post(f"/api/repairs/issues/fix/{flow['flow_id']}", json={})
    assert (await response.json())["type"] == "create_entry"
    await hass.async_block_till_done()

    assert mock_config_entry.state is ConfigEntryState.LOADED
    assert issue_registry.async_get_issue(DOMAIN, issue_id) is None
    assert mock_config_entry.data["start_over"] is False
    assert hass_storage[STORAGE_KEY]["data"]["key_generations"] == {"node-1": 2}
    response = await hass.services.async_call(
        DOMAIN,
        "issue_node_key",
        {"config_entry_id": ENTRY_ID, "node_id": "node-1"},
        blocking=True,
        return_response=True,
    )
    assert response["key_generation"] == 2


async def test_remove_entry_with_lost_state(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test removing an entry that could not load its state withdraws its repair issue."""
    mock_config_entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(
        mock_config_entry, data={**mock_config_entry.data, "state_saved": True}
    )
    await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    issue_id = f"stored_state_unusable_{ENTRY_ID}"
    assert issue_registry.async_get_issue(DOMAIN, issue_id) is not None

    await hass.config_entries.async_remove(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    assert issue_registry.async_get_issue(DOMAIN, issue_id) is None


async def test_backup_keeps_replaced_key(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    """Test a key replaced after the last backup stays replaced when the backup is restored."""
    _put(hass_storage, STORAGE_KEY, _quarantined_state(mock_config_entry))
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    coordinator = mock_config_entry.runtime_data
    await coordinator.async_replace_node_key("node-2")
    assert hass_storage[BACKUP_KEY]["data"]["key_generations"] == {"node-2": 1}
    await coordinator.async_replace_node_key("node-2")
    # Written at once, not only every few minutes.
    assert hass_storage[BACKUP_KEY]["data"]["key_generations"] == {"node-2": 2}
    assert await hass.config_entries.async_unload(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    # A backup from before the second replacement, and a lost main file.
    hass_storage.pop(STORAGE_KEY)
    backup = hass_storage[BACKUP_KEY]["data"]
    backup["key_generations"] = {"node-2": 1}
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    _, generation = await mock_config_entry.runtime_data.async_node_key("node-2")
    assert generation == 2


async def test_backup_written(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    """Test the first save and the last one before a stop are copied to the backup."""
    EdgeNode(hass, "node-1").send_heartbeat()
    await hass.async_block_till_done()
    await init_integration.runtime_data.async_save()
    assert "node-1" in hass_storage[BACKUP_KEY]["data"]["nodes"]

    EdgeNode(hass, "node-2").send_heartbeat()
    await hass.async_block_till_done()
    await init_integration.runtime_data.async_save()
    assert "node-2" not in hass_storage[BACKUP_KEY]["data"]["nodes"]

    assert await hass.config_entries.async_unload(init_integration.entry_id)
    await hass.async_block_till_done()
    backup = hass_storage[BACKUP_KEY]["data"]
    assert "node-2" in backup["nodes"]
    assert backup["clean"] is True


async def test_invalid_federation_key(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    entry_data: dict[str, Any],
    entry_options: dict[str, Any],
) -> None:
    """Test an entry whose key is not 64 hexadecimal characters fails to set up."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={**entry_data, "federation_key": "abc"},
        options=entry_options,
        minor_version=2,
    )
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.error_reason_translation_key == "invalid_federation_key"


async def test_devices_registered(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Test the federation, node and watched devices are linked with via_device_id."""
    EdgeNode(hass, "node-1").send_heartbeat()
    await hass.async_block_till_done()

    federation = device_registry.async_get_device_by_identifier((DOMAIN, ENTRY_ID), ENTRY_ID)
    node = device_registry.async_get_device_by_identifier((DOMAIN, f"{ENTRY_ID}_node-1"), ENTRY_ID)
    watched = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{ENTRY_ID}_node-1_thermostat"), ENTRY_ID
    )
    assert federation is not None
    assert node is not None
    assert watched is not None
    assert federation.name == "Test federation"
    assert node.via_device_id == federation.id
    assert node.sw_version == "fltrust-edge 0.1.0"
    assert watched.via_device_id == node.id
    assert watched.name == "Hall thermostat"
    assert watched.model == "temperature"


async def test_colliding_ids_get_no_entities(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test a node whose identifier equals another node's device identifier gets no entities."""
    EdgeNode(hass, "a").send_heartbeat(
        devices=(protocol.DeviceInfo("b", "temperature", "B", ("t",)),)
    )
    await hass.async_block_till_done()
    EdgeNode(hass, "a_b").send_heartbeat(devices=())
    await hass.async_block_till_done()

    assert hass.states.get("sensor.b_trust") is not None
    assert hass.states.get("binary_sensor.a_b_quarantined") is None
    assert "has the same identifier" in caplog.text


def _heartbeat_body() -> dict[str, Any]:
    return protocol.heartbeat_body(
        protocol.Heartbeat(
            devices=(),
            interval=30.0,
            samples=100,
            anomalies=1,
            peers_known=1,
            peers_unknown=0,
            traffic_bytes=1000,
            model_version=0,
            software="fltrust-edge 0.1.0",
        )
    )
