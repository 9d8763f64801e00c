"""Tests of the verification of coordinator messages."""

import json
import time

import pytest
from fltrust_core import protocol, security
from fltrust_core.model import GlobalModel
from fltrust_core.security import MessageRejected, RejectReason
from fltrust_edge.downlink import DownlinkVerifier
from fltrust_edge.state import StateStore

from .conftest import NODE_ID, PARAMS, CoordinatorSigner, coordinator_public_key


@pytest.fixture
def store(tmp_path):
    return StateStore(tmp_path)


@pytest.fixture
def verifier(store):
    return DownlinkVerifier(coordinator_public_key(), NODE_ID, store)


def rejection(call) -> RejectReason:
    with pytest.raises(MessageRejected) as info:
        call()
    return info.value.reason


def test_accepts_signed_round(verifier, signer):
    sent = time.time()

    announcement, envelope = verifier.open_round(signer.round(3, timestamp=sent, time_left=45.0))

    assert announcement.round == 3
    assert announcement.params == PARAMS
    assert envelope.timestamp == sent
    assert announcement.deadline == sent + 45.0


def test_rejects_forged_signature(verifier):
    forger = CoordinatorSigner(key=bytes(32))

    assert rejection(lambda: verifier.open_round(forger.round(1))) == RejectReason.BAD_SIGNATURE


def test_rejects_tampered_body(verifier, signer):
    envelope = json.loads(signer.round(1))
    envelope["body"]["round"] = 99

    reason = rejection(lambda: verifier.open_round(protocol.encode(envelope)))

    assert reason == RejectReason.BAD_SIGNATURE


def test_rejects_node_signed_message(verifier):
    envelope = protocol.build_envelope("round", NODE_ID, 1, {"round": 1})
    envelope["sig"] = security.hmac_tag(security.derive_node_key(bytes(32), NODE_ID), envelope)

    reason = rejection(lambda: verifier.open_round(protocol.encode(envelope)))

    assert reason == RejectReason.TOPIC_MISMATCH


def test_rejects_replayed_round(verifier, signer):
    payload = signer.round(1)
    verifier.open_round(payload)

    assert rejection(lambda: verifier.open_round(payload)) == RejectReason.REPLAYED


def test_rejects_lower_counter(verifier, signer):
    verifier.open_round(signer.round(2, counter=1000))

    reason = rejection(lambda: verifier.open_round(signer.round(3, counter=999)))

    assert reason == RejectReason.REPLAYED


def test_replay_protection_survives_restart(store, signer):
    payload = signer.round(1)
    DownlinkVerifier(coordinator_public_key(), NODE_ID, store).open_round(payload)

    restarted = DownlinkVerifier(coordinator_public_key(), NODE_ID, StateStore(store.state_dir))

    assert rejection(lambda: restarted.open_round(payload)) == RejectReason.REPLAYED


def test_rejects_stale_round(verifier, signer):
    payload = signer.round(1, timestamp=time.time() - 3600)

    assert rejection(lambda: verifier.open_round(payload)) == RejectReason.STALE


def test_rejects_wrong_version(verifier, signer):
    envelope = signer.envelope("round", json.loads(signer.round(1))["body"])
    envelope["v"] = 2
    envelope["sig"] = security.ed25519_signature(signer.private_key, envelope)

    reason = rejection(lambda: verifier.open_round(protocol.encode(envelope)))

    assert reason == RejectReason.WRONG_VERSION


def test_rejects_malformed_payload(verifier):
    assert rejection(lambda: verifier.open_round(b"not json")) == RejectReason.MALFORMED


def test_rejects_type_of_other_topic(verifier, signer):
    payload = signer.command("quarantine")

    assert rejection(lambda: verifier.open_round(payload)) == RejectReason.TOPIC_MISMATCH


def test_rejects_invalid_body(verifier, signer):
    payload = signer.payload("round", {"round": 0})

    assert rejection(lambda: verifier.open_round(payload)) == RejectReason.SCHEMA


def test_rejected_message_does_not_advance_counter(verifier, signer):
    verifier.open_round(signer.round(1, counter=10))
    verifier_counter = verifier.guard.counters[protocol.COORDINATOR_SENDER]

    rejection(lambda: verifier.open_round(signer.payload("round", {"round": 0}, counter=20)))

    assert verifier.guard.counters[protocol.COORDINATOR_SENDER] == verifier_counter
    announcement, _ = verifier.open_round(signer.round(2, counter=15))
    assert announcement.round == 2


def model_payload(signer, version, **kwargs):
    return signer.model(GlobalModel(version=version, round=version, params=PARAMS), **kwargs)


def test_model_live_and_retained(verifier, signer):
    model, _ = verifier.open_model(model_payload(signer, 2), retained=False, current_version=0)

    assert model.version == 2


def test_retained_model_old_but_newer(verifier, signer):
    old = model_payload(signer, 3, timestamp=time.time() - 86400, counter=5)

    model, _ = verifier.open_model(old, retained=True, current_version=2)
    reason = rejection(lambda: verifier.open_model(old, retained=True, current_version=3))

    assert model.version == 3
    assert reason == RejectReason.REPLAYED


def test_new_epoch_model_accepted_below_adopted_version(verifier, signer):
    verifier.open_round(signer.round(7, epoch="aa"))
    restarted = GlobalModel(version=1, round=1, params=PARAMS, epoch="bb")

    model, _ = verifier.open_model(signer.model(restarted), retained=True, current_version=5)

    assert model.version == 1
    assert verifier.epoch == "bb"


def test_retained_model_of_earlier_epoch_rejected(verifier, signer, store):
    recorded = signer.model(GlobalModel(version=5, round=5, params=PARAMS, epoch="aa"))
    verifier.open_round(signer.round(1, epoch="bb"))

    reason = rejection(lambda: verifier.open_model(recorded, retained=True, current_version=0))

    assert reason == RejectReason.REPLAYED
    assert verifier.epoch == "bb"
    assert StateStore(store.state_dir).state.epoch == "bb"


@pytest.mark.parametrize("epoch", ["AB", "x", "a" * 65, 7])
def test_rejects_invalid_epoch(verifier, signer, epoch):
    body = GlobalModel(version=1, params=PARAMS).to_json() | {"epoch": epoch}

    reason = rejection(
        lambda: verifier.open_model(signer.payload("model", body), False, current_version=0)
    )

    assert reason == RejectReason.SCHEMA
    assert verifier.epoch is None


def test_live_old_model_is_stale(verifier, signer):
    old = model_payload(signer, 3, timestamp=time.time() - 86400)

    reason = rejection(lambda: verifier.open_model(old, retained=False, current_version=0))

    assert reason == RejectReason.STALE


def test_retained_model_still_needs_signature(verifier):
    forger = CoordinatorSigner(key=bytes(32))

    reason = rejection(
        lambda: verifier.open_model(model_payload(forger, 9), retained=True, current_version=0)
    )

    assert reason == RejectReason.BAD_SIGNATURE


def test_command_for_other_node(verifier, signer):
    payload = signer.command("quarantine", node="node-2")

    reason = rejection(lambda: verifier.open_command(payload, retained=False))

    assert reason == RejectReason.TOPIC_MISMATCH


def test_retained_command_applied_once(verifier, signer, store):
    payload = signer.command("quarantine", timestamp=time.time() - 86400)

    command, _ = verifier.open_command(payload, retained=True)
    reason = rejection(lambda: verifier.open_command(payload, retained=True))

    assert command.action == "quarantine"
    assert reason == RejectReason.REPLAYED
    assert StateStore(store.state_dir).state.command_counter is not None


def test_retained_command_older_than_applied(verifier, signer):
    verifier.open_command(signer.command("quarantine", counter=500), retained=False)

    reason = rejection(
        lambda: verifier.open_command(signer.command("release", counter=400), retained=True)
    )

    assert reason == RejectReason.REPLAYED
