"""Signing, key derivation, replay protection and envelope validation."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from fltrust_core import protocol, security
from fltrust_core.security import MessageRejected, RejectReason

KEY = bytes(range(32))


def test_node_keys_differ_per_node() -> None:
    assert security.derive_node_key(KEY, "a") != security.derive_node_key(KEY, "b")
    assert security.derive_node_key(KEY, "a") == security.derive_node_key(KEY, "a")


def test_node_key_generations() -> None:
    # Generation 0 keeps the derivation that keys issued before generations existed use.
    first = hmac.new(KEY, b"fltrust node key\x00a", hashlib.sha256).digest()
    assert security.derive_node_key(KEY, "a") == first
    assert security.derive_node_key(KEY, "a", 0) == first
    keys = {security.derive_node_key(KEY, node_id, g) for node_id in ("a", "a1") for g in (0, 1, 2)}
    assert len(keys) == 6
    with pytest.raises(ValueError, match="invalid key generation -1"):
        security.derive_node_key(KEY, "a", -1)
    with pytest.raises(ValueError, match="invalid key generation"):
        security.derive_node_key(KEY, "a", security.MAX_KEY_GENERATION + 1)


def test_hmac_round_trip_and_tamper() -> None:
    node_key = security.derive_node_key(KEY, "a")
    envelope = protocol.build_envelope("heartbeat", "a", 1, {"x": 1.5}, 100.0)
    envelope["sig"] = security.hmac_tag(node_key, envelope)
    security.verify_hmac(node_key, envelope)
    envelope["body"]["x"] = 2.5
    with pytest.raises(MessageRejected) as err:
        security.verify_hmac(node_key, envelope)
    assert err.value.reason == RejectReason.BAD_SIGNATURE


def test_signature_survives_wire_round_trip() -> None:
    node_key = security.derive_node_key(KEY, "a")
    envelope = protocol.build_envelope("heartbeat", "a", 1, {"x": 0.1 + 0.2, "y": [1e-300]}, 1.0)
    envelope["sig"] = security.hmac_tag(node_key, envelope)
    security.verify_hmac(node_key, json.loads(protocol.encode(envelope)))


def test_ed25519_only_coordinator_can_sign() -> None:
    private = security.derive_coordinator_private_key(KEY)
    public = security.load_public_key(security.public_key_hex(private))
    envelope = protocol.build_envelope("model", "coordinator", 1, {"version": 1}, 1.0)
    envelope["sig"] = security.ed25519_signature(private, envelope)
    security.verify_ed25519(public, envelope)
    node_key = security.derive_node_key(KEY, "a")
    envelope["sig"] = security.hmac_tag(node_key, envelope)
    with pytest.raises(MessageRejected):
        security.verify_ed25519(public, envelope)


@pytest.mark.parametrize("value", ["zz" * 32, "ab", 12, "00 " * 32, "00" * 31 + "0\n0"])
def test_parse_key_rejects_bad_keys(value) -> None:
    with pytest.raises(ValueError, match="key"):
        security.parse_key(value)


def test_replay_guard() -> None:
    guard = security.ReplayGuard(max_skew=60)
    guard.check("a", 5, 1000.0, 1010.0)
    guard.accept("a", 5)
    for counter, timestamp, reason in [
        (5, 1000.0, RejectReason.REPLAYED),
        (4, 1000.0, RejectReason.REPLAYED),
        (6, 900.0, RejectReason.STALE),
        (6, float("nan"), RejectReason.STALE),
    ]:
        with pytest.raises(MessageRejected) as err:
            guard.check("a", counter, timestamp, 1010.0)
        assert err.value.reason == reason
    guard.check("a", 6, 1000.0, 1010.0)


def test_replay_guard_rejects_before_restore() -> None:
    guard = security.ReplayGuard(max_skew=60, counters={"a": 5}, not_before=1005.0)

    with pytest.raises(MessageRejected) as err:
        guard.check("a", 6, 1000.0, 1010.0)

    assert err.value.reason == RejectReason.STALE
    assert "restored" in err.value.detail
    guard.check("a", 6, 1005.0, 1010.0)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", RejectReason.MALFORMED),
        (b"[1, 2]", RejectReason.MALFORMED),
        (b"\xff\xfe", RejectReason.MALFORMED),
        (b'{"v": 99}', RejectReason.WRONG_VERSION),
        (b'{"v": 1, "type": "heartbeat", "sender": "BAD ID"}', RejectReason.SCHEMA),
        (b" " * (protocol.MAX_PAYLOAD_BYTES + 1), RejectReason.TOO_LARGE),
        (b'{"v": 1, "body": ' + b'{"a": ' * 50000 + b"1" + b"}" * 50001, RejectReason.MALFORMED),
        (
            b'{"v": 1, "type": "heartbeat", "sender": "a", "counter": 1, "ts": 1'
            + b"0" * 400
            + b', "body": {}, "sig": ""}',
            RejectReason.SCHEMA,
        ),
        (
            b'{"v": 1, "type": "heartbeat", "sender": "a", "counter": 18446744073709551616, '
            b'"ts": 1.0, "body": {}, "sig": ""}',
            RejectReason.SCHEMA,
        ),
    ],
)
def test_decode_envelope_rejections(payload: bytes, reason: RejectReason) -> None:
    with pytest.raises(MessageRejected) as err:
        protocol.decode_envelope(payload)
    assert err.value.reason == reason


def test_parse_uplink_topic() -> None:
    assert protocol.parse_uplink_topic("p", "p/node/a/update") == ("a", "update")
    assert protocol.parse_uplink_topic("p", "p/node/a/device/d/state") == ("a", "state")
    assert protocol.parse_uplink_topic("p", "p/node/a/command") is None
    assert protocol.parse_uplink_topic("p", "q/node/a/update") is None


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("kitchen-pi", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("kitchen-pi\n", False),
        ("\nkitchen-pi", False),
        ("Kitchen", False),
        ("-kitchen", False),
        ("coordinator", False),
        (7, False),
    ],
)
def test_valid_ids(value: object, valid: bool) -> None:
    assert protocol.is_valid_id(value) is valid
