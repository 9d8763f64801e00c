"""Hostile and broken MQTT input: every message is rejected with a logged reason, nothing raises."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.fltrust.core import protocol, security
from custom_components.fltrust.core.security import REJECTION_SEVERITY, RejectReason

from .conftest import PARAMS, ROUND_INTERVAL, ROUND_TIMEOUT, EdgeNode, advance, kind_model

MessageFactory = Callable[[EdgeNode], tuple[str, bytes]]


def _signed_with_nan(value: float) -> MessageFactory:
    """Return a factory of a signed update whose first SVM weight is ``value``."""

    def build(node: EdgeNode) -> tuple[str, bytes]:
        model = kind_model(np.ones(PARAMS.rff_components))
        body = protocol.update_body(
            protocol.ModelUpdate(round=1, base_version=0, kinds={"temperature": model})
        )
        body["kinds"]["temperature"]["svm"]["coef"][0] = value
        envelope = node.envelope("update", body)
        # The encoder rejects NaN and infinity, so a hostile node would serialize it like this.
        return node.topic("update"), json.dumps(envelope, allow_nan=True).encode()

    return build


def _malformed_json(node: EdgeNode) -> tuple[str, bytes]:
    return node.topic("heartbeat"), b'{"v": 1, "type": "heartbeat",'


def _wrong_schema(node: EdgeNode) -> tuple[str, bytes]:
    envelope = node.envelope("heartbeat", {"devices": "all of them", "interval": 30})
    return node.topic("heartbeat"), protocol.encode(envelope)


def _wrong_vector_length(node: EdgeNode) -> tuple[str, bytes]:
    model = kind_model(np.ones(PARAMS.rff_components - 1))
    body = protocol.update_body(
        protocol.ModelUpdate(round=1, base_version=0, kinds={"temperature": model})
    )
    return node.topic("update"), protocol.encode(node.envelope("update", body))


def _bad_signature(node: EdgeNode) -> tuple[str, bytes]:
    envelope = node.envelope("heartbeat", {"devices": []})
    envelope["sig"] = "00" * 32
    return node.topic("heartbeat"), protocol.encode(envelope)


def _signed_with_other_key(node: EdgeNode) -> tuple[str, bytes]:
    impostor = EdgeNode(node.hass, node.node_id, federation_key="ff" * 32)
    return impostor.topic("heartbeat"), protocol.encode(impostor.envelope("heartbeat", {}))


def _wrong_version(node: EdgeNode) -> tuple[str, bytes]:
    envelope = node.envelope("heartbeat", {})
    envelope["v"] = 2
    envelope["sig"] = security.hmac_tag(node.key, envelope)
    return node.topic("heartbeat"), protocol.encode(envelope)


def _oversized(node: EdgeNode) -> tuple[str, bytes]:
    envelope = node.envelope("heartbeat", {"padding": "x" * (protocol.MAX_PAYLOAD_BYTES + 10)})
    return node.topic("heartbeat"), protocol.encode(envelope)


def _topic_mismatch(node: EdgeNode) -> tuple[str, bytes]:
    other = EdgeNode(node.hass, "node-2")
    return node.topic("heartbeat"), protocol.encode(other.envelope("heartbeat", {}))


def _stale(node: EdgeNode) -> tuple[str, bytes]:
    envelope = node.envelope("heartbeat", {})
    envelope["ts"] -= 3600
    envelope["sig"] = security.hmac_tag(node.key, envelope)
    return node.topic("heartbeat"), protocol.encode(envelope)


def _no_open_round(node: EdgeNode) -> tuple[str, bytes]:
    model = kind_model(np.ones(PARAMS.rff_components))
    body = protocol.update_body(
        protocol.ModelUpdate(round=1, base_version=0, kinds={"temperature": model})
    )
    return node.topic("update"), protocol.encode(node.envelope("update", body))


def _unannounced_device(node: EdgeNode) -> tuple[str, bytes]:
    body = protocol.state_body(protocol.DeviceState("fridge", True, 1.0, 0.5))
    return node.topic("state", "fridge"), protocol.encode(node.envelope("state", body))


# Name, message, reason, and whether the rejection is charged to the node's trust:
# only messages whose signature, counter and timestamp verified are.
BAD_MESSAGES: list[tuple[str, MessageFactory, RejectReason, bool]] = [
    ("malformed_json", _malformed_json, RejectReason.MALFORMED, False),
    ("wrong_schema", _wrong_schema, RejectReason.SCHEMA, True),
    ("nan_parameter", _signed_with_nan(float("nan")), RejectReason.NON_FINITE, True),
    ("infinite_parameter", _signed_with_nan(float("inf")), RejectReason.NON_FINITE, True),
    ("wrong_vector_length", _wrong_vector_length, RejectReason.WRONG_SHAPE, True),
    ("bad_signature", _bad_signature, RejectReason.BAD_SIGNATURE, False),
    ("signed_with_other_key", _signed_with_other_key, RejectReason.BAD_SIGNATURE, False),
    ("wrong_protocol_version", _wrong_version, RejectReason.WRONG_VERSION, False),
    ("oversized_payload", _oversized, RejectReason.TOO_LARGE, False),
    ("topic_mismatch", _topic_mismatch, RejectReason.TOPIC_MISMATCH, False),
    ("stale_timestamp", _stale, RejectReason.STALE, False),
    ("update_without_round", _no_open_round, RejectReason.WRONG_ROUND, True),
    ("state_of_unannounced_device", _unannounced_device, RejectReason.UNANNOUNCED_DEVICE, True),
]


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


def _durable_state(state: dict[str, Any]) -> dict[str, Any]:
    """Return the part of the stored state that no rejected message may change."""
    return {
        "round": state["round"],
        "model": state["model"],
        "nodes": {
            node_id: {
                "devices": node["devices"],
                "score": node["trust"]["score"],
                "status": node["trust"]["status"],
                "history": node["trust"]["history"],
                "heartbeats": node["trust"]["heartbeats"],
            }
            for node_id, node in state["nodes"].items()
        },
    }


@pytest.mark.parametrize(
    ("build", "reason", "charged"),
    [(build, reason, charged) for _, build, reason, charged in BAD_MESSAGES],
    ids=[name for name, _, _, _ in BAD_MESSAGES],
)
async def test_bad_message_rejected(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
    build: MessageFactory,
    reason: RejectReason,
    charged: bool,
) -> None:
    """Test a bad message naming a known node is rejected, logged, counted and charged if fair."""
    coordinator = init_integration.runtime_data
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    await hass.async_block_till_done()
    before = await coordinator.async_export_state()

    topic, payload = build(node)
    node.send_raw(topic, payload)
    await hass.async_block_till_done()

    after = await coordinator.async_export_state()
    assert f"reason {reason.value}" in caplog.text
    assert "node-1" in caplog.text
    assert not _errors(caplog)
    assert _durable_state(after) == _durable_state(before)
    assert after["rejected_total"] == 1
    # Only a message that verified as the node's own goes on its record.
    recorded = 1 if charged else 0
    assert after["nodes"]["node-1"]["rejected"] == recorded
    if charged:
        assert after["nodes"]["node-1"]["last_rejection"].startswith(reason.value)
    else:
        assert after["nodes"]["node-1"]["last_rejection"] == ""
    events = [
        (event["reason"], event["severity"])
        for event in after["nodes"]["node-1"]["trust"]["events"]
    ]
    # A rejection of severity 0, such as a state that raced ahead of its heartbeat,
    # is recorded but costs no trust.
    if charged and REJECTION_SEVERITY[reason] > 0:
        assert events == [(reason.value, REJECTION_SEVERITY[reason])]
    else:
        assert events == []
    assert set(after["nodes"]) == {"node-1"}
    state = hass.states.get("sensor.node_1_trust")
    assert state.attributes["rejected"] == recorded
    assert state.attributes["last_rejection"] == (
        after["nodes"]["node-1"]["last_rejection"] or None
    )
    assert hass.states.get("sensor.test_federation_rejected_messages").state == "1"


async def test_replayed_message_rejected(
    hass: HomeAssistant, init_integration: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    """Test the same signed message sent twice is accepted once."""
    coordinator = init_integration.runtime_data
    node = EdgeNode(hass, "node-1")
    payload = node.send_heartbeat()
    await hass.async_block_till_done()
    before = await coordinator.async_export_state()

    node.send_raw(node.topic("heartbeat"), payload)
    await hass.async_block_till_done()

    after = await coordinator.async_export_state()
    assert "reason replayed" in caplog.text
    assert not _errors(caplog)
    assert _durable_state(after) == _durable_state(before)
    assert after["replay"] == {"node-1": 1}
    assert after["rejected_total"] == 1
    assert after["nodes"]["node-1"]["rejected"] == 0


async def test_unknown_node_not_created(
    hass: HomeAssistant, init_integration: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    """Test a message signed with another federation's key creates no node."""
    coordinator = init_integration.runtime_data
    forger = EdgeNode(hass, "intruder", federation_key="ee" * 32)
    forger.send_heartbeat()
    forger.send_raw("fltrust/node/\x00bad id/heartbeat", b"{}")
    await hass.async_block_till_done()

    state = await coordinator.async_export_state()
    assert state["nodes"] == {}
    assert state["rejected_total"] == 2
    assert "unknown node intruder, reason bad_signature" in caplog.text
    assert "unknown node '\\x00bad id'" in caplog.text
    assert hass.states.get("sensor.intruder_trust") is None
    assert hass.states.get("sensor.test_federation_rejected_messages").state == "2"


async def test_foreign_topics_ignored(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Test messages under the prefix that are no uplink type are ignored, not rejected."""
    node = EdgeNode(hass, "node-1")
    node.send_raw("fltrust/node/node-1/command", b"{}")
    node.send_raw("fltrust/node/node-1/device/x/other", b"{}")
    node.send_raw("fltrust/node/node-1/telemetry", b"{}")
    await hass.async_block_till_done()

    state = await init_integration.runtime_data.async_export_state()
    assert state["rejected_total"] == 0


async def test_rejection_flood_logged_once(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
    frozen_time: FrozenDateTimeFactory,
) -> None:
    """Test a flood of rejections logs one line, then one summary with the count."""
    node = EdgeNode(hass, "node-1")
    node.send_heartbeat()
    await hass.async_block_till_done()

    for _ in range(50):
        node.send_raw(node.topic("heartbeat"), b"garbage")
    await hass.async_block_till_done()

    rejections = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejections) == 1
    assert hass.states.get("sensor.test_federation_rejected_messages").state == "50"

    await advance(hass, frozen_time, ROUND_INTERVAL)

    summaries = [r for r in caplog.records if "rejected 49 more messages" in r.getMessage()]
    assert len(summaries) == 1
    assert "node node-1, reason malformed" in summaries[0].getMessage()


async def test_queue_overflow_drops_messages(
    hass: HomeAssistant, init_integration: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    """Test messages beyond the waiting limit are dropped, counted and logged."""
    coordinator = init_integration.runtime_data
    node = EdgeNode(hass, "node-1")
    with patch("custom_components.fltrust.coordinator.MAX_PENDING_MESSAGES", 3):
        # Holding the engine's lock simulates a busy engine, so messages pile up.
        async with coordinator._lock:
            for _ in range(10):
                node.send_heartbeat()
        await hass.async_block_till_done()

    # The first message was taken as a batch before the lock, three waited, six were dropped.
    state = await coordinator.async_export_state()
    assert coordinator.dropped_messages == 6
    assert state["replay"] == {"node-1": 4}
    assert "dropped a message from node node-1 unread because 3 messages" in caplog.text
    assert not _errors(caplog)


async def test_forged_flood_keeps_trust(
    hass: HomeAssistant, init_integration: MockConfigEntry, frozen_time: FrozenDateTimeFactory
) -> None:
    """Test replays and junk published on a node's topic by others do not lower its trust."""
    node = EdgeNode(hass, "node-1")
    captured = node.send_heartbeat()
    await hass.async_block_till_done()

    for _ in range(100):
        node.send_raw(node.topic("heartbeat"), captured)
        node.send_raw(node.topic("heartbeat"), b"x" * 50_000)
    node.send_heartbeat()
    await advance(hass, frozen_time, ROUND_INTERVAL)
    node.send_heartbeat()
    await advance(hass, frozen_time, ROUND_TIMEOUT)

    assert hass.states.get("sensor.test_federation_round").attributes["last_round"] == 1
    trust = hass.states.get("sensor.node_1_trust")
    assert trust.attributes["rejected"] == 0
    assert hass.states.get("sensor.test_federation_rejected_messages").state == "200"
    assert trust.attributes["status"] == "trusted"
    assert float(trust.state) > 80
    assert trust.attributes["security"] == 1.0
    assert trust.attributes["network"] == 1.0
