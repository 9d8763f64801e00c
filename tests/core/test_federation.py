"""The round engine, driven with signed messages as edge nodes send them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection
from dataclasses import replace

import numpy as np
import pytest
from fltrust_core import federation as federation_module
from fltrust_core import protocol, security
from fltrust_core.aggregation import MAX_SAMPLE_RATIO
from fltrust_core.federation import Federation, FederationEvent
from fltrust_core.scoring import UpdateBaseline, model_key
from fltrust_core.trust import GROWTH_WINDOW, TrustStatus

from .conftest import FEDERATION_KEY, PARAMS, PREFIX, NodeSimulator, kind_model


def _deliver(federation: Federation, message: tuple[str, bytes], now: float):
    topic, payload = message
    return federation.handle_message(topic, payload, now)


def _kinds(outcome) -> list[str]:
    return [event.kind for event in outcome.events]


def _join(federation: Federation, nodes: list[NodeSimulator], now: float) -> None:
    for node in nodes:
        outcome = _deliver(federation, node.heartbeat(now), now)
        assert "rejected" not in _kinds(outcome)


def _published_model(outcome) -> dict:
    [publish] = [p for p in outcome.publishes if p.topic == protocol.model_topic(PREFIX)]
    assert publish.retain
    envelope = json.loads(publish.payload)
    security.verify_ed25519(
        security.derive_coordinator_private_key(bytes(range(32))).public_key(), envelope
    )
    return envelope["body"]


def _round_one_update(federation: Federation, now: float) -> tuple[NodeSimulator, dict]:
    """Join node-1, open round 1 and return the node with a valid update body for it."""
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    federation.start_round(now)
    body = protocol.update_body(
        protocol.ModelUpdate(1, 0, {"temperature": kind_model(np.ones(8), 1.0)})
    )
    return node, body


def test_round_aggregates_weighted_mean(federation: Federation, now: float) -> None:
    nodes = [NodeSimulator(f"node-{i}") for i in range(3)]
    _join(federation, nodes, now)
    federation.start_round(now)
    rng = np.random.RandomState(0)
    sent = {}
    for index, node in enumerate(nodes):
        model = kind_model(1.0 + 0.05 * rng.normal(size=8), 0.5 + 0.01 * index, 100 * (index + 1))
        sent[node.node_id] = model
        assert not _kinds(_deliver(federation, node.update(1, model, now + 1), now + 1))
    assert federation.ready_to_close(now + 1)

    body = _published_model(federation.close_round(now + 1))

    weights = body["contributors"]
    assert set(weights) == set(sent)
    effective = np.array([weights[n] * sent[n].n_samples for n in sorted(sent)])
    vectors = np.vstack([sent[n].svm_vector() for n in sorted(sent)])
    expected = effective @ vectors / effective.sum()
    aggregated = body["kinds"]["temperature"]["svm"]
    np.testing.assert_allclose(aggregated["coef"], expected[:-1], rtol=1e-12)
    assert aggregated["offset"] == pytest.approx(expected[-1], rel=1e-12)
    assert body["version"] == 1
    assert federation.last_round is not None
    assert federation.last_round.participants == sorted(sent)


def test_round_waits_for_quorum(federation: Federation, now: float) -> None:
    nodes = [NodeSimulator("a"), NodeSimulator("b")]
    _join(federation, nodes, now)
    federation.start_round(now)
    _deliver(federation, nodes[0].update(1, kind_model(np.ones(8), 1.0), now), now)
    assert not federation.ready_to_close(now + 1)
    assert federation.ready_to_close(now + 6)
    outcome = federation.close_round(now + 6)
    assert not [p for p in outcome.publishes if p.topic.endswith("/model")]
    assert federation.model.version == 0


HONEST = [f"honest-{i}" for i in range(3)]


def _play_rounds(
    federation: Federation,
    now: float,
    rounds: int,
    attack_rounds: Collection[int],
    seed: int,
) -> list[tuple[int, FederationEvent]]:
    """Play rounds of three honest nodes and one "attacker" and return every event with its round.

    Every node sends a step from the global model. In ``attack_rounds`` the
    attacker sends the step flipped and boosted tenfold.
    """
    attacker = NodeSimulator("attacker")
    nodes = [*(NodeSimulator(node_id) for node_id in HONEST), attacker]
    rng = np.random.RandomState(seed)
    events = []
    clock = now
    for round_number in range(1, rounds + 1):
        clock += 10
        for node in nodes:
            _deliver(federation, node.heartbeat(clock), clock)
        federation.start_round(clock)
        base = (
            federation.model.kinds["temperature"].svm_vector()
            if "temperature" in federation.model.kinds
            else np.zeros(9)
        )
        for node in nodes:
            if federation.nodes[node.node_id].trust.status == TrustStatus.QUARANTINED:
                continue
            step = 0.1 + 0.01 * rng.normal(size=9)
            attacking = node is attacker and round_number in attack_rounds
            vector = base - 10 * step if attacking else base + step
            _deliver(
                federation,
                node.update(federation.round, kind_model(vector[:-1], vector[-1]), clock + 1),
                clock + 1,
            )
        outcome = federation.close_round(clock + 2)
        events += [(round_number, event) for event in outcome.events]
    return events


def test_poisoning_node_quarantined_within_three_rounds(federation: Federation, now: float) -> None:
    events = _play_rounds(federation, now, 6, range(3, 7), seed=1)

    quarantined = [(r, e.data["node_id"]) for r, e in events if e.kind == "quarantined"]
    assert quarantined and quarantined[0][1] == "attacker"
    # The attack starts in round 3; rounds 3, 4 and 5 are the three rounds allowed.
    assert quarantined[0][0] <= 5
    assert all(n == "attacker" for _, n in quarantined)
    assert "attacker" not in federation.model.contributors
    for node_id in HONEST:
        assert federation.nodes[node_id].trust.status == TrustStatus.TRUSTED
    dropped = [e.data["node_id"] for _, e in events if e.kind == "trust_dropped"]
    assert dropped and set(dropped) == {"attacker"}


def test_on_off_attacker_quarantined_on_relapse(federation: Federation, now: float) -> None:
    # Attacks in rounds 3 and 5, honest in between.
    events = _play_rounds(federation, now, 5, (3, 5), seed=2)

    [(round_number, event)] = [(r, e) for r, e in events if e.kind == "quarantined"]
    assert round_number == 5
    assert event.data["node_id"] == "attacker"
    assert event.data["reasons"][0] == "inconsistent update soon after another"


def test_quarantined_update_dropped_and_release(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    record = federation.nodes["node-1"]
    record.trust.status = TrustStatus.QUARANTINED
    federation.start_round(now)
    outcome = _deliver(federation, node.update(1, kind_model(np.ones(8), 1.0), now), now)
    assert outcome.events[0].data["reason"] == "quarantined"
    assert "node-1" not in federation.updates

    released = federation.release("node-1", now)
    assert _kinds(released) == ["released"]
    assert record.trust.status == TrustStatus.REAUTH_REQUIRED
    commands = [json.loads(p.payload)["body"] for p in released.publishes]
    assert [c["action"] for c in commands] == ["release", "reauthenticate"]
    assert record.trust.aggregation_weight(record.authenticated) == 0.0

    answer = node.message("auth", {"nonce": commands[1]["nonce"]}, now + 1)
    assert _kinds(_deliver(federation, answer, now + 1)) == ["authenticated"]
    assert record.trust.aggregation_weight(record.authenticated) > 0.0
    with pytest.raises(KeyError):
        federation.release("missing", now)


def _released_and_challenged(federation: Federation, now: float) -> NodeSimulator:
    """Return a node just released from quarantine, which must answer a challenge."""
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    federation.nodes["node-1"].trust.status = TrustStatus.QUARANTINED
    federation.release("node-1", now)
    return node


def _timeouts(federation: Federation) -> list[str]:
    return [
        e.reason for e in federation.nodes["node-1"].trust.events if e.reason == "reauth_timeout"
    ]


def test_unanswered_challenge_charged_while_node_talks(federation: Federation, now: float) -> None:
    node = _released_and_challenged(federation, now)
    first = federation.nodes["node-1"].challenge

    for step in range(1, federation_module.CHALLENGE_ROUNDS + 2):
        _deliver(federation, node.heartbeat(now + step), now + step)
        federation.start_round(now + step)

    assert _timeouts(federation) == ["reauth_timeout"]
    assert federation.nodes["node-1"].challenge != first


def test_silent_node_not_charged_for_its_challenge(federation: Federation, now: float) -> None:
    _released_and_challenged(federation, now)
    first = federation.nodes["node-1"].challenge

    outcomes = [
        federation.start_round(now + step)
        for step in range(1, 2 * federation_module.CHALLENGE_ROUNDS + 2)
    ]

    assert _timeouts(federation) == []
    # The challenge is sent again, so a node that comes back finds a fresh one.
    assert federation.nodes["node-1"].challenge != first
    challenges = [
        json.loads(p.payload)["body"]["nonce"]
        for outcome in outcomes
        for p in outcome.publishes
        if p.topic == protocol.command_topic(PREFIX, "node-1")
    ]
    assert challenges[-1] == federation.nodes["node-1"].challenge


def test_forget_node(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    old_heartbeat = node.heartbeat(now)
    _deliver(federation, old_heartbeat, now)
    federation.nodes["node-1"].trust.status = TrustStatus.QUARANTINED
    with pytest.raises(ValueError, match="quarantined"):
        federation.forget_node("node-1")
    federation.nodes["node-1"].trust.status = TrustStatus.TRUSTED

    outcome = federation.forget_node("node-1")

    assert "node-1" not in federation.nodes
    [clear] = outcome.publishes
    assert (clear.topic, clear.payload, clear.retain) == (
        protocol.command_topic(PREFIX, "node-1"),
        b"",
        True,
    )
    # The counter stays, so an old message is still a replay; a newer one makes it new again.
    _deliver(federation, old_heartbeat, now + 1)
    assert "node-1" not in federation.nodes
    _deliver(federation, node.heartbeat(now + 2), now + 2)
    assert federation.nodes["node-1"].trust.status == TrustStatus.TRUSTED
    with pytest.raises(KeyError):
        federation.forget_node("missing")


def test_epoch_kept_on_restore(federation: Federation, now: float) -> None:
    nodes = [NodeSimulator(f"node-{i}") for i in range(3)]
    _join(federation, nodes, now)
    [announcement] = federation.start_round(now).publishes
    for node in nodes:
        _deliver(federation, node.update(1, kind_model(np.ones(8), 1.0), now + 1), now + 1)
    model = _published_model(federation.close_round(now + 1))
    stored = json.loads(json.dumps(federation.to_dict()))

    restored = Federation(federation.settings, stored, now=now)
    started_over = Federation(federation.settings)
    del stored["model"]["epoch"]
    legacy = Federation(federation.settings, stored, now=now)

    epoch = json.loads(announcement.payload)["body"]["epoch"]
    assert protocol.EPOCH_PATTERN.fullmatch(epoch)
    assert model["epoch"] == epoch
    assert restored.model.epoch == epoch
    assert started_over.model.epoch not in ("", epoch)
    assert legacy.model.epoch not in ("", epoch)


def test_replaced_node_key(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    trust = federation.nodes["node-1"].trust.to_dict()

    outcome = federation.replace_node_key("node-1")

    assert outcome.events == [
        FederationEvent("key_replaced", {"node_id": "node-1", "generation": 1})
    ]
    outcome = _deliver(federation, node.heartbeat(now + 1), now + 1)
    [event] = outcome.events
    assert event.data["reason"] == "revoked_key"
    assert "node needs its key of generation 1" in event.data["detail"]
    # Not charged: the node may not have its new key yet, and anyone may hold the old one.
    assert federation.nodes["node-1"].trust.to_dict() == trust
    node.key = federation.node_key("node-1")
    assert node.key == security.derive_node_key(FEDERATION_KEY, "node-1", 1)
    assert "rejected" not in _kinds(_deliver(federation, node.heartbeat(now + 2), now + 2))


def test_replaced_key_resets_counter(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    # A copy of a leaked key can push the counter to the largest accepted value.
    node.counter = iter([protocol.MAX_INTEGER])
    assert "rejected" not in _kinds(_deliver(federation, node.heartbeat(now + 1), now + 1))
    node.counter = itertools.count(2)
    assert "rejected" in _kinds(_deliver(federation, node.heartbeat(now + 2), now + 2))

    federation.replace_node_key("node-1")
    node.key = federation.node_key("node-1")

    assert "rejected" not in _kinds(_deliver(federation, node.heartbeat(now + 3), now + 3))
    assert federation.replay.counters["node-1"] == 3


def test_key_older_than_previous_is_bad(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    federation.replace_node_key("node-1")
    federation.replace_node_key("node-1")

    outcome = _deliver(federation, node.heartbeat(now + 1), now + 1)

    assert outcome.events[0].data["reason"] == "bad_signature"
    assert "generation 2" in outcome.events[0].data["detail"]


@pytest.mark.parametrize("node_id", ["", "bad id", "x" * 200, "node\n"])
def test_replace_node_key_invalid_id(federation: Federation, node_id: str) -> None:
    with pytest.raises(ValueError, match="invalid node id"):
        federation.replace_node_key(node_id)

    assert federation.key_generations == {}


def test_key_generation_survives_forget_and_restart(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    with pytest.raises(KeyError):
        federation.replace_node_key("never-seen")
    federation.forget_node("node-1")
    # A retired node's messages verified once, so its key can still be replaced.
    federation.replace_node_key("node-1")
    stored = json.loads(json.dumps(federation.to_dict()))

    restored = Federation(federation.settings, stored, now=now)

    assert restored.key_generations == {"node-1": 1}
    outcome = _deliver(restored, node.heartbeat(now + 1), now + 1)
    assert outcome.events[0].data["reason"] == "revoked_key"
    assert "node-1" not in restored.nodes


def _drop(key: str):
    return lambda state: state.pop(key)


def _set_node_trust(trust: dict):
    return lambda state: state["nodes"]["attacker"].update(trust=trust)


def _drop_status(state: dict) -> None:
    del state["nodes"]["attacker"]["trust"]["status"]


def _shorten_coef(state: dict) -> None:
    state["model"]["kinds"]["temperature"]["svm"]["coef"] = [0.5]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda state: state.clear(), "unsupported stored state version None"),
        (lambda state: state.update(version=99), "unsupported stored state version 99"),
        (lambda state: state.update(round=-3), "invalid stored round -3"),
        (lambda state: state.update(counter="7"), "invalid stored counter '7'"),
        (_drop("nodes"), "stored field 'nodes' is missing"),
        (_drop("replay"), "stored field 'replay' is missing"),
        (_drop("model"), "stored field 'model' is missing"),
        (lambda state: state["replay"].update({"node-1": -1}), "replay counter of node-1"),
        (_set_node_trust({}), "stored trust of node attacker has no status or score"),
        (_drop_status, "stored trust of node attacker has no status or score"),
        (_shorten_coef, "invalid stored model: "),
    ],
)
def test_damaged_state_rejected(federation: Federation, now: float, damage, message: str) -> None:
    _play_rounds(federation, now, rounds=2, attack_rounds=set(), seed=0)
    stored = json.loads(json.dumps(federation.to_dict()))
    assert stored["model"]["kinds"]
    damage(stored)

    with pytest.raises(ValueError, match=message):
        Federation(federation.settings, stored, now=now)


@pytest.mark.parametrize("generation", [0, -1, "1", 1.5, True, None, 10**7])
def test_invalid_stored_key_generation(federation: Federation, generation: object) -> None:
    stored = json.loads(json.dumps(federation.to_dict()))
    stored["key_generations"] = {"node-1": generation}

    with pytest.raises(ValueError, match="invalid stored key generation"):
        Federation(federation.settings, stored)


def _heartbeat_listing(
    node: NodeSimulator, device_ids: tuple[str, ...], now: float
) -> tuple[str, bytes]:
    devices = tuple(protocol.DeviceInfo(d, "temperature", "Sensor", ("t",)) for d in device_ids)
    return node.heartbeat(now, devices=devices)


def test_forget_unannounced_device(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _deliver(federation, _heartbeat_listing(node, ("hall", "porch"), now), now)
    _deliver(federation, _heartbeat_listing(node, ("hall",), now + 1), now + 1)
    devices = federation.nodes["node-1"].devices
    assert devices["hall"].announced is True
    assert devices["porch"].announced is False

    with pytest.raises(ValueError, match="node node-1 still watches device hall"):
        federation.forget_device("node-1", "hall")
    restored = Federation(federation.settings, json.loads(json.dumps(federation.to_dict())))
    assert restored.nodes["node-1"].devices["porch"].announced is False
    federation.forget_device("node-1", "porch")

    assert set(devices) == {"hall"}
    with pytest.raises(KeyError):
        federation.forget_device("node-1", "porch")
    with pytest.raises(KeyError):
        federation.forget_device("node-2", "hall")
    # A device announced again starts over.
    outcome = _deliver(federation, _heartbeat_listing(node, ("hall", "porch"), now + 2), now + 2)
    assert "device_discovered" in _kinds(outcome)
    assert devices["porch"].announced is True


def _announce_kinds(node: NodeSimulator, kinds: list[str], now: float) -> tuple[str, bytes]:
    devices = tuple(protocol.DeviceInfo(f"dev-{kind}", kind, kind, ("t",)) for kind in kinds)
    return node.heartbeat(now, devices=devices)


def _kinds_update(
    node: NodeSimulator, round_number: int, kinds: list[str], now: float
) -> tuple[str, bytes]:
    body = protocol.update_body(
        protocol.ModelUpdate(round_number, 0, {kind: kind_model(np.ones(8), 1.0) for kind in kinds})
    )
    return node.message("update", body, now)


def test_new_kind_at_cap_left_out_uncharged(federation: Federation, now: float) -> None:
    hog = NodeSimulator("hog")
    honest = NodeSimulator("honest")
    junk = [f"junk{i}" for i in range(protocol.MAX_KINDS)]
    _deliver(federation, _announce_kinds(hog, junk, now), now)
    _deliver(federation, _announce_kinds(honest, ["junk0", "humidity"], now), now)
    federation.start_round(now)
    assert "rejected" not in _kinds(_deliver(federation, _kinds_update(hog, 1, junk, now), now))
    events = len(federation.nodes["honest"].trust.events)

    outcome = _deliver(federation, _kinds_update(honest, 1, ["junk0", "humidity"], now), now)

    assert outcome.events == [
        FederationEvent("kinds_left_out", {"node_id": "honest", "round": 1, "kinds": ["humidity"]})
    ]
    assert set(federation.updates["honest"].kinds) == {"junk0"}
    assert len(federation.nodes["honest"].trust.events) == events


def test_unaggregated_kind_leaves_model(
    federation: Federation, now: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(federation_module, "KIND_RETENTION_ROUNDS", 2)
    federation.model.kinds["old-kind"] = kind_model(np.ones(8), 1.0)
    federation.kind_rounds["old-kind"] = 0
    federation.model.kinds["recent-kind"] = kind_model(np.ones(8), 1.0)
    federation.kind_rounds["recent-kind"] = 1

    _play_rounds(federation, now, rounds=2, attack_rounds=set(), seed=0)

    assert set(federation.model.kinds) == {"temperature", "recent-kind"}
    assert federation.kind_rounds == {"temperature": 2, "recent-kind": 1}
    stored = json.loads(json.dumps(federation.to_dict()))
    assert Federation(federation.settings, stored).kind_rounds == federation.kind_rounds


def test_kind_expires_without_quorum(
    federation: Federation, now: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(federation_module, "KIND_RETENTION_ROUNDS", 2)
    _play_rounds(federation, now, rounds=2, attack_rounds=set(), seed=0)
    version = federation.model.version
    # No round from now on reaches its quorum.
    federation.settings = replace(federation.settings, min_nodes=100)
    clock = now + 30

    federation.start_round(clock)
    outcome = federation.close_round(clock + 1)
    assert "temperature" in federation.model.kinds
    assert not [p for p in outcome.publishes if p.topic == protocol.model_topic(PREFIX)]
    federation.start_round(clock + 10)
    outcome = federation.close_round(clock + 11)

    assert federation.model.kinds == {}
    assert federation.model.version == version + 1
    assert _published_model(outcome)["kinds"] == {}


def test_state_without_kind_rounds(federation: Federation, now: float) -> None:
    _play_rounds(federation, now, rounds=2, attack_rounds=set(), seed=0)
    stored = json.loads(json.dumps(federation.to_dict()))
    del stored["kind_rounds"]

    restored = Federation(federation.settings, stored, now=now)

    assert restored.kind_rounds == {"temperature": 2}


def test_state_survives_restart(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    replayed = node.heartbeat(now)
    _deliver(federation, replayed, now)
    federation.nodes["node-1"].trust.record_event(now, "bad_signature", 0.5)
    stored = json.loads(json.dumps(federation.to_dict()))

    restored = Federation(federation.settings, stored, now=now)

    assert restored.nodes["node-1"].trust.to_dict() == federation.nodes["node-1"].trust.to_dict()
    assert restored.replay.counters == federation.replay.counters
    assert set(restored.nodes["node-1"].devices) == {"node-1-dev"}
    outcome = _deliver(restored, replayed, now)
    assert outcome.events[0].data["reason"] == "replayed"


def test_second_update_in_round_names_shared_id(federation: Federation, now: float) -> None:
    node, body = _round_one_update(federation, now)
    _deliver(federation, node.message("update", body, now + 1), now + 1)

    outcome = _deliver(federation, node.message("update", body, now + 2), now + 2)

    assert outcome.events[0].data["reason"] == "wrong_round"
    assert "two edge nodes are set up with the id node-1" in outcome.events[0].data["detail"]


def test_dropped_update_has_reason(federation: Federation, now: float) -> None:
    events = _play_rounds(federation, now, rounds=4, attack_rounds={4}, seed=0)

    [completed] = [e for r, e in events if r == 4 and e.kind == "round_completed"]
    assert completed.data["dropped"] == ["attacker"]
    assert completed.data["dropped_reasons"]["attacker"].startswith("kind temperature: ")


def test_late_update_rejected_without_charge(federation: Federation, now: float) -> None:
    node, body = _round_one_update(federation, now)
    federation.close_round(now + 6)
    events = len(federation.nodes["node-1"].trust.events)

    outcome = _deliver(federation, node.message("update", body, now + 7), now + 7)

    assert outcome.events[0].data["reason"] == "late"
    assert len(federation.nodes["node-1"].trust.events) == events


def test_clean_stop_keeps_earlier_timestamps(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    late = node.heartbeat(now + 1)
    stored = json.loads(json.dumps(federation.to_dict(clean=True)))

    restored = Federation(federation.settings, stored, now=now + 30)

    assert "rejected" not in _kinds(_deliver(restored, late, now + 31))


def _growing_node_rounds(
    federation: Federation, now: float, samples: list[int], flip: bool = False
) -> list[float]:
    """Play rounds in which node "grower" sends ``samples[i]`` rows in round i + 1.

    Its step changes direction when its sample count changes, as a training
    buffer that fills up changes what a node learns, or with ``flip`` turns
    against the others' steps, as an attacker would. Returns its integrity
    evidence per round.
    """
    grower = NodeSimulator("grower")
    nodes = [*(NodeSimulator(node_id) for node_id in HONEST), grower]
    rng = np.random.RandomState(0)
    evidence = []
    clock = now
    for round_number, count in enumerate(samples, start=1):
        clock += 10
        for node in nodes:
            _deliver(federation, node.heartbeat(clock), clock)
        federation.start_round(clock)
        kinds = federation.model.kinds
        base = kinds["temperature"].svm_vector() if kinds else np.zeros(9)
        for node in nodes:
            step = 0.1 + 0.01 * rng.normal(size=9)
            n_samples = 100
            if node is grower:
                n_samples = count
                if count != samples[0]:
                    step = -10 * step if flip else step * np.repeat([-1, 1], [4, 5])
            vector = base + step
            model = kind_model(vector[:-1], vector[-1], n_samples)
            _deliver(federation, node.update(round_number, model, clock + 1), clock + 1)
        federation.close_round(clock + 2)
        evidence.append(federation.nodes["grower"].last_integrity)
    return evidence


def test_growing_training_data_restarts_history(federation: Federation, now: float) -> None:
    grown = _growing_node_rounds(federation, now, [24, 24, 24, 24, 100, 100])

    assert grown == [1.0] * 6
    assert federation.nodes["grower"].trust.update_samples["temperature"] == [100, 6]


def test_growth_claimed_with_flipped_update_compared(federation: Federation, now: float) -> None:
    evidence = _growing_node_rounds(federation, now, [24, 24, 24, 100], flip=True)

    assert evidence[:3] == [1.0] * 3
    assert evidence[3] == 0.0


def test_growth_beyond_sample_cap_compared(federation: Federation, now: float) -> None:
    # 100 000 rows against the others' 100 is a claim, not a buffer that filled.
    evidence = _growing_node_rounds(federation, now, [24, 24, 24, 24, 100_000])

    assert evidence[:4] == [1.0] * 4
    assert evidence[4] < 1.0


def test_probation_sample_ratio() -> None:
    on_probation = UpdateBaseline(parts=(np.zeros(3),), probation=2)
    clear = UpdateBaseline(parts=(np.zeros(3),))

    assert Federation._sample_ratio(on_probation) == 1.0
    assert Federation._sample_ratio(clear) == MAX_SAMPLE_RATIO
    assert Federation._sample_ratio(None) == MAX_SAMPLE_RATIO


def test_growth_after_first_updates_compared(federation: Federation, now: float) -> None:
    # Growth claimed when a node turns, after its first updates, restarts nothing.
    evidence = _growing_node_rounds(federation, now, [24] * GROWTH_WINDOW + [100])

    assert evidence[:GROWTH_WINDOW] == [1.0] * GROWTH_WINDOW
    assert evidence[-1] < 1.0


def test_changed_update_without_growth_loses_evidence(federation: Federation, now: float) -> None:
    # The same change with a sample count that shrinks is compared with the history.
    evidence = _growing_node_rounds(federation, now, [100, 100, 100, 100, 24, 24])

    assert evidence[:4] == [1.0] * 4
    assert evidence[4] < 1.0


def test_unsaved_message_not_replayed_after_restart(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    stored = json.loads(json.dumps(federation.to_dict()))
    # Accepted after the last save, then lost with the unsaved counters.
    unsaved = node.heartbeat(now + 1)
    _deliver(federation, unsaved, now + 1)

    restored = Federation(federation.settings, stored, now=now + 30)
    trust = restored.nodes["node-1"].trust.score
    outcome = _deliver(restored, unsaved, now + 31)

    assert outcome.events[0].data["reason"] == "stale"
    assert restored.nodes["node-1"].trust.score == trust
    assert "rejected" not in _kinds(_deliver(restored, node.heartbeat(now + 31), now + 31))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda env: env.update(v=2), "wrong_version"),
        (lambda env: env.update(sig="00" * 32), "bad_signature"),
        (lambda env: env.update(sender="other"), "topic_mismatch"),
        (lambda env: env.pop("counter"), "schema"),
    ],
)
def test_envelope_rejections(federation: Federation, now: float, mutate, reason: str) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    envelope = node.envelope("heartbeat", {}, now)
    mutate(envelope)
    outcome = federation.handle_message(
        protocol.node_topic(PREFIX, "node-1", "heartbeat"), json.dumps(envelope).encode(), now
    )
    assert outcome.events[0].kind == "rejected"
    assert outcome.events[0].data["reason"] == reason
    assert federation.rejected_total == 1
    # Anyone can publish such a message on the node's topic, so its record stays as it was.
    assert federation.nodes["node-1"].rejected == 0
    assert federation.nodes["node-1"].last_rejection == ""


def test_rejection_detail_escaped_and_cut(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    envelope = node.envelope("heartbeat", {}, now)
    envelope["type"] = "x\n2026-12-05 CRITICAL forged line\n" + "A" * 5000

    outcome = federation.handle_message(
        protocol.node_topic(PREFIX, "node-1", "heartbeat"), json.dumps(envelope).encode(), now
    )

    detail = outcome.events[0].data["detail"]
    assert "\n" not in detail
    assert "x\\n2026-12-05 CRITICAL forged line\\n" in detail
    assert len(detail) == security.MAX_DETAIL_CHARS
    assert detail.endswith("…")


def test_signed_nan_update_rejected_and_charged(federation: Federation, now: float) -> None:
    node, body = _round_one_update(federation, now)
    body["kinds"]["temperature"]["svm"]["coef"][3] = float("nan")
    envelope = node.envelope("update", body, now)
    payload = json.dumps(envelope, allow_nan=True).encode()
    outcome = federation.handle_message(
        protocol.node_topic(PREFIX, "node-1", "update"), payload, now
    )
    assert outcome.events[0].data["reason"] == "non_finite"
    assert federation.nodes["node-1"].trust.events[-1].severity == 1.0
    assert not federation.updates


@pytest.mark.parametrize(
    ("part", "key", "value"),
    [
        ("svm", "coef", [1.0] * 7 + [10**400]),
        ("kmeans", "centers", [[True], [False]]),
        ("svm", "offset", 10**400),
    ],
    ids=["huge-coefficient", "boolean-centers", "huge-offset"],
)
def test_signed_update_with_non_numbers_rejected(
    federation: Federation, now: float, part: str, key: str, value
) -> None:
    node, body = _round_one_update(federation, now)
    body["kinds"]["temperature"][part][key] = value
    message = node.message("update", body, now)

    outcome = _deliver(federation, message, now)

    assert outcome.events[0].data["reason"] == "schema"
    assert key in outcome.events[0].data["detail"]
    assert federation.nodes["node-1"].trust.events[-1].reason == "schema"
    assert not federation.updates


@pytest.mark.parametrize(
    ("field", "value"),
    [("model_version", 2**64), ("traffic_bytes", 10**400), ("interval", 10**400)],
    ids=["model_version", "traffic_bytes", "interval"],
)
def test_signed_huge_integer_rejected_and_charged(
    federation: Federation, now: float, field: str, value: int
) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    _, payload = node.heartbeat(now)
    envelope = json.loads(payload)
    envelope["body"][field] = value
    envelope["sig"] = security.hmac_tag(node.key, envelope)

    outcome = _deliver(
        federation,
        (protocol.node_topic(PREFIX, "node-1", "heartbeat"), protocol.encode(envelope)),
        now,
    )

    assert outcome.events[0].data["reason"] == "schema"
    assert field in outcome.events[0].data["detail"]
    assert federation.nodes["node-1"].trust.events[-1].reason == "schema"
    assert federation.nodes["node-1"].model_version == 0
    # Home Assistant's storage writes only integers that fit 64 bits.
    stack = [federation.to_dict()]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, int):
            assert abs(item) < 2**63


def test_huge_counter_rejected_and_not_stored(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    last = federation.replay.counters["node-1"]
    node.counter = iter([2**64])

    outcome = _deliver(federation, node.heartbeat(now), now)

    assert outcome.events[0].data["reason"] == "schema"
    assert federation.replay.counters["node-1"] == last


def test_unknown_node_with_bad_signature_not_created(federation: Federation, now: float) -> None:
    forger = NodeSimulator("ghost", key=bytes(32))
    outcome = _deliver(federation, forger.heartbeat(now), now)
    assert outcome.events[0].data == {
        "node_id": "ghost",
        "known_node": False,
        "reason": "bad_signature",
        "detail": "HMAC tag does not match the node key",
    }
    assert "ghost" not in federation.nodes


def test_update_shape_checked_against_params(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    federation.start_round(now)
    wrong = kind_model(np.ones(PARAMS.rff_components + 1), 1.0)
    outcome = _deliver(federation, node.update(1, wrong, now), now)
    assert outcome.events[0].data["reason"] == "wrong_shape"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("n_samples", protocol.MAX_SAMPLES + 1, "above"),
        ("count", 1e12, "more than its n_samples"),
        ("sum", [90.0], "negative variance"),
    ],
)
def test_update_counts_must_be_consistent(
    federation: Federation, now: float, field: str, value, expected: str
) -> None:
    node, body = _round_one_update(federation, now)
    model = body["kinds"]["temperature"]
    if field == "n_samples":
        model["n_samples"] = value
    else:
        model["stats"][field] = value
    outcome = _deliver(federation, node.message("update", body, now), now)
    assert outcome.events[0].data["reason"] == "schema"
    assert expected in outcome.events[0].data["detail"]
    assert not federation.updates


def test_state_topic_must_match_device(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    body = protocol.state_body(protocol.DeviceState("node-1-dev", True, 2.0, 1.0))
    envelope = node.envelope("state", body, now)
    topic = protocol.state_topic(PREFIX, "node-1", "other-dev")
    outcome = federation.handle_message(topic, protocol.encode(envelope), now)
    assert outcome.events[0].data["reason"] == "topic_mismatch"
    assert federation.nodes["node-1"].devices["node-1-dev"].anomaly is None


def test_device_count_per_node_capped(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    devices = [
        {"id": f"dev-{i}", "kind": "temperature", "name": "", "features": ["t"]}
        for i in range(protocol.MAX_DEVICES)
    ]
    body = protocol.heartbeat_body(protocol.Heartbeat((), 10.0, 0, 0, 0, 0, 0, 0, "test")) | {
        "devices": devices
    }
    outcome = _deliver(federation, node.message("heartbeat", body, now), now)
    assert outcome.events[0].data["reason"] == "schema"
    assert len(federation.nodes["node-1"].devices) == 1


def test_update_for_unannounced_kind_rejected(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    federation.start_round(now)
    body = protocol.update_body(protocol.ModelUpdate(1, 0, {"pump": kind_model(np.ones(8), 1.0)}))
    outcome = _deliver(federation, node.message("update", body, now), now)
    assert outcome.events[0].data["reason"] == "schema"
    assert "pump" in outcome.events[0].data["detail"]


def test_silent_node_trust_unchanged(federation: Federation, now: float) -> None:
    nodes = [NodeSimulator("a"), NodeSimulator("b")]
    _join(federation, nodes, now)
    federation.start_round(now + 1)
    federation.close_round(now + 2)
    before = federation.nodes["a"].trust.score
    for offset in (100, 200, 300):
        federation.start_round(now + offset)
        federation.close_round(now + offset + 1)
    assert federation.nodes["a"].trust.score == before


# Regimes: atypical data of a kind gets a model of its own.

REGULAR = [f"regular-{i}" for i in range(4)]
FAR = ["far-0", "far-1"]
FAR_CENTER = 100.0


def _regime_rounds(
    federation: Federation,
    now: float,
    rounds: int,
    nodes: list[NodeSimulator],
    center: dict[str, float],
    keys: dict[str, str] | None = None,
    attacker: tuple[str, int] | None = None,
    stale: Collection[str] = (),
) -> list[dict[str, float]]:
    """Play rounds in which every node steps from the model its data belongs to.

    A node picks its key with ``scoring.model_key``, as an edge node does,
    unless ``keys`` names one. ``attacker`` (node id, first round) flips that
    node's step and boosts it tenfold from that round on. Nodes in ``stale``
    claim to have trained from model version 0. Returns each round's
    integrity evidence by node.
    """
    rng = np.random.RandomState(0)
    evidence = []
    clock = now
    for round_number in range(1, rounds + 1):
        clock += 10
        for node in nodes:
            _deliver(federation, node.heartbeat(clock), clock)
        federation.start_round(clock)
        for node in nodes:
            stats = kind_model(np.zeros(8), 0.0, center=center[node.node_id]).stats
            key = (keys or {}).get(node.node_id) or model_key(
                federation.model.kinds, "temperature", stats
            )
            if federation.nodes[node.node_id].trust.status == TrustStatus.QUARANTINED:
                continue
            base = federation.model.kinds.get(key)
            step = 0.1 + 0.01 * rng.normal(size=9)
            if attacker is not None and node.node_id == attacker[0] and round_number >= attacker[1]:
                step = -10 * step
            vector = (np.zeros(9) if base is None else base.svm_vector()) + step
            model = kind_model(vector[:-1], vector[-1], center=center[node.node_id])
            body = protocol.update_body(
                protocol.ModelUpdate(
                    federation.round,
                    0 if node.node_id in stale else federation.model.version,
                    {key: model},
                )
            )
            outcome = _deliver(federation, node.message("update", body, clock + 1), clock + 1)
            assert "rejected" not in _kinds(outcome)
        federation.close_round(clock + 2)
        evidence.append({n.node_id: federation.nodes[n.node_id].last_integrity for n in nodes})
    return evidence


def test_atypical_nodes_share_a_regime(federation: Federation, now: float) -> None:
    nodes = [NodeSimulator(n) for n in REGULAR + FAR]
    center = {n: (FAR_CENTER if n in FAR else 0.0) for n in REGULAR + FAR}

    evidence = _regime_rounds(federation, now, 5, nodes, center)

    assert set(federation.model.kinds) == {"temperature", "temperature.1"}
    assert federation.model.kinds["temperature"].stats.mean == pytest.approx([0.0])
    assert federation.model.kinds["temperature.1"].stats.mean == pytest.approx([FAR_CENTER])
    assert all(value == 1.0 for by_node in evidence for value in by_node.values())
    assert all(federation.nodes[n].trust.status == TrustStatus.TRUSTED for n in center)
    # Round 1 found them atypical; from round 2 they train the regime.
    assert federation.nodes["far-0"].trust.typical_kinds == {}
    assert federation.nodes["regular-0"].trust.typical_kinds == {"temperature": True}
    assert set(federation.model.contributors) == set(center)


def test_regime_needs_atypical_data(federation: Federation, now: float) -> None:
    nodes = [NodeSimulator(n) for n in REGULAR + FAR]
    center = {n: (FAR_CENTER if n in FAR else 0.0) for n in REGULAR + FAR}
    _regime_rounds(federation, now, 3, nodes, center)

    # Typical data sent for the regime: it belongs in the kind's model.
    evidence = _regime_rounds(
        federation, now + 100, 1, nodes, center, keys={"regular-0": "temperature.1"}
    )

    assert evidence[0]["regular-0"] == 0.0
    assert "belongs in that kind's model" in federation.nodes["regular-0"].trust.events[-1].detail


def test_node_with_typical_history_cannot_move_to_regime(
    federation: Federation, now: float
) -> None:
    nodes = [NodeSimulator(n) for n in REGULAR + FAR]
    center = {n: (FAR_CENTER if n in FAR else 0.0) for n in REGULAR + FAR}
    _regime_rounds(federation, now, 3, nodes, center)

    # A node that claims the regime's data after typical updates would start a
    # fresh history next to the regime's two nodes.
    center["regular-0"] = FAR_CENTER
    evidence = _regime_rounds(federation, now + 100, 1, nodes, center)

    assert evidence[0]["regular-0"] == 0.0
    assert "may not move to the regime temperature.1" in (
        federation.nodes["regular-0"].trust.events[-1].detail
    )
    assert evidence[0]["far-0"] == evidence[0]["far-1"] == 1.0


def test_typical_kinds_survive_restart(federation: Federation, now: float) -> None:
    nodes = [NodeSimulator(n) for n in REGULAR + FAR]
    center = {n: (FAR_CENTER if n in FAR else 0.0) for n in REGULAR + FAR}
    _regime_rounds(federation, now, 2, nodes, center)

    stored = json.loads(json.dumps(federation.to_dict()))
    restored = Federation(federation.settings, stored)

    assert restored.nodes["regular-0"].trust.typical_kinds == {"temperature": True}
    assert set(restored.model.kinds) == {"temperature", "temperature.1"}
    # Nodes learn from the published model that this coordinator keeps regimes.
    assert json.loads(restored.model_message(now).payload)["body"]["max_regimes"] == (
        protocol.MAX_REGIMES
    )


def test_regime_of_unannounced_kind_rejected(federation: Federation, now: float) -> None:
    node = NodeSimulator("node-1")
    _join(federation, [node], now)
    federation.start_round(now)
    body = protocol.update_body(
        protocol.ModelUpdate(1, 0, {"humidity.1": kind_model(np.ones(8), 1.0)})
    )

    outcome = _deliver(federation, node.message("update", body, now), now)

    [rejected] = [e for e in outcome.events if e.kind == "rejected"]
    assert "humidity.1" in rejected.data["detail"]


def test_regime_attacker_compared_in_its_kinds_round(federation: Federation, now: float) -> None:
    nodes = [NodeSimulator(n) for n in REGULAR + FAR]
    center = {n: (FAR_CENTER if n in FAR else 0.0) for n in REGULAR + FAR}

    # Two nodes alone cannot tell which of them strays; the kind's round can.
    evidence = _regime_rounds(federation, now, 7, nodes, center, attacker=("far-1", 5))

    assert [by_node["far-1"] for by_node in evidence[:4]] == [1.0] * 4
    assert federation.nodes["far-1"].trust.status == TrustStatus.QUARANTINED
    assert all(by_node["far-0"] == 1.0 for by_node in evidence)
    assert federation.nodes["far-0"].trust.status == TrustStatus.TRUSTED


def _regime_setup(federation: Federation, now: float) -> tuple[list[NodeSimulator], dict]:
    """Play 3 rounds in which far-0 and far-1 form the regime temperature.1."""
    nodes = [NodeSimulator(n) for n in REGULAR + FAR]
    center = {n: (FAR_CENTER if n in FAR else 0.0) for n in REGULAR + FAR}
    _regime_rounds(federation, now, 3, nodes, center)
    return nodes, center


def test_regime_index_must_follow_rule(federation: Federation, now: float) -> None:
    nodes, center = _regime_setup(federation, now)

    # far-1's data fits temperature.1, so temperature.5 is a choice of its own.
    evidence = _regime_rounds(
        federation, now + 100, 1, nodes, center, keys={"far-1": "temperature.5"}
    )

    assert evidence[0]["far-1"] == 0.0
    assert "belongs to temperature.1, not to temperature.5" in (
        federation.nodes["far-1"].trust.events[-1].detail
    )
    assert "temperature.5" not in federation.model.kinds


def test_regime_index_from_older_model_not_charged(federation: Federation, now: float) -> None:
    nodes, center = _regime_setup(federation, now)

    evidence = _regime_rounds(
        federation,
        now + 100,
        1,
        nodes,
        center,
        keys={"far-1": "temperature.5"},
        stale={"far-1"},
    )

    assert evidence[0]["far-1"] == 1.0
    assert "temperature.5" not in federation.model.kinds


def test_one_atypical_update_opens_no_regime(federation: Federation, now: float) -> None:
    nodes, center = _regime_setup(federation, now)

    # An atypical update for the kind itself must not clear the typical record.
    center["regular-0"] = FAR_CENTER
    first = _regime_rounds(
        federation, now + 100, 1, nodes, center, keys={"regular-0": "temperature"}
    )
    then = _regime_rounds(federation, now + 200, 1, nodes, center)

    assert first[0]["regular-0"] < 1.0
    assert federation.nodes["regular-0"].trust.typical_kinds == {"temperature": True}
    assert then[0]["regular-0"] == 0.0
    details = [event.detail for event in federation.nodes["regular-0"].trust.events]
    assert any("may not move to the regime temperature.1" in d for d in details)


def test_regime_member_cannot_hop_to_new_regime(federation: Federation, now: float) -> None:
    nodes, center = _regime_setup(federation, now)

    # far-1 claims data that fits no regime, which would start a fresh history.
    center["far-1"] = 10 * FAR_CENTER
    evidence = _regime_rounds(federation, now + 100, 1, nodes, center)

    assert evidence[0]["far-1"] == 0.0
    assert "history in temperature.1" in federation.nodes["far-1"].trust.events[-1].detail
    assert evidence[0]["far-0"] == 1.0


def test_non_finite_aggregate_keeps_model(
    federation: Federation, now: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes, center = _regime_setup(federation, now)
    before = federation.model.kinds["temperature"]

    def overflowing(updates, *args, **kwargs):
        return replace(updates[0], svm_coef=np.full_like(updates[0].svm_coef, np.inf))

    monkeypatch.setattr(federation_module, "aggregate_kind", overflowing)
    _regime_rounds(federation, now + 100, 1, nodes, center)

    assert federation.model.kinds["temperature"] is before
    json.dumps(federation.to_dict(), allow_nan=False)
