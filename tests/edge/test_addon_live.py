"""The add-on's start-up path against a real Mosquitto broker that requires a login.

The options are converted by ``fltrust-edge addon-config`` with the broker
given as the MQTT service, as the add-on's run script does, and the node runs
from the written file as a ``fltrust-edge run`` process.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fltrust_core import protocol, security

from .addon_helpers import CLIMATE_TOPIC, HALLWAY_TOPIC, addon_options, write_options
from .conftest import MOSQUITTO, MOSQUITTO_PASSWD, PREFIX, Broker, CoordinatorClient, node_key

SERVICE_USER = "addons"
SERVICE_PASSWORD = "service-password-R5"
COORDINATOR_USER = "coordinator"
COORDINATOR_PASSWORD = "coordinator-password-T2"


@pytest.fixture
def login_broker(tmp_path):
    if not Path(MOSQUITTO).exists() or not Path(MOSQUITTO_PASSWD).exists():
        pytest.skip("mosquitto or mosquitto_passwd is not installed")
    users = {SERVICE_USER: SERVICE_PASSWORD, COORDINATOR_USER: COORDINATOR_PASSWORD}
    broker = Broker(tmp_path, users=users)
    broker.start()
    yield broker
    broker.stop()


def is_heartbeat_with_samples(topic, envelope):
    if envelope.get("type") != "heartbeat":
        return False
    return protocol.parse_heartbeat(envelope["body"]).samples > 0


def wait_for_readings(coordinator):
    """Publish sensor readings until a heartbeat counts them, and return that heartbeat.

    Readings published before the node subscribed are lost, so they are repeated.
    """
    mark = coordinator.mark()
    for _ in range(60):
        climate = json.dumps({"temperature": 21.5, "humidity": 48, "battery": 97})
        coordinator.publish(CLIMATE_TOPIC, climate.encode())
        coordinator.publish(HALLWAY_TOPIC, b"20.7")
        try:
            return coordinator.wait_for(is_heartbeat_with_samples, timeout=0.5, after=mark)[1]
        except AssertionError:
            continue
    raise AssertionError("no heartbeat counted the published readings within 30 s")


def test_converted_options_run_node(tmp_path, login_broker, signer):
    out = tmp_path / "fltrust-edge.toml"
    state_dir = tmp_path / "state"
    environment = {
        **os.environ,
        "FLTRUST_MQTT_HOST": "127.0.0.1",
        "FLTRUST_MQTT_PORT": str(login_broker.port),
        "FLTRUST_MQTT_USERNAME": SERVICE_USER,
        "FLTRUST_MQTT_PASSWORD": SERVICE_PASSWORD,
        "FLTRUST_MQTT_SSL": "false",
    }
    command = [sys.executable, "-m", "fltrust_edge.cli"]
    options_path = write_options(tmp_path, addon_options())
    paths = ["--options", str(options_path), "--out", str(out), "--state-dir", str(state_dir)]
    converted = subprocess.run(
        [*command, "addon-config", *paths],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert converted.returncode == 0, converted.stderr

    coordinator = CoordinatorClient(
        login_broker.port, signer, username=COORDINATOR_USER, password=COORDINATOR_PASSWORD
    )
    log_path = tmp_path / "node.log"
    try:
        assert coordinator.connected.wait(15)
        with log_path.open("w") as log:
            node = subprocess.Popen(
                [*command, "run", "--config", str(out), "--log-level", "DEBUG"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            # The node logged in with the service's account, or the broker would reject it.
            topic, heartbeat = coordinator.wait_for(lambda t, e: e.get("type") == "heartbeat")
            assert topic == protocol.node_topic(PREFIX, "node-1", "heartbeat")
            security.verify_hmac(node_key(), heartbeat)
            devices = protocol.parse_heartbeat(heartbeat["body"]).devices
            assert [(d.device_id, d.kind, d.name, d.features) for d in devices] == [
                ("kitchen-climate", "climate", "Kitchen climate", ("temperature", "humidity")),
                ("hallway-temperature", "temperature", "hallway-temperature", ("temperature",)),
            ]

            # Readings on the devices' topics reach the node.
            counted = wait_for_readings(coordinator)
            security.verify_hmac(node_key(), counted)
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(30)
    finally:
        coordinator.close()

    log_text = log_path.read_text()
    assert node.returncode == 0, log_text
    assert (state_dir / "state.json").is_file()
    for secret in (node_key().hex(), SERVICE_PASSWORD):
        assert secret not in log_text
        assert secret not in converted.stdout + converted.stderr
