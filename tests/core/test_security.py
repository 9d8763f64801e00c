"""Signing, key derivation, replay protection and envelope validation."""

from __future__ import annotations

import hashlib
import hmac
import json

import numpy as np
import pytest
from fltrust_core import protocol, security
from fltrust_core.model import FeatureStats, FederationParams, KindModel
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


@pytest.mark.parametrize(
    ("key", "parsed"),
    [
        ("pump", ("pump", 0)),
        ("pump.1", ("pump", 1)),
        (f"pump.{protocol.MAX_REGIMES}", ("pump", protocol.MAX_REGIMES)),
        (f"pump.{protocol.MAX_REGIMES + 1}", None),
        ("pump.0", None),
        ("pump.01", None),
        ("pump.", None),
        ("pump.1.2", None),
        ("pump.x", None),
        (".1", None),
        ("Pump.1", None),
        ("pump.\u0661", None),
        (7, None),
    ],
)
def test_split_model_key(key: object, parsed: tuple[str, int] | None) -> None:
    assert protocol.split_model_key(key) == parsed
    if isinstance(key, str):
        assert protocol.regime_index(key) == (0 if parsed is None else parsed[1])
    if parsed is not None and parsed[1]:
        assert protocol.regime_key(*parsed) == key
        assert protocol.base_kind(str(key)) == parsed[0]


def _update_body(keys: list[str]) -> dict:
    model = KindModel(
        stats=FeatureStats.from_samples(np.array([[0.0], [1.0]])),
        svm_coef=np.zeros(4),
        svm_offset=0.0,
        centers=np.zeros((2, 1)),
        counts=np.array([1.0, 1.0]),
        n_samples=2,
    )
    return protocol.update_body(protocol.ModelUpdate(1, 0, dict.fromkeys(keys, model)))


def test_update_with_two_models_of_one_kind_rejected() -> None:
    params = FederationParams(rff_components=4, n_clusters=2)

    with pytest.raises(MessageRejected, match="more than one model for kind pump"):
        protocol.parse_update(_update_body(["pump", "pump.1"]), params, {})


def test_update_for_invalid_regime_rejected() -> None:
    params = FederationParams(rff_components=4, n_clusters=2)

    with pytest.raises(MessageRejected, match="neither a valid id nor a regime"):
        protocol.parse_update(_update_body(["pump.0"]), params, {})


def test_model_keeps_regimes_and_skips_invalid_keys() -> None:
    body = _update_body(["pump", "pump.2"])
    body.update(
        version=3, round=3, params=FederationParams(rff_components=4, n_clusters=2).as_dict()
    )
    body["kinds"]["pump.99"] = body["kinds"]["pump"]

    model = protocol.parse_model(body)

    assert set(model.kinds) == {"pump", "pump.2"}


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (None, 0),
        (0, 0),
        (protocol.MAX_REGIMES, protocol.MAX_REGIMES),
        (protocol.MAX_REGIMES + 1, protocol.MAX_REGIMES),
    ],
)
def test_model_max_regimes(value: int | None, parsed: int) -> None:
    body = _update_body(["pump"])
    body.update(
        version=3, round=3, params=FederationParams(rff_components=4, n_clusters=2).as_dict()
    )
    if value is not None:
        body["max_regimes"] = value

    assert protocol.parse_model(body).max_regimes == parsed


@pytest.mark.parametrize("value", [-1, 1.5, "8", True])
def test_model_invalid_max_regimes_rejected(value: object) -> None:
    body = _update_body(["pump"])
    body.update(
        version=3, round=3, params=FederationParams(rff_components=4, n_clusters=2).as_dict()
    )
    body["max_regimes"] = value

    with pytest.raises(MessageRejected, match="max_regimes"):
        protocol.parse_model(body)


@pytest.mark.parametrize(
    ("part", "name", "value"),
    [
        ("stats", "sumsq", [1.7e308]),
        ("stats", "sum", [-1e101]),
        ("svm", "coef", [1e101, 0.0, 0.0, 0.0]),
        ("svm", "offset", 1e101),
    ],
)
def test_update_beyond_magnitude_rejected(part: str, name: str, value: object) -> None:
    params = FederationParams(rff_components=4, n_clusters=2)
    body = _update_body(["pump"])
    body["kinds"]["pump"][part][name] = value

    # Two such updates would sum to infinity, which no model or stored state can carry.
    with pytest.raises(MessageRejected, match="beyond"):
        protocol.parse_update(body, params, {})
