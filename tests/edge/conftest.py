"""Edge node fixtures: keys, configuration files, synthetic CSVs, a broker and a coordinator."""

from __future__ import annotations

import getpass
import itertools
import json
import math
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from fltrust_core import protocol, security
from fltrust_core.model import FederationParams, GlobalModel
from fltrust_edge.agent import EdgeNode, ReplayEnded
from fltrust_edge.config import NodeConfig, load_config
from fltrust_edge.link import Connected
from paho.mqtt.enums import CallbackAPIVersion

FEDERATION_KEY = bytes(range(32))
NODE_ID = "node-1"
PREFIX = "fltest"
PARAMS = FederationParams(seed=5, rff_components=16, rff_gamma=0.5, n_clusters=3, local_epochs=3)
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def node_key(node_id: str = NODE_ID) -> bytes:
    return security.derive_node_key(FEDERATION_KEY, node_id)


def coordinator_public_key() -> str:
    return security.public_key_hex(security.derive_coordinator_private_key(FEDERATION_KEY))


# Configuration files.


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(data: dict[str, Any], path: str = "") -> str:
    """Serialize nested dictionaries (tables) and lists of dictionaries (arrays of tables)."""
    lines = []
    nested = []
    for key, value in data.items():
        if isinstance(value, dict):
            nested.append((key, value, False))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            nested.append((key, value, True))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    for key, value, is_array in nested:
        full = f"{path}.{key}" if path else key
        items = value if is_array else [value]
        for item in items:
            header = f"[[{full}]]" if is_array else f"[{full}]"
            text += f"\n{header}\n" + to_toml(item, full)
    return text


def write_csv(
    path: Path,
    n_rows: int = 800,
    anomaly_rows: tuple[int, int] | None = (600, 680),
    seed: int = 0,
    delimiter: str = ",",
    with_label: bool = True,
) -> Path:
    """Write a 5-minute temperature series with a labelled level shift in ``anomaly_rows``."""
    rng = np.random.default_rng(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    header = ["timestamp", "value"] + (["label"] if with_label else [])
    lines = [delimiter.join(header)]
    for row in range(n_rows):
        value = 20.0 + 2.0 * math.sin(row / 30.0) + rng.normal(0.0, 0.2)
        label = 0
        if anomaly_rows is not None and anomaly_rows[0] <= row < anomaly_rows[1]:
            value += 8.0
            label = 1
        moment = (start + timedelta(minutes=5 * row)).strftime("%Y-%m-%d %H:%M:%S")
        cells = [moment, f"{value:.4f}"] + ([str(label)] if with_label else [])
        lines.append(delimiter.join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def base_config(tmp_path: Path, csv_path: Path | None = None, **overrides: Any) -> dict[str, Any]:
    """Return a valid configuration document with one CSV device."""
    csv_path = csv_path or write_csv(tmp_path / "series.csv")
    data: dict[str, Any] = {
        "node_id": NODE_ID,
        "mqtt": {"host": "127.0.0.1", "port": 1, "prefix": PREFIX},
        "security": {
            "node_key": node_key().hex(),
            "coordinator_public_key": coordinator_public_key(),
            "state_dir": str(tmp_path / "state"),
        },
        "detection": {
            "smoothing_window": 3,
            "long_window": 12,
            "train_rows": 200,
            "heartbeat_interval": 30.0,
            "target_fpr": 0.02,
        },
        "devices": [
            {
                "id": "sensor-1",
                "kind": "temperature",
                "name": "Test sensor",
                "features": ["temperature"],
                "source": {
                    "type": "csv",
                    "path": str(csv_path),
                    "timestamp_column": "timestamp",
                    "value_columns": ["value"],
                    "label_column": "label",
                    "rows_per_second": 2000.0,
                },
            }
        ],
    }
    for key, value in overrides.items():
        data[key] = value
    return data


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(to_toml(data))
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path, base_config(tmp_path))


@pytest.fixture
def node_config(config_file: Path) -> NodeConfig:
    return load_config(config_file)


# Coordinator messages.


class CoordinatorSigner:
    """Builds downlink messages signed the way the coordinator signs them."""

    def __init__(self, key: bytes = FEDERATION_KEY) -> None:
        self.private_key = security.derive_coordinator_private_key(key)
        self.counter = itertools.count(time.time_ns() // 1000)

    def envelope(
        self,
        message_type: str,
        body: dict[str, Any],
        counter: int | None = None,
        timestamp: float | None = None,
        sender: str = protocol.COORDINATOR_SENDER,
    ) -> dict[str, Any]:
        envelope = protocol.build_envelope(
            message_type,
            sender,
            next(self.counter) if counter is None else counter,
            body,
            time.time() if timestamp is None else timestamp,
        )
        envelope["sig"] = security.ed25519_signature(self.private_key, envelope)
        return envelope

    def payload(self, message_type: str, body: dict[str, Any], **kwargs: Any) -> bytes:
        return protocol.encode(self.envelope(message_type, body, **kwargs))

    def round(
        self,
        number: int,
        params: FederationParams = PARAMS,
        time_left: float = 60.0,
        timestamp: float | None = None,
        epoch: str = "",
        **kwargs: Any,
    ) -> bytes:
        """Return a round announcement due ``time_left`` seconds after its timestamp."""
        sent = time.time() if timestamp is None else timestamp
        body = protocol.round_body(
            protocol.RoundAnnouncement(
                round=number,
                deadline=sent + time_left,
                base_version=0,
                params=params,
                epoch=epoch,
            )
        )
        return self.payload("round", body, timestamp=sent, **kwargs)

    def model(self, model: GlobalModel, **kwargs: Any) -> bytes:
        return self.payload("model", model.to_json(), **kwargs)

    def command(self, action: str, nonce: str = "", node: str = NODE_ID, **kwargs: Any) -> bytes:
        body = protocol.command_body(protocol.Command(node_id=node, action=action, nonce=nonce))
        return self.payload("command", body, **kwargs)


@pytest.fixture
def signer() -> CoordinatorSigner:
    return CoordinatorSigner()


# A node driven from the test thread, with a link that records what it publishes.


class RecordingLink:
    """Stands in for MqttLink: records publishes instead of sending them.

    ``connection`` is the number of the link's current connection. A message
    bound to another connection is dropped, as MqttLink drops it.
    """

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, int]] = []
        self.connected = True
        self.connection = 1
        self._bytes = 0

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        connection: int | None = None,
    ) -> bool:
        if connection is not None and connection != self.connection:
            return False
        self.published.append((topic, payload, qos))
        self._bytes += len(payload)
        return True

    def take_published_bytes(self) -> int:
        published, self._bytes = self._bytes, 0
        return published

    def subscribe(self, topics: Any, qos: int = 1) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def envelopes(self, message_type: str | None = None) -> list[dict[str, Any]]:
        decoded = [json.loads(payload) for _, payload, _ in self.published]
        return [e for e in decoded if message_type is None or e["type"] == message_type]


def make_offline_node(
    config: NodeConfig, connected: bool = True, **kwargs: Any
) -> tuple[EdgeNode, RecordingLink]:
    """Return a node whose threads are not started and whose link records publishes.

    With ``connected`` the node has handled its first connection, and the
    heartbeat and states it published then are cleared from the record.
    """
    node = EdgeNode(config, **kwargs)
    link = RecordingLink()
    node._link = link
    if connected:
        node._dispatch(Connected(link.connection))
        link.published.clear()
        link.take_published_bytes()
    return node, link


def pump(node: EdgeNode, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Handle the node's queued events in this thread until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("condition not met before the timeout")
        try:
            event = node._events.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        node._dispatch(event)


def feed_csv(node: EdgeNode) -> None:
    """Handle every CSV row of the node in order, then the end-of-replay events.

    When a device's training buffer fills, the rows wait until the calibration
    job has delivered the kind's detector, as they would at a live pace.
    """
    for replay in node._replays:
        monitor = node._monitors[replay.device_id]
        kind = monitor.device.kind
        rows = 0
        for sample in replay.samples():
            node._dispatch(sample)
            rows += 1
            if monitor.n_train == monitor.train_rows and node.detector(kind) is None:
                pump(node, lambda kind=kind: node.detector(kind) is not None)
        node._events.put(ReplayEnded(replay.device_id, rows))


# A real broker.


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """A Mosquitto process on a loopback port.

    With ``users`` (user name to password), the broker rejects clients that
    do not log in with one of those accounts.
    """

    def __init__(self, directory: Path, users: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.config_path = directory / "mosquitto.conf"
        settings = f"listener {self.port} 127.0.0.1\n"
        if users:
            password_file = directory / "mosquitto.passwd"
            password_file.touch(mode=0o600)
            for user, password in users.items():
                subprocess.run(
                    [MOSQUITTO_PASSWD, "-b", str(password_file), user, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            settings += f"allow_anonymous false\npassword_file {password_file}\n"
            # Mosquitto started as root reads the password file after it switched
            # to the user "mosquitto", which cannot enter pytest's private folders.
            # A process started by another user keeps its user and ignores this.
            settings += f"user {getpass.getuser()}\n"
        else:
            settings += "allow_anonymous true\n"
        self.config_path.write_text(settings)
        self.log_path = directory / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [MOSQUITTO, "-c", str(self.config_path)], stdout=log, stderr=log
                )
            if self._wait_listening(deadline):
                return
            self.stop()
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {self.log_path.read_text()}")
            time.sleep(0.2)

    def _wait_listening(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


@pytest.fixture
def broker(tmp_path: Path):
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    broker = Broker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


class CoordinatorClient:
    """The test's side of the broker: records uplink messages and publishes signed downlink."""

    def __init__(
        self,
        port: int,
        signer: CoordinatorSigner,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.signer = signer
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._condition = threading.Condition()
        self.connected = threading.Event()
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="test-coordinator"
        )
        client.reconnect_delay_set(1, 2)
        if username is not None:
            client.username_pw_set(username, password)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *args: self.connected.clear()
        client.on_message = self._on_message
        client.connect_async("127.0.0.1", port, keepalive=10)
        client.loop_start()
        self.client = client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe(protocol.uplink_subscription(PREFIX), qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        try:
            envelope = json.loads(message.payload)
        except ValueError:
            return
        with self._condition:
            self.messages.append((message.topic, envelope))
            self._condition.notify_all()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def wait_for(
        self,
        predicate: Callable[[str, dict[str, Any]], bool],
        timeout: float = 30.0,
        after: int = 0,
    ) -> tuple[str, dict[str, Any]]:
        """Return the first message from index ``after`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for topic, envelope in self.messages[after:]:
                    if predicate(topic, envelope):
                        return topic, envelope
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    types = [envelope.get("type") for _, envelope in self.messages[after:]]
                    raise AssertionError(f"no matching message within {timeout} s; got {types}")
                self._condition.wait(remaining)

    def mark(self) -> int:
        with self._condition:
            return len(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
