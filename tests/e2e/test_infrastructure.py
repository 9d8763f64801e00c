"""The lab's building blocks against real processes: brokers, Home Assistant, edge nodes."""

from __future__ import annotations

import subprocess
import time
import tomllib
from pathlib import Path

from fltrust_core.security import generate_federation_key
from fltrust_lab import EDGE_BIN, LOOPBACK
from fltrust_lab.broker import Broker, start_broker
from fltrust_lab.datasets import nab_device, write_nab_slice
from fltrust_lab.mqtt_capture import MqttCapture
from fltrust_lab.nodes import DeviceSpec, EdgeNodeProcess, NodeSpec, dumps_toml, node_config
from fltrust_lab.process import free_port

from .conftest import HassSession


def check_pub_sub(broker: Broker, client_prefix: str) -> None:
    """Check wildcard subscriptions, QoS 1 delivery and retained messages on ``broker``.

    A bystander client subscribes to another branch while a retained message
    is published there, which must not reach the subscriber of ``lab/#``.
    """
    publisher = MqttCapture(broker.host, broker.port, "unused/#", client_id=f"{client_prefix}-pub")
    bystander = MqttCapture(broker.host, broker.port, "other/#", client_id=f"{client_prefix}-other")
    publisher.start()
    bystander.start()
    try:
        publisher.publish("lab/coordinator/model", b"retained model", retain=True)
        publisher.publish("other/coordinator/model", b"retained elsewhere", retain=True)
        subscriber = MqttCapture(
            broker.host, broker.port, "lab/#", client_id=f"{client_prefix}-sub"
        )
        subscriber.start()
        try:
            publisher.publish("lab/node/n1/update", b"update")
            publisher.publish("other/topic", b"outside the filter")
            subscriber.wait_for(lambda m: len(m) >= 2, timeout=10)
            bystander.wait_for(lambda m: len(m) >= 2, timeout=10)
            time.sleep(0.5)
            messages = subscriber.messages()
        finally:
            subscriber.stop()
    finally:
        bystander.stop()
        publisher.stop()

    by_topic = {m.topic: m for m in messages}
    assert set(by_topic) == {"lab/coordinator/model", "lab/node/n1/update"}
    assert by_topic["lab/coordinator/model"].payload == b"retained model"
    assert by_topic["lab/coordinator/model"].retain
    assert by_topic["lab/node/n1/update"].payload == b"update"
    assert not by_topic["lab/node/n1/update"].retain


def test_broker_wildcards_and_retained(broker: Broker) -> None:
    assert broker.host == LOOPBACK
    check_pub_sub(broker, "infra")


def test_embedded_broker_with_paho(run_dir: Path) -> None:
    broker = start_broker(run_dir / "embedded", kind="embedded")
    try:
        assert broker.mqtt_protocol == "3.1.1"
        check_pub_sub(broker, "embedded")
    finally:
        broker.stop()
    assert not broker.is_running()


def test_node_config_round_trip(run_dir: Path) -> None:
    device = DeviceSpec(
        device_id="office",
        kind="temperature",
        name="Office temperature",
        features=("temperature",),
        data=nab_device("ambient", 0, 3000),
        rows_per_second=50.0,
    )
    spec = NodeSpec(
        "round-trip",
        (device,),
        detection={"train_rows": 200},
        simulation={"compromise_at_round": 4, "poison": "sign_flip", "unknown_peers": 25},
    )
    config = node_config(
        spec,
        broker_host=LOOPBACK,
        broker_port=1,
        prefix="fltrust/test",
        federation_key=generate_federation_key(),
        state_dir=run_dir / "round-trip-state",
        heartbeat_interval=5.0,
    )
    path = run_dir / "round-trip.toml"
    path.write_text(dumps_toml(config))

    assert tomllib.loads(path.read_text()) == config
    checked = subprocess.run(
        [EDGE_BIN, "check-config", path], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_node_process_stops_on_sigterm(run_dir: Path) -> None:
    data = write_nab_slice("machine", run_dir / "stop-test.csv", 0, 500)
    spec = NodeSpec(
        "stop-test",
        (DeviceSpec("machine", "temperature", "Machine", ("temperature",), data, 10.0),),
    )
    node_dir = run_dir / "stop-test"
    # Nothing listens on this port, so the node keeps retrying its connection.
    config = node_config(
        spec,
        broker_host=LOOPBACK,
        broker_port=free_port(),
        prefix="fltrust/test",
        federation_key=generate_federation_key(),
        state_dir=node_dir / "state",
        heartbeat_interval=5.0,
    )
    node = EdgeNodeProcess(spec, "test", node_dir, config)
    node.start()
    time.sleep(3)
    assert node.is_running(), node.process.log_tail()

    status = node.stop(timeout=15)

    assert status == 0, node.process.log_tail()
    assert node.process.log_path.stat().st_size > 0


def test_hass_onboarded_with_mqtt_entry(home_assistant: HassSession) -> None:
    entries = home_assistant.run(home_assistant.client.config_entries("mqtt"))
    api = home_assistant.run(home_assistant.client.get("/api/"))
    config = home_assistant.run(home_assistant.client.get("/api/config"))

    assert [entry["state"] for entry in entries] == ["loaded"]
    assert entries[0]["entry_id"] == home_assistant.mqtt_entry["entry_id"]
    assert api == {"message": "API running."}
    assert config["state"] == "RUNNING"
    assert not config["recovery_mode"]


def test_hass_websocket_commands(home_assistant: HassSession) -> None:
    async def query() -> tuple[list, dict]:
        async with home_assistant.websocket() as websocket:
            registry = await websocket.entity_registry()
            config = await websocket.command("get_config")
            return registry, config

    registry, config = home_assistant.run(query())

    assert isinstance(registry, list)
    assert config["state"] == "RUNNING"
