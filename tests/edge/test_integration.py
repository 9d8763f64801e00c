"""End-to-end test of a node against a real Mosquitto broker on a loopback port."""

import queue
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from fltrust_core import protocol, security
from fltrust_core.model import FeatureStats, GlobalModel
from fltrust_edge.agent import EdgeNode
from fltrust_edge.config import MqttConfig, load_config
from fltrust_edge.link import Connected, Disconnected, MqttLink
from paho.mqtt.enums import CallbackAPIVersion

from .conftest import (
    MOSQUITTO,
    NODE_ID,
    PARAMS,
    PREFIX,
    Broker,
    CoordinatorClient,
    base_config,
    free_port,
    node_key,
    write_config,
    write_csv,
)


def of_type(message_type):
    def predicate(topic, envelope):
        return envelope.get("type") == message_type

    return predicate


def verified(envelope):
    security.verify_hmac(node_key(), envelope)
    return envelope


@pytest.fixture
def live_config(tmp_path, broker):
    csv_path = write_csv(tmp_path / "series.csv", n_rows=2400, anomaly_rows=(2000, 2100))
    data = base_config(tmp_path, csv_path=csv_path)
    data["mqtt"]["port"] = broker.port
    data["detection"]["heartbeat_interval"] = 1.0
    data["devices"][0]["source"]["rows_per_second"] = 300.0
    return load_config(write_config(tmp_path, data))


def test_node_against_mosquitto(tmp_path, broker, live_config, signer):
    coordinator = CoordinatorClient(broker.port, signer)
    assert coordinator.connected.wait(15)
    results = tmp_path / "results.json"
    node = EdgeNode(live_config, results_path=results, done_timeout=60.0)
    node.start()
    try:
        # A heartbeat and a device state arrive, signed.
        _, heartbeat = coordinator.wait_for(of_type("heartbeat"))
        body = protocol.parse_heartbeat(verified(heartbeat)["body"])
        assert body.devices[0].device_id == "sensor-1"
        assert body.peers_known >= 1

        # Once the training buffer is full the node scores, so states carry a threshold.
        _, state = coordinator.wait_for(
            lambda topic, e: e.get("type") == "state" and e["body"]["threshold"] != 0.0
        )
        assert protocol.parse_state(verified(state)["body"]).device_id == "sensor-1"

        # A signed round announcement yields a verified update.
        coordinator.publish(protocol.round_topic(PREFIX), signer.round(1))
        topic, update_envelope = coordinator.wait_for(of_type("update"))
        assert topic == protocol.node_topic(PREFIX, NODE_ID, "update")
        update = protocol.parse_update(verified(update_envelope)["body"], PARAMS, {})
        assert update.round == 1
        assert update.kinds["temperature"].n_samples == 200

        # The node adopts a retained global model and reports its version.
        model = GlobalModel(version=1, round=1, params=PARAMS, kinds=update.kinds)
        coordinator.publish(protocol.model_topic(PREFIX), signer.model(model), retain=True)
        coordinator.wait_for(
            lambda topic, e: e.get("type") == "heartbeat" and e["body"]["model_version"] == 1
        )

        # The broker restarts; the node reconnects, resubscribes and keeps publishing.
        broker.stop()
        broker.start()
        assert coordinator.connected.wait(30)
        mark = coordinator.mark()
        coordinator.wait_for(of_type("heartbeat"), after=mark)
        coordinator.publish(protocol.round_topic(PREFIX), signer.round(2))
        _, second = coordinator.wait_for(of_type("update"), after=mark)
        assert protocol.parse_update(verified(second)["body"], PARAMS, {}).round == 2
        assert node.connected

        # After the replay ends, one more global model completes the run.
        deadline = time.monotonic() + 60
        while not results.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert results.exists()
        second_update = protocol.parse_update(second["body"], PARAMS, {})
        final = GlobalModel(version=2, round=2, params=PARAMS, kinds=second_update.kinds)
        coordinator.publish(protocol.model_topic(PREFIX), signer.model(final), retain=True)
        assert node.done.wait(30)
        assert node.model_version == 2
    finally:
        node.stop()
        coordinator.close()


def test_node_started_before_broker(tmp_path, signer):
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    broker = Broker(tmp_path)
    data = base_config(tmp_path)
    data["mqtt"]["port"] = broker.port
    data["detection"]["heartbeat_interval"] = 1.0
    data["devices"][0]["source"]["rows_per_second"] = 50.0
    node = EdgeNode(load_config(write_config(tmp_path, data)))
    node.start()
    coordinator = None
    try:
        # paho retries the first connection in the background until the broker is up.
        time.sleep(0.5)
        assert not node.connected
        broker.start()
        coordinator = CoordinatorClient(broker.port, signer)
        assert coordinator.connected.wait(15)

        _, heartbeat = coordinator.wait_for(of_type("heartbeat"))

        assert verified(heartbeat)["sender"] == NODE_ID
        assert node.connected
    finally:
        node.stop()
        if coordinator is not None:
            coordinator.close()
        broker.stop()


def take_over_client_id(port, client_id):
    """Connect with another client's id, which makes the broker close that client's connection."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop(timeout=1.0)
    client.disconnect()


def wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the timeout"
        time.sleep(0.05)


def node_message_types(coordinator, start, end=None):
    with coordinator._condition:
        messages = coordinator.messages[start:end]
    return [envelope["type"] for _, envelope in messages if envelope.get("sender") == NODE_ID]


def test_heartbeat_precedes_states_on_every_connection(tmp_path, broker, signer):
    csv_path = write_csv(tmp_path / "series.csv", n_rows=2400, anomaly_rows=(2000, 2100))
    data = base_config(tmp_path, csv_path=csv_path)
    data["mqtt"]["port"] = broker.port
    # Only the heartbeats that follow a connection fall within the test.
    data["detection"]["heartbeat_interval"] = 3600.0
    data["devices"][0]["source"]["rows_per_second"] = 300.0
    config = load_config(write_config(tmp_path, data))
    coordinator = CoordinatorClient(broker.port, signer)
    assert coordinator.connected.wait(15)
    node = EdgeNode(config)
    node.start()
    try:
        coordinator.wait_for(of_type("state"))
        take_over_client_id(broker.port, config.mqtt.client_id)
        wait_until(lambda: not node.connected)
        # Messages of the first connection still on their way arrive before the mark.
        time.sleep(0.3)
        mark = coordinator.mark()
        wait_until(lambda: node.connected)
        coordinator.wait_for(of_type("state"), after=mark)

        first_connection = node_message_types(coordinator, 0, mark)
        second_connection = node_message_types(coordinator, mark)
        assert first_connection[0] == "heartbeat"
        assert "state" in first_connection
        assert second_connection[0] == "heartbeat"
        assert "state" in second_connection
    finally:
        node.stop()
        coordinator.close()


def test_link_drops_message_bound_to_closed_connection(broker):
    events = queue.Queue()
    link = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port, client_id="link-1"), events, "n")
    link.start()
    try:
        first = events.get(timeout=15)
        assert first == Connected(1)
        assert link.publish("fltest/x", b"1", connection=1)

        take_over_client_id(broker.port, "link-1")
        assert isinstance(events.get(timeout=15), Disconnected)
        second = events.get(timeout=15)

        assert second == Connected(2)
        assert not link.publish("fltest/x", b"1", connection=1)
        assert link.publish("fltest/x", b"1", connection=2)
        with pytest.raises(ValueError, match="only QoS 0"):
            link.publish("fltest/x", b"1", qos=1, connection=2)
    finally:
        link.stop()


def test_link_logs_why_broker_unreachable(caplog):
    port = free_port()
    link = MqttLink(MqttConfig(host="127.0.0.1", port=port, client_id="link-2"), queue.Queue(), "n")

    with caplog.at_level("WARNING", logger="fltrust_edge.link"):
        link.start()
        try:
            wait_until(lambda: "cannot reach" in caplog.text, timeout=15)
        finally:
            link.stop()

    assert f"n: cannot reach MQTT broker 127.0.0.1:{port}: Connection refused; retrying" in (
        caplog.text
    )


def shifted(stats: FeatureStats, shift: np.ndarray) -> FeatureStats:
    """Return ``stats`` of the same data moved by ``shift`` per feature."""
    return FeatureStats(
        count=stats.count,
        total=stats.total + stats.count * shift,
        total_sq=stats.total_sq + 2 * shift * stats.total + stats.count * shift**2,
    )


def adopted(coordinator, signer, model: GlobalModel) -> None:
    """Publish ``model`` retained and wait until the node reports its version."""
    coordinator.publish(protocol.model_topic(PREFIX), signer.model(model), retain=True)
    coordinator.wait_for(
        lambda topic, e: (
            e.get("type") == "heartbeat" and e["body"]["model_version"] == model.version
        )
    )


def sent_for_round(coordinator, signer, number: int) -> protocol.ModelUpdate:
    """Announce round ``number`` and return the node's verified update for it."""
    mark = coordinator.mark()
    coordinator.publish(protocol.round_topic(PREFIX), signer.round(number))
    _, envelope = coordinator.wait_for(of_type("update"), after=mark)
    return protocol.parse_update(verified(envelope)["body"], PARAMS, {})


def test_node_with_atypical_data_trains_a_regime(tmp_path, broker, signer):
    csv_path = write_csv(tmp_path / "series.csv", n_rows=6000, anomaly_rows=(5000, 5100))
    data = base_config(tmp_path, csv_path=csv_path)
    data["mqtt"]["port"] = broker.port
    data["detection"]["heartbeat_interval"] = 1.0
    data["devices"][0]["source"]["rows_per_second"] = 200.0
    coordinator = CoordinatorClient(broker.port, signer)
    assert coordinator.connected.wait(15)
    node = EdgeNode(load_config(write_config(tmp_path, data)), done_timeout=60.0)
    node.start()
    try:
        coordinator.wait_for(
            lambda topic, e: e.get("type") == "state" and e["body"]["threshold"] != 0.0
        )
        own = sent_for_round(coordinator, signer, 1).kinds["temperature"]

        # The kind's model describes data 1000 standard deviations away, so
        # this node's data is atypical of it and starts the kind's first regime.
        far = replace(own, stats=shifted(own.stats, 1000 * own.stats.std))
        adopted(
            coordinator,
            signer,
            GlobalModel(
                version=1,
                round=1,
                params=PARAMS,
                kinds={"temperature": far},
                max_regimes=protocol.MAX_REGIMES,
            ),
        )
        update = sent_for_round(coordinator, signer, 2)
        assert set(update.kinds) == {"temperature.1"}

        # With the regime in the model, the node trains from it and keeps sending for it.
        kinds = {"temperature": far, "temperature.1": update.kinds["temperature.1"]}
        adopted(
            coordinator,
            signer,
            GlobalModel(
                version=2, round=2, params=PARAMS, kinds=kinds, max_regimes=protocol.MAX_REGIMES
            ),
        )
        update = sent_for_round(coordinator, signer, 3)
        assert set(update.kinds) == {"temperature.1"}
        assert update.kinds["temperature.1"].stats.mean == pytest.approx(own.stats.mean, rel=0.2)
    finally:
        node.stop()
        coordinator.close()
