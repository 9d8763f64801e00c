"""Tests of the edge node runtime, driven from the test thread with a recording link."""

import itertools
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fltrust_core import protocol, security
from fltrust_core.detectors import PersonalizedDetector
from fltrust_core.model import FeatureStats, FederationParams, GlobalModel
from fltrust_edge import agent
from fltrust_edge.agent import EdgeNode, ReplayEnded
from fltrust_edge.config import SimulationConfig, load_config
from fltrust_edge.link import Connected, Disconnected, Message
from fltrust_edge.simulation import CompromiseSimulation
from fltrust_edge.sources import Sample
from fltrust_edge.throttle import ThrottledLogger

from .conftest import (
    NODE_ID,
    PARAMS,
    PREFIX,
    CoordinatorSigner,
    base_config,
    feed_csv,
    make_offline_node,
    node_key,
    pump,
    write_config,
    write_csv,
)

ROUND_TOPIC = protocol.round_topic(PREFIX)
MODEL_TOPIC = protocol.model_topic(PREFIX)
COMMAND_TOPIC = protocol.command_topic(PREFIX, NODE_ID)


def replayed_node(node_config, **kwargs):
    """Return an offline node that has processed its whole CSV and calibrated a local detector."""
    node, link = make_offline_node(node_config, **kwargs)
    feed_csv(node)
    pump(node, lambda: node._replays_running == 0 and node.detector("temperature") is not None)
    return node, link


def send(node, topic, payload, retained=False):
    node._dispatch(Message(topic, payload, retained))


def updates(link):
    return link.envelopes("update")


def global_model_from(update_envelope, version=1, params=PARAMS):
    parsed = protocol.parse_update(update_envelope["body"], params, {})
    return GlobalModel(version=version, round=version, params=params, kinds=parsed.kinds)


def test_every_uplink_is_signed(node_config, signer):
    node, link = replayed_node(node_config)
    send(node, ROUND_TOPIC, signer.round(1))
    pump(node, lambda: updates(link))
    send(node, COMMAND_TOPIC, signer.command("reauthenticate", nonce="n" * 32))
    node._publish_heartbeat()

    envelopes = link.envelopes()
    types = {envelope["type"] for envelope in envelopes}
    counters = [envelope["counter"] for envelope in envelopes]

    assert types == {"state", "update", "auth", "heartbeat"}
    for envelope in envelopes:
        security.verify_hmac(node_key(), envelope)
        assert envelope["sender"] == NODE_ID
        assert envelope["v"] == 1
    assert counters == sorted(counters)
    assert len(set(counters)) == len(counters)


def test_uplink_signature_fails_with_other_key(node_config):
    node, link = make_offline_node(node_config)
    node._publish_heartbeat()
    envelope = link.envelopes("heartbeat")[0]

    with pytest.raises(security.MessageRejected):
        security.verify_hmac(security.derive_node_key(bytes(range(32)), "node-2"), envelope)


def test_topics_match_protocol(node_config, signer):
    node, link = replayed_node(node_config)
    send(node, ROUND_TOPIC, signer.round(1))
    pump(node, lambda: updates(link))
    node._publish_heartbeat()

    topics = {topic for topic, _, _ in link.published}

    assert protocol.node_topic(PREFIX, NODE_ID, "update") in topics
    assert protocol.node_topic(PREFIX, NODE_ID, "heartbeat") in topics
    assert protocol.state_topic(PREFIX, NODE_ID, "sensor-1") in topics
    for topic in topics:
        assert protocol.parse_uplink_topic(PREFIX, topic) is not None


def test_local_detector_after_buffer_fills(node_config):
    node, _ = replayed_node(node_config)

    monitor = node._monitors["sensor-1"]
    assert monitor.n_train == 200
    assert monitor.n_test == 600
    assert node.detector("temperature").threshold_ > 0


def test_round_sends_update(node_config, signer):
    node, link = replayed_node(node_config)

    send(node, ROUND_TOPIC, signer.round(1))
    pump(node, lambda: updates(link))

    envelope = updates(link)[0]
    update = protocol.parse_update(envelope["body"], PARAMS, {"temperature": 3})
    model = update.kinds["temperature"]
    assert update.round == 1
    assert update.base_version == 0
    assert model.n_samples == 200
    assert model.stats.count == 200
    assert model.svm_coef.shape == (PARAMS.rff_components,)
    assert model.centers.shape == (PARAMS.n_clusters, 3)
    assert list(node.recent_rounds) == [1]
    assert "rows" not in json.dumps(envelope["body"])


def test_round_without_training_data_is_skipped(node_config, signer, caplog):
    node, link = make_offline_node(node_config)

    with caplog.at_level("INFO"):
        send(node, ROUND_TOPIC, signer.round(1))

    assert updates(link) == []
    assert "no device kind has enough training rows" in caplog.text


def test_round_handled_once(node_config, signer):
    node, link = replayed_node(node_config)
    send(node, ROUND_TOPIC, signer.round(1))
    pump(node, lambda: updates(link))

    send(node, ROUND_TOPIC, signer.round(1))

    assert node._training_round is None
    assert len(updates(link)) == 1


# Four minutes, inside the five minutes of clock difference that messages may have.
CLOCK_OFFSET = 240.0


@pytest.mark.parametrize("offset", [CLOCK_OFFSET, -CLOCK_OFFSET], ids=["ahead", "behind"])
def test_round_joined_with_skewed_clock(node_config, signer, caplog, offset):
    node, link = replayed_node(node_config, clock=lambda: time.time() + offset)

    with caplog.at_level("WARNING"):
        send(node, ROUND_TOPIC, signer.round(1, time_left=60.0))
        pump(node, lambda: updates(link))

    update = protocol.parse_update(updates(link)[0]["body"], PARAMS, {"temperature": 3})
    assert update.round == 1
    assert list(node.recent_rounds) == [1]
    assert "after its deadline" not in caplog.text


@pytest.mark.parametrize(
    "offset", [CLOCK_OFFSET, 0.0, -CLOCK_OFFSET], ids=["ahead", "same", "behind"]
)
def test_expired_round_skipped_with_skewed_clock(node_config, signer, caplog, offset):
    node, link = replayed_node(node_config, clock=lambda: time.time() + offset)

    with caplog.at_level("WARNING"):
        send(node, ROUND_TOPIC, signer.round(1, time_left=-1.0))

    assert node._training_round is None
    assert updates(link) == []
    assert "round 1 arrived 1.0 s after its deadline, skipping it" in caplog.text


def test_retained_stale_round_skipped(node_config, signer, caplog):
    node, link = replayed_node(node_config)
    # Announced 60 s ago with 30 s to go: retained, it arrives with its old timestamp.
    payload = signer.round(1, time_left=30.0, timestamp=time.time() - 60.0)

    with caplog.at_level("INFO"):
        node._dispatch(Message(ROUND_TOPIC, payload, True))

    assert node._training_round is None
    assert updates(link) == []
    [record] = [r for r in caplog.records if "after its deadline, skipping it" in r.getMessage()]
    # The broker delivers the retained round on every connect: routine, not a warning.
    assert record.levelname == "INFO"


def test_cleared_coordinator_message_logged(node_config, caplog):
    node, _link = replayed_node(node_config)

    with caplog.at_level("INFO"):
        for topic in (ROUND_TOPIC, f"{node_config.mqtt.prefix}/coordinator/model"):
            node._dispatch(Message(topic, b"", True))

    cleared = [r for r in caplog.records if "cleared its retained message" in r.getMessage()]
    assert len(cleared) == 2
    assert all(record.levelname == "INFO" for record in cleared)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_round_time_left_counts_from_receipt(node_config, signer, caplog):
    node, link = replayed_node(node_config)
    payload = signer.round(1, time_left=60.0)

    with caplog.at_level("WARNING"):
        node._dispatch(Message(ROUND_TOPIC, payload, False, received=time.monotonic() - 90.0))

    assert node._training_round is None
    assert updates(link) == []
    assert "round 1 arrived 30.0 s after its deadline" in caplog.text


@pytest.mark.parametrize(
    ("make_payload", "reason"),
    [
        (lambda s: CoordinatorSigner(key=bytes(32)).round(1), "bad_signature"),
        (lambda s: s.round(1, timestamp=time.time() - 3600), "stale"),
        (lambda s: s.command("release"), "topic_mismatch"),
        (lambda s: b"\x00garbage", "malformed"),
    ],
)
def test_rejected_round_is_logged_and_ignored(node_config, signer, caplog, make_payload, reason):
    node, link = replayed_node(node_config)

    with caplog.at_level("WARNING"):
        send(node, ROUND_TOPIC, make_payload(signer))

    assert updates(link) == []
    assert node._training_round is None
    assert f"rejected message on {ROUND_TOPIC}: {reason}" in caplog.text


def test_replayed_round_rejected(node_config, signer, caplog):
    node, link = replayed_node(node_config)
    payload = signer.round(1)
    send(node, ROUND_TOPIC, payload)
    pump(node, lambda: updates(link))

    with caplog.at_level("WARNING"):
        send(node, ROUND_TOPIC, payload)

    assert "replayed" in caplog.text
    assert len(updates(link)) == 1


def test_wrong_version_model_rejected(node_config, signer, caplog):
    node, _ = make_offline_node(node_config)
    envelope = signer.envelope("model", GlobalModel(version=1, params=PARAMS).to_json())
    envelope["v"] = 99
    envelope["sig"] = security.ed25519_signature(signer.private_key, envelope)

    with caplog.at_level("WARNING"):
        send(node, MODEL_TOPIC, protocol.encode(envelope))

    assert node.model_version == 0
    assert "wrong_version" in caplog.text


def test_global_model_adopted_and_calibrated(node_config, signer):
    node, link = replayed_node(node_config)
    send(node, ROUND_TOPIC, signer.round(1))
    pump(node, lambda: updates(link))
    model = global_model_from(updates(link)[0])

    send(node, MODEL_TOPIC, signer.model(model))
    pump(node, lambda: node._detector_version.get("temperature") == 1)

    assert node.model_version == 1
    detector = node.detector("temperature")
    assert isinstance(detector, PersonalizedDetector)
    assert detector.global_detector_.model_.n_samples == 200
    assert np.array_equal(
        detector.global_detector_.model_.svm_coef, model.kinds["temperature"].svm_coef
    )
    node._publish_heartbeat()
    heartbeat = protocol.parse_heartbeat(link.envelopes("heartbeat")[-1]["body"])
    assert heartbeat.model_version == 1


def test_unfit_model_warned(node_config, signer, caplog):
    node, link = replayed_node(node_config)
    send(node, ROUND_TOPIC, signer.round(1))
    pump(node, lambda: updates(link))
    model = global_model_from(updates(link)[0])
    fitting = model.kinds["temperature"]
    rng = np.random.default_rng(0)
    model.kinds["temperature"] = replace(
        fitting,
        stats=FeatureStats.from_samples(rng.normal(size=(50, 5))),
        centers=rng.normal(size=(PARAMS.n_clusters, 5)),
    )

    with caplog.at_level("WARNING"):
        send(node, MODEL_TOPIC, signer.model(model))
        send(node, MODEL_TOPIC, signer.model(replace(model, version=2)))
    pump(node, lambda: node._detector_version.get("temperature") == 0)

    assert node.model_version == 2
    assert caplog.text.count("the global model's kind temperature has 5 features") == 1
    assert "this node's devices of that kind have 3" in caplog.text


def test_older_model_ignored(node_config, signer):
    node, _ = make_offline_node(node_config)
    send(node, MODEL_TOPIC, signer.model(GlobalModel(version=5, params=PARAMS)))

    send(node, MODEL_TOPIC, signer.model(GlobalModel(version=4, params=PARAMS)))

    assert node.model_version == 5


def test_next_round_starts_from_global_model(node_config, signer):
    node, link = replayed_node(node_config)
    send(node, ROUND_TOPIC, signer.round(1))
    pump(node, lambda: updates(link))
    send(node, MODEL_TOPIC, signer.model(global_model_from(updates(link)[0])))

    send(node, ROUND_TOPIC, signer.round(2))
    pump(node, lambda: len(updates(link)) == 2)

    second = protocol.parse_update(updates(link)[1]["body"], PARAMS, {})
    assert second.round == 2
    assert second.base_version == 1
    assert list(node.recent_rounds) == [1, 2]
    assert node.rounds_joined == 2


def test_restart_waits_for_buffer(node_config, signer, caplog):
    node, link = replayed_node(node_config)
    send(node, ROUND_TOPIC, signer.round(1))
    pump(node, lambda: updates(link))
    first = protocol.parse_update(updates(link)[0]["body"], PARAMS, {})
    rows = first.kinds["temperature"].n_samples

    # After a restart the replay fills the training buffer again, row by row.
    restarted, restarted_link = make_offline_node(node_config)
    samples = restarted._replays[0].samples()
    for sample in itertools.islice(samples, rows // 2):
        restarted._dispatch(sample)
    with caplog.at_level("INFO"):
        send(restarted, ROUND_TOPIC, signer.round(2))
    assert updates(restarted_link) == []
    assert f"has {rows // 2} training rows again, fewer than the {rows} of its last" in (
        caplog.text
    )

    for sample in samples:
        restarted._dispatch(sample)
    send(restarted, ROUND_TOPIC, signer.round(3))
    pump(restarted, lambda: updates(restarted_link))
    third = protocol.parse_update(updates(restarted_link)[0]["body"], PARAMS, {})
    assert third.round == 3
    assert third.kinds["temperature"].n_samples == rows


def test_recent_rounds_bounded(node_config, signer, monkeypatch):
    monkeypatch.setattr(agent, "RECENT_ROUNDS", 2)
    node, link = replayed_node(node_config)

    for round_number in (1, 2, 3):
        send(node, ROUND_TOPIC, signer.round(round_number))
        pump(node, lambda n=round_number: len(updates(link)) == n)

    assert node.rounds_joined == 3
    assert list(node.recent_rounds) == [2, 3]
    document = node.evaluate()
    assert document["rounds"] == [2, 3]
    assert document["rounds_joined"] == 3


def test_new_epoch_resets_node(node_config, signer, caplog):
    node, link = replayed_node(node_config)
    send(node, ROUND_TOPIC, signer.round(7, epoch="aa"))
    pump(node, lambda: updates(link))
    old_model = global_model_from(updates(link)[0], version=5)
    old_model.epoch = "aa"
    send(node, MODEL_TOPIC, signer.model(old_model))
    send(node, COMMAND_TOPIC, signer.command("quarantine"))
    assert node.model_version == 5

    # The coordinator lost its state and starts over from round 1 and version 1.
    with caplog.at_level("WARNING"):
        send(node, ROUND_TOPIC, signer.round(1, epoch="bb"))
    pump(node, lambda: len(updates(link)) == 2)

    assert "started a new federation (epoch bb, was aa)" in caplog.text
    assert node.quarantined is False
    assert node.model_version == 0
    update = protocol.parse_update(updates(link)[1]["body"], PARAMS, {})
    assert (update.round, update.base_version) == (1, 0)
    new_model = global_model_from(updates(link)[1], version=1)
    new_model.epoch = "bb"
    send(node, MODEL_TOPIC, signer.model(new_model))
    assert node.model_version == 1

    restarted, _ = make_offline_node(node_config)
    assert restarted.model_version == 1
    assert restarted.quarantined is False


def test_update_of_previous_epoch_not_sent(node_config, signer, caplog):
    node, link = replayed_node(node_config)
    send(node, ROUND_TOPIC, signer.round(1, epoch="aa"))
    pump(node, lambda: updates(link))

    # Round 7 trains while the coordinator starts over with round 1.
    send(node, ROUND_TOPIC, signer.round(7, epoch="aa"))
    with caplog.at_level("INFO"):
        send(node, ROUND_TOPIC, signer.round(1, epoch="bb"))
        pump(node, lambda: node._training_round is None and node._events.empty())

    rounds = [protocol.parse_update(u["body"], PARAMS, {}).round for u in updates(link)]
    assert rounds == [1, 1]
    assert "update for round 7 of the previous federation not sent" in caplog.text


def test_saved_model_survives_restart(node_config, signer):
    node, _ = make_offline_node(node_config)
    send(node, MODEL_TOPIC, signer.model(GlobalModel(version=3, params=PARAMS)))

    restarted, _ = make_offline_node(node_config)

    assert restarted.model_version == 3
    assert restarted._params == PARAMS


def test_heartbeat_body(node_config):
    node, link = replayed_node(node_config)
    link.published.clear()
    node._publish_heartbeat()

    envelope = link.envelopes("heartbeat")[0]
    heartbeat = protocol.parse_heartbeat(envelope["body"])

    assert heartbeat.samples == 800
    assert heartbeat.anomalies > 0
    assert heartbeat.devices[0].device_id == "sensor-1"
    assert heartbeat.devices[0].features == ("temperature",)
    assert heartbeat.traffic_bytes > 0
    assert heartbeat.model_version == 0
    assert heartbeat.software.startswith("fltrust-edge/")
    assert heartbeat.peers_known >= 0
    assert len(link.envelopes("state")) == 1


def test_heartbeat_counts_reset_each_interval(node_config):
    node, link = replayed_node(node_config)
    node._publish_heartbeat()

    node._publish_heartbeat()

    second = protocol.parse_heartbeat(link.envelopes("heartbeat")[-1]["body"])
    assert second.samples == 0
    assert second.anomalies == 0


def test_state_published_on_change(node_config):
    node, link = replayed_node(node_config)

    states = [protocol.parse_state(e["body"]) for e in link.envelopes("state")]

    assert states
    assert states[0].anomaly is True
    flags = [state.anomaly for state in states]
    assert all(a != b for a, b in itertools.pairwise(flags))
    assert all(state.threshold == node.detector("temperature").threshold_ for state in states)


def test_quarantine_stops_updates_until_release(node_config, signer, caplog):
    node, link = replayed_node(node_config)

    with caplog.at_level("WARNING"):
        send(node, COMMAND_TOPIC, signer.command("quarantine"))
    send(node, ROUND_TOPIC, signer.round(1))

    assert node.quarantined is True
    assert "quarantined by the coordinator" in caplog.text
    assert updates(link) == []

    restarted, _ = make_offline_node(node_config)
    assert restarted.quarantined is True

    send(node, COMMAND_TOPIC, signer.command("release"))
    send(node, ROUND_TOPIC, signer.round(2))
    pump(node, lambda: updates(link))

    assert node.quarantined is False
    assert protocol.parse_update(updates(link)[0]["body"], PARAMS, {}).round == 2


@pytest.mark.parametrize("content", ["[]", '{"counter_reserved": 5, "quarantined": "yes"}'])
def test_invalid_state_file_quarantined_by_retained_command(node_config, signer, caplog, content):
    state_file = node_config.security.state_dir / "state.json"
    state_file.write_text(content)

    with caplog.at_level("WARNING"):
        node, link = replayed_node(node_config)
    assert node.quarantined is False
    assert "retained command quarantines it again" in caplog.text

    # The coordinator still keeps the node in quarantine, and its command is retained.
    node._dispatch(Message(COMMAND_TOPIC, signer.command("quarantine"), True))
    send(node, ROUND_TOPIC, signer.round(1))

    assert node.quarantined is True
    assert updates(link) == []


def test_start_logs_saved_quarantine(node_config, caplog):
    node, _ = make_offline_node(node_config)
    node._set_quarantined(True)
    restarted, _ = make_offline_node(node_config)

    with caplog.at_level("WARNING"):
        restarted.start()
    restarted.stop()

    assert "node-1: starting quarantined, as recorded in " in caplog.text


def test_heartbeats_continue_in_quarantine(node_config, signer):
    node, link = make_offline_node(node_config)
    send(node, COMMAND_TOPIC, signer.command("quarantine"))

    node._publish_heartbeat()

    assert len(link.envelopes("heartbeat")) == 1


def test_reauthenticate_answers_nonce(node_config, signer):
    node, link = make_offline_node(node_config)
    nonce = "a1b2c3d4e5f60718293a4b5c6d7e8f90"

    send(node, COMMAND_TOPIC, signer.command("reauthenticate", nonce=nonce))

    auth = link.envelopes("auth")
    assert len(auth) == 1
    assert protocol.parse_auth(auth[0]["body"]) == nonce
    security.verify_hmac(node_key(), auth[0])
    topic = link.published[-1][0]
    assert topic == protocol.node_topic(PREFIX, NODE_ID, "auth")


def test_challenge_after_missed_release_lifts_quarantine(node_config, signer, caplog):
    node, _link = replayed_node(node_config)
    send(node, COMMAND_TOPIC, signer.command("quarantine"))
    restarted, restarted_link = replayed_node(node_config)
    assert restarted.quarantined is True

    # Offline during the release, the node finds only the challenge that
    # replaced the retained release command.
    with caplog.at_level("INFO"):
        send(restarted, COMMAND_TOPIC, signer.command("reauthenticate", nonce="c" * 32), True)
    send(restarted, ROUND_TOPIC, signer.round(1))
    pump(restarted, lambda: updates(restarted_link))

    assert restarted.quarantined is False
    assert "released from quarantine (the coordinator sent a challenge)" in caplog.text
    assert len(restarted_link.envelopes("auth")) == 1
    assert protocol.parse_update(updates(restarted_link)[0]["body"], PARAMS, {}).round == 1


def test_reauthenticate_with_short_nonce_rejected(node_config, signer, caplog):
    node, link = make_offline_node(node_config)

    with caplog.at_level("WARNING"):
        send(node, COMMAND_TOPIC, signer.command("reauthenticate", nonce="short"))

    assert link.envelopes("auth") == []
    assert "nonce" in caplog.text


def test_retained_command_applied_after_restart(node_config, signer):
    node, _ = make_offline_node(node_config)
    payload = signer.command("quarantine")
    send(node, COMMAND_TOPIC, payload, retained=True)
    send(node, COMMAND_TOPIC, signer.command("release"))

    restarted, _ = make_offline_node(node_config)
    send(restarted, COMMAND_TOPIC, payload, retained=True)

    assert restarted.quarantined is False


def test_counter_monotonic_across_node_restart(node_config):
    node, link = make_offline_node(node_config)
    node._publish_heartbeat()
    node.stop()

    restarted, restarted_link = make_offline_node(node_config)
    restarted._publish_heartbeat()

    before = link.envelopes("heartbeat")[0]["counter"]
    after = restarted_link.envelopes("heartbeat")[0]["counter"]
    assert after > before


def test_results_written_when_replay_ends(tmp_path, node_config):
    results = tmp_path / "results.json"
    node, _ = make_offline_node(node_config, results_path=results)
    feed_csv(node)
    pump(node, results.exists)
    pump(node, node._events.empty)
    node._write_results()

    document = json.loads(results.read_text())
    device = document["devices"]["sensor-1"]
    assert document["node_id"] == NODE_ID
    assert document["rounds_joined"] == 0
    assert document["model_version"] == 0
    assert device["model"] == "local"
    assert device["n_rows"] == 600
    assert device["n_anomalies"] == 80
    assert device["n_train_rows"] == 200
    assert device["auc"] > 0.9
    assert device["recall"] > 0.5
    assert 0 < device["flag_all_f1"] < 1
    assert device["threshold"] == pytest.approx(node.detector("temperature").threshold_, abs=1e-5)


def test_done_after_next_global_model(tmp_path, node_config, signer):
    results = tmp_path / "results.json"
    node, link = replayed_node(node_config, results_path=results)
    assert not node.done.is_set()
    send(node, ROUND_TOPIC, signer.round(1))
    pump(node, lambda: updates(link))

    send(node, MODEL_TOPIC, signer.model(global_model_from(updates(link)[0])))
    pump(node, node.done.is_set)

    document = json.loads(results.read_text())
    assert document["model_version"] == 1
    assert document["rounds"] == [1]
    assert document["devices"]["sensor-1"]["model"] == "global"


def test_done_after_timeout(tmp_path, node_config):
    node, _ = replayed_node(node_config, results_path=tmp_path / "r.json", done_timeout=0.01)

    node._done_deadline = time.monotonic() - 1
    node.start()
    try:
        assert node.done.wait(10)
    finally:
        node.stop()


def zigbee_config(tmp_path):
    """Return a node configuration with one Zigbee2MQTT temperature sensor on z2m/kitchen."""
    data = base_config(tmp_path)
    data["devices"] = [
        {
            "id": "zigbee-1",
            "kind": "temperature",
            "features": ["temperature"],
            "source": {
                "type": "mqtt",
                "topics": [
                    {"topic": "z2m/kitchen", "feature": "temperature", "value_path": "temperature"}
                ],
            },
        }
    ]
    return load_config(write_config(tmp_path, data))


def test_mqtt_device_samples(tmp_path, signer):
    node, link = make_offline_node(zigbee_config(tmp_path))
    rng = np.random.default_rng(0)

    for value in 21.0 + rng.normal(0, 0.1, 250):
        send(node, "z2m/kitchen", json.dumps({"temperature": value}).encode())
    send(node, "z2m/kitchen", b'{"temperature": "error"}')
    pump(node, lambda: node.detector("temperature") is not None)
    for _ in range(30):
        send(node, "z2m/kitchen", b'{"temperature": 35.0}')

    monitor = node._monitors["zigbee-1"]
    assert monitor.n_train == 200
    assert monitor.n_test == 0
    assert monitor.anomaly is True
    assert link.envelopes("state")


def test_live_buffer_survives_restart(tmp_path, caplog):
    config = zigbee_config(tmp_path)
    node, _ = make_offline_node(config)
    rng = np.random.default_rng(0)
    for value in 21.0 + rng.normal(0, 0.1, 250):
        send(node, "z2m/kitchen", json.dumps({"temperature": value}).encode())
    buffer = node._monitors["zigbee-1"].training_data()

    with caplog.at_level("INFO"):
        restarted, _ = make_offline_node(config)
        pump(restarted, lambda: restarted.detector("temperature") is not None)

    np.testing.assert_array_equal(restarted._monitors["zigbee-1"].training_data(), buffer)
    assert "restored 200 training rows of zigbee-1" in caplog.text


def test_partial_buffer_kept_across_stop(tmp_path, caplog):
    config = zigbee_config(tmp_path)
    node, _ = make_offline_node(config)
    for value in (21.0, 21.1, 21.2):
        send(node, "z2m/kitchen", json.dumps({"temperature": value}).encode())
    node.stop()

    restarted, _ = make_offline_node(config)
    assert restarted._monitors["zigbee-1"].n_train == 3

    window = config.detection.smoothing_window + 1
    changed = replace(config, detection=replace(config.detection, smoothing_window=window))
    with caplog.at_level("INFO"):
        other, _ = make_offline_node(changed)
    assert other._monitors["zigbee-1"].n_train == 0
    assert "computed with other feature settings" in caplog.text


def _fill_and_stop(config) -> Path:
    node, _ = make_offline_node(config)
    for value in (21.0, 21.1, 21.2):
        send(node, "z2m/kitchen", json.dumps({"temperature": value}).encode())
    node.stop()
    return config.security.state_dir / "buffers" / "zigbee-1.npz"


def _rewrite_rows(path: Path, rows: np.ndarray) -> None:
    with np.load(path) as data:
        settings = str(data["settings"])
    with path.open("wb") as file:
        np.savez(file, rows=rows, settings=np.array(settings))


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
        lambda path: path.write_bytes(b""),
        lambda path: path.write_bytes(b"garbage" * 10),
        lambda path: _rewrite_rows(path, np.zeros((3, 2))),
        lambda path: _rewrite_rows(path, np.full((3, 3), 1e300)),
        lambda path: _rewrite_rows(path, np.zeros((3, 3), dtype=complex)),
    ],
    ids=["cut", "empty", "garbage", "wrong_width", "huge", "complex"],
)
def test_damaged_buffer_file_ignored(tmp_path, caplog, damage):
    config = zigbee_config(tmp_path)
    path = _fill_and_stop(config)
    damage(path)

    with caplog.at_level("WARNING"):
        restarted, _ = make_offline_node(config)

    assert restarted._monitors["zigbee-1"].n_train == 0
    assert "Ignoring " in caplog.text
    assert "so the device fills a new one" in caplog.text


def test_unfit_kind_skips_rounds(node_config, signer, caplog):
    node, link = replayed_node(node_config)
    send(node, ROUND_TOPIC, signer.round(1))
    pump(node, lambda: updates(link))
    model = global_model_from(updates(link)[0])
    rng = np.random.default_rng(0)
    model.kinds["temperature"] = replace(
        model.kinds["temperature"],
        stats=FeatureStats.from_samples(rng.normal(size=(50, 5))),
        centers=rng.normal(size=(PARAMS.n_clusters, 5)),
    )
    send(node, MODEL_TOPIC, signer.model(model))

    with caplog.at_level("INFO"):
        send(node, ROUND_TOPIC, signer.round(2))

    assert len(updates(link)) == 1
    assert "kind temperature skipped, because its features do not fit" in caplog.text


def simulated_config(tmp_path, **simulation):
    data = base_config(tmp_path)
    data["simulation"] = simulation
    return load_config(write_config(tmp_path, data))


def test_simulation_poisons_after_compromise(tmp_path, signer):
    config = simulated_config(tmp_path, compromise_at_round=2, unknown_peers=4, poison="sign_flip")
    node, link = replayed_node(config)
    send(node, ROUND_TOPIC, signer.round(1))
    pump(node, lambda: updates(link))
    node._publish_heartbeat()
    honest_heartbeat = protocol.parse_heartbeat(link.envelopes("heartbeat")[-1]["body"])

    send(node, ROUND_TOPIC, signer.round(2))
    pump(node, lambda: len(updates(link)) == 2)
    node._publish_heartbeat()
    compromised_heartbeat = protocol.parse_heartbeat(link.envelopes("heartbeat")[-1]["body"])

    honest = protocol.parse_update(updates(link)[0]["body"], PARAMS, {}).kinds["temperature"]
    poisoned = protocol.parse_update(updates(link)[1]["body"], PARAMS, {}).kinds["temperature"]
    assert np.allclose(poisoned.svm_coef, -honest.svm_coef)
    assert np.allclose(poisoned.centers, -honest.centers)
    assert np.array_equal(poisoned.stats.total, honest.stats.total)
    assert compromised_heartbeat.peers_unknown >= honest_heartbeat.peers_unknown + 4


@pytest.mark.parametrize("method", ["scale", "noise"])
def test_simulation_poison_methods(method):
    from fltrust_core.detectors import KindDetector

    model = KindDetector(FederationParams(rff_components=8, n_clusters=2)).train(
        np.random.default_rng(0).normal(size=(50, 2))
    )
    simulation = CompromiseSimulation(SimulationConfig(poison=method, poison_scale=10.0), NODE_ID)
    simulation.observe_round(1)

    poisoned = simulation.poison({"k": model})["k"]

    assert not np.allclose(poisoned.svm_coef, model.svm_coef)
    assert np.all(np.isfinite(poisoned.svm_coef))
    if method == "scale":
        assert np.allclose(poisoned.svm_coef, model.svm_coef * 10.0)


def test_simulation_false_readings():
    simulation = CompromiseSimulation(
        SimulationConfig(compromise_at_round=3, false_reading_offset=5.0), NODE_ID
    )
    values = np.array([20.0])

    before = simulation.distort(values)
    simulation.observe_round(3)
    after = simulation.distort(values)

    assert before[0] == 20.0
    assert after[0] == 25.0


def test_node_without_simulation_is_honest(node_config):
    node = EdgeNode(node_config)

    assert node._simulation is None


def test_done_when_model_arrives_without_training_rows(tmp_path, signer):
    data = base_config(tmp_path)
    data["devices"][0]["source"]["end_row"] = 10
    node, _ = make_offline_node(load_config(write_config(tmp_path, data)))
    feed_csv(node)
    pump(node, lambda: node._replays_running == 0)

    send(node, MODEL_TOPIC, signer.model(GlobalModel(version=1, params=PARAMS)))

    assert node.done.is_set()
    assert node.detector("temperature") is None


def message_types(link):
    return [envelope["type"] for envelope in link.envelopes()]


def state_changing_node(node_config):
    """Return an unconnected node with a detector, its device's monitor and a random generator."""
    node, link = make_offline_node(node_config, connected=False)
    feed_csv(node)
    pump(node, lambda: node.detector("temperature") is not None)
    return node, link, node._monitors["sensor-1"], np.random.default_rng(0)


def flip_state(node, monitor, rng):
    """Feed readings until the device's anomaly state has changed at least once."""
    before = monitor.anomaly
    level = 20.0 if before else 40.0
    for _ in range(500):
        node._dispatch(Sample("sensor-1", (level + rng.normal(0.0, 0.2),), 0.0))
        if monitor.anomaly != before:
            return
    raise AssertionError("the anomaly state did not change")


def test_no_state_before_first_connection(node_config):
    node, link, monitor, rng = state_changing_node(node_config)

    flip_state(node, monitor, rng)

    assert link.envelopes("state") == []


def test_heartbeat_first_after_connect(node_config):
    node, link, monitor, rng = state_changing_node(node_config)

    node._dispatch(Connected(1))
    flip_state(node, monitor, rng)

    types = message_types(link)
    assert types[0] == "heartbeat"
    assert types[1] == "state"
    assert types.count("state") >= 2
    heartbeat = protocol.parse_heartbeat(link.envelopes("heartbeat")[0]["body"])
    assert [device.device_id for device in heartbeat.devices] == ["sensor-1"]


def test_heartbeat_first_after_reconnect(node_config):
    node, link, monitor, rng = state_changing_node(node_config)
    node._dispatch(Connected(1))

    node._dispatch(Disconnected("connection lost"))
    link.published.clear()
    flip_state(node, monitor, rng)
    assert link.envelopes() == []

    link.connection = 2
    node._dispatch(Connected(2))
    flip_state(node, monitor, rng)

    types = message_types(link)
    assert types[0] == "heartbeat"
    assert "state" in types[1:]


def test_no_state_on_connection_without_heartbeat(node_config):
    node, link, monitor, rng = state_changing_node(node_config)
    node._dispatch(Connected(1))
    link.published.clear()

    # The link reconnected, and the node has not handled the new connection yet.
    link.connection = 2
    flip_state(node, monitor, rng)
    node._publish_heartbeat()

    assert link.envelopes() == []


def test_periodic_heartbeat_after_connect_heartbeat(node_config):
    node, link = make_offline_node(node_config, connected=False)
    before = time.monotonic()

    node._dispatch(Connected(1))

    interval = node_config.detection.heartbeat_interval
    assert message_types(link) == ["heartbeat", "state"]
    assert node._next_heartbeat >= before + interval


def short_buffer_node(tmp_path, end_row):
    data = base_config(tmp_path)
    data["devices"][0]["source"]["end_row"] = end_row
    node, link = make_offline_node(load_config(write_config(tmp_path, data)))
    feed_csv(node)
    pump(node, lambda: node._replays_running == 0)
    return node, link


def test_round_warns_once_about_short_buffer(tmp_path, signer, caplog):
    node, link = short_buffer_node(tmp_path, end_row=5)

    with caplog.at_level("WARNING"):
        send(node, ROUND_TOPIC, signer.round(1))
        send(node, ROUND_TOPIC, signer.round(2))

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"{NODE_ID}: round 1: kind temperature has 5 training rows, fewer than the 20 needed "
        "to train, so device sensor-1 (5 rows, train_rows = 200) does not take part"
    ]
    assert updates(link) == []


def test_round_does_not_warn_with_enough_rows(tmp_path, signer, caplog):
    node, link = short_buffer_node(tmp_path, end_row=30)

    with caplog.at_level("WARNING"):
        send(node, ROUND_TOPIC, signer.round(1))
        pump(node, lambda: updates(link))

    assert "needed to train" not in caplog.text


DEEP_PAYLOADS = [b'{"a":' * 50_000, b"[" * 5_000 + b"]" * 5_000]


def nested_envelope(depth):
    """Return a round envelope whose body nests ``depth`` lists deep."""
    inner = "[" * depth + "]" * depth
    return (
        '{"v":1,"type":"round","sender":"coordinator","counter":1,"ts":1,'
        f'"body":{{"x":{inner}}},"sig":"00"}}'
    ).encode()


@pytest.mark.parametrize("topic", [ROUND_TOPIC, MODEL_TOPIC, COMMAND_TOPIC])
@pytest.mark.parametrize("payload", DEEP_PAYLOADS, ids=["object", "list"])
def test_deeply_nested_downlink_rejected(node_config, caplog, topic, payload):
    node, _ = make_offline_node(node_config)

    with caplog.at_level("WARNING"):
        send(node, topic, payload)

    assert len(caplog.records) == 1
    assert (
        caplog.records[0]
        .getMessage()
        .startswith(f"{NODE_ID}: rejected message on {topic}: malformed: ")
    )
    assert caplog.records[0].exc_info is None


def test_downlink_nested_near_recursion_limit_rejected(node_config, caplog):
    node, _ = make_offline_node(node_config)

    # Depths around the recursion limit, where decoding may succeed and the
    # signature check then needs more depth than is left.
    with caplog.at_level("WARNING"):
        for depth in range(sys.getrecursionlimit() - 120, sys.getrecursionlimit() + 10):
            node._rejections = ThrottledLogger(logging.getLogger("fltrust_edge.agent"))
            caplog.clear()
            send(node, ROUND_TOPIC, nested_envelope(depth))

            assert len(caplog.records) == 1, depth
            assert caplog.records[0].exc_info is None
            assert f"rejected message on {ROUND_TOPIC}" in caplog.text


def test_deeply_nested_sensor_payload_skipped(tmp_path, caplog):
    node, _ = make_offline_node(zigbee_config(tmp_path))

    with caplog.at_level("WARNING"):
        send(node, "z2m/kitchen", b'{"a":' * 50_000)

    assert [r.getMessage() for r in caplog.records] == [
        "zigbee-1: skipped reading of temperature on z2m/kitchen: payload nests too deeply"
    ]
    assert node._monitors["zigbee-1"].n_train == 0


def test_failed_replay_logs_one_error(tmp_path, caplog):
    path = tmp_path / "series.csv"
    head = "timestamp,value,label\n2024-01-01 00:00:00,1.5,0\n"
    path.write_text(head)
    data = base_config(tmp_path, csv_path=path)
    node, _ = make_offline_node(load_config(write_config(tmp_path, data)))
    path.write_text(head + '2024-01-01 00:05:00,"' + "1" * 200_000 + '",0\n')

    with caplog.at_level("WARNING"):
        node._replay(node._replays[0])
        events = list(node._events.queue)
        for event in events:
            node._dispatch(event)

    assert [r.levelname for r in caplog.records] == ["ERROR"]
    message = caplog.records[0].getMessage()
    assert message.startswith("node-1: replay of sensor-1 stopped after 1 rows, ")
    assert f"{path} line 3: invalid CSV: field larger than field limit" in message
    assert caplog.records[0].exc_info is None
    ended = [event for event in events if isinstance(event, ReplayEnded)]
    assert len(ended) == 1
    assert ended[0].rows == 1
    assert ended[0].error.startswith(f"{path} line 3: ")
    assert len(node.errors) == 1


def test_replay_error_in_results(tmp_path):
    path = write_csv(tmp_path / "series.csv", n_rows=300)
    lines = path.read_text().splitlines(keepends=True)
    lines[250] = '"unterminated,1\n'
    data = base_config(tmp_path, csv_path=path)
    config = load_config(write_config(tmp_path, data))
    path.write_text("".join(lines))
    results = tmp_path / "results.json"
    node, _ = make_offline_node(config, results_path=results)

    node._replay(node._replays[0])
    pump(node, lambda: node._replays_running == 0)

    document = json.loads(results.read_text())
    error = document["devices"]["sensor-1"]["replay_error"]
    assert error == f"{path} line 251: invalid CSV: a quote opened here is never closed"
    assert node._monitors["sensor-1"].n_train + node._monitors["sensor-1"].n_test == 249
    assert node.errors == [f"replay of sensor-1 ended early: {error}"]


@pytest.mark.parametrize(
    ("due", "now", "expected"),
    [(100.0, 100.2, 110.0), (100.0, 109.9, 110.0), (100.0, 112.0, 122.0), (100.0, 135.0, 145.0)],
    ids=["on-time", "late-within-interval", "after-pause", "after-long-pause"],
)
def test_next_heartbeat_skips_missed_ones(due: float, now: float, expected: float) -> None:
    assert agent._next_heartbeat(due, now, 10.0) == expected


def test_uncounted_updates_warned(node_config, signer, caplog):
    node, link = replayed_node(node_config)

    def play_round(round_number: int, counted: bool) -> None:
        send(node, ROUND_TOPIC, signer.round(round_number))
        pump(node, lambda: len(updates(link)) >= round_number)
        model = global_model_from(updates(link)[-1], version=round_number)
        model.contributors = {node_config.node_id: 1.0} if counted else {"other-node": 1.0}
        send(node, MODEL_TOPIC, signer.model(model))
        pump(node, lambda: node.model_version == round_number)

    with caplog.at_level("INFO"):
        play_round(1, counted=False)
        play_round(2, counted=False)
        assert "did not count its updates" not in caplog.text
        play_round(3, counted=False)
        play_round(4, counted=False)
        play_round(5, counted=True)

    warnings = [r for r in caplog.records if "did not count its updates" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelname == "WARNING"
    assert "counts this node's update again" in caplog.text


def test_rounds_without_model_warned(node_config, signer, caplog):
    node, link = replayed_node(node_config)

    with caplog.at_level("WARNING"):
        for round_number in (1, 2, 3):
            send(node, ROUND_TOPIC, signer.round(round_number))
            pump(node, lambda expected=round_number: len(updates(link)) >= expected)
        assert "did not count its updates" not in caplog.text
        # The next announcement shows that round 3 closed without a model, as
        # rounds do when the coordinator rejects the node's key.
        send(node, ROUND_TOPIC, signer.round(4))

    warnings = [r for r in caplog.records if "did not count its updates" in r.getMessage()]
    assert len(warnings) == 1
    assert "revoked_key" in warnings[0].getMessage()


def test_silent_coordinator_warned(node_config, caplog, monkeypatch):
    node, _link = make_offline_node(node_config, connected=False)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    node._dispatch(Connected(1))
    interval = node_config.detection.heartbeat_interval

    with caplog.at_level("WARNING"):
        clock[0] += 3 * interval - 1
        node._check_coordinator_heard(clock[0], interval)
        assert "no round announcement or model" not in caplog.text
        clock[0] += 2
        node._check_coordinator_heard(clock[0], interval)
        node._check_coordinator_heard(clock[0] + 100, interval)

    warnings = [r for r in caplog.records if "no round announcement or model" in r.getMessage()]
    assert len(warnings) == 1
    assert f"{node_config.mqtt.prefix}/coordinator/" in warnings[0].getMessage()


def test_coordinator_heard_no_warning(node_config, signer, caplog, monkeypatch):
    node, _link = make_offline_node(node_config, connected=False)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    node._dispatch(Connected(1))
    send(node, MODEL_TOPIC, signer.model(GlobalModel(version=1, params=PARAMS)), retained=True)
    interval = node_config.detection.heartbeat_interval

    with caplog.at_level("WARNING"):
        node._check_coordinator_heard(clock[0] + 10 * interval, interval)

    assert "no round announcement or model" not in caplog.text
