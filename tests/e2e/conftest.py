"""Fixtures that run the real processes once per test session.

A Mosquitto broker (the embedded broker when Mosquitto is missing), a Home Assistant core
with the MQTT and fltrust config entries created through their config flows,
and three ``fltrust-edge`` processes that replay slices of the shipped NAB
machine temperature series. A paho client records every message below the
federation's topic prefix. ``FLTRUST_E2E_BROKER=embedded`` runs the suite on the
embedded broker instead of Mosquitto.

Home Assistant's pytest plugin is active in this suite because ``script/test``
runs it together with the integration tests. The plugin blocks sockets before
every test and fails a test that leaves a new thread behind, so every fixture
here enables loopback sockets first and creates its threads at session setup.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tools"))

from fltrust_core.security import generate_federation_key  # noqa: E402
from fltrust_lab import LOOPBACK  # noqa: E402
from fltrust_lab.aio import BackgroundLoop  # noqa: E402
from fltrust_lab.broker import Broker, start_broker  # noqa: E402
from fltrust_lab.datasets import DeviceData, write_nab_slice  # noqa: E402
from fltrust_lab.hass import (  # noqa: E402
    FederationSettings,
    HassClient,
    HassCredentials,
    HassWebSocket,
    HomeAssistantProcess,
    create_federation_entry,
)
from fltrust_lab.mqtt_capture import MqttCapture  # noqa: E402
from fltrust_lab.nodes import DeviceSpec, EdgeNodeProcess, NodeSpec, start_nodes  # noqa: E402
from fltrust_lab.process import free_port  # noqa: E402

PREFIX = "fltrust/e2e"
# Home Assistant's fltrust flow accepts round intervals of 5 s and more.
ROUND_INTERVAL = 5
ROUND_TIMEOUT = 3
MIN_ROUNDS = 3
HEARTBEAT_INTERVAL = 2.0
# Each node replays 2,000 rows at 25 rows/s (80 s), long enough for every test.
NODE_SLICES = {
    "e2e-node-1": (0, 2000),
    "e2e-node-2": (2000, 4000),
    "e2e-node-3": (4000, 6000),
}
ROWS_PER_SECOND = 25.0
TRAIN_ROWS = 100


def allow_loopback_sockets() -> None:
    """Undo pytest-socket's block, which Home Assistant's pytest plugin sets before each test.

    Connections stay limited to 127.0.0.1 by the plugin's host allow list.
    """
    try:
        import pytest_socket
    except ImportError:
        return
    pytest_socket.enable_socket()


@pytest.fixture(autouse=True)
def _loopback_sockets() -> None:
    """Let every test in this folder open sockets to 127.0.0.1."""
    allow_loopback_sockets()


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder for the configurations, data and logs of this session's processes."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def aio() -> Iterator[BackgroundLoop]:
    """Event loop thread on which the async Home Assistant clients run."""
    loop = BackgroundLoop()
    loop.start()
    yield loop
    loop.stop()


@pytest.fixture(scope="session")
def broker(run_dir: Path) -> Iterator[Broker]:
    """MQTT broker on a free loopback port, with dynamic security when it is Mosquitto."""
    allow_loopback_sockets()
    broker = start_broker(
        run_dir / "broker", kind=os.environ.get("FLTRUST_E2E_BROKER", "auto"), dynsec=None
    )
    yield broker
    broker.stop()


@dataclass
class HassSession:
    """The running Home Assistant, its owner account and REST client."""

    process: HomeAssistantProcess
    credentials: HassCredentials
    client: HassClient
    mqtt_entry: dict
    aio: BackgroundLoop
    # ERROR and CRITICAL records logged until the MQTT entry was created.
    startup_errors: list[str]

    def run(self, coroutine, timeout: float = 60.0):
        """Run a coroutine on the session's event loop thread."""
        return self.aio.run(coroutine, timeout)

    def websocket(self) -> HassWebSocket:
        """Return a new, not yet connected websocket client."""
        return HassWebSocket(self.process.base_url, self.credentials.access_token)

    def log(self) -> str:
        """Return Home Assistant's log so far."""
        return self.process.read_log()


@pytest.fixture(scope="session")
def home_assistant(run_dir: Path, broker: Broker, aio: BackgroundLoop) -> Iterator[HassSession]:
    """Home Assistant, onboarded, with the MQTT integration set up through its flow."""
    allow_loopback_sockets()
    process = HomeAssistantProcess(
        run_dir / "hass" / "config", free_port(), run_dir / "hass" / "hass.log"
    )
    process.start()
    client: HassClient | None = None
    try:
        aio.run(process.wait_for_api(), timeout=300)
        credentials = aio.run(process.onboard(), timeout=60)

        async def make_client() -> HassClient:
            return HassClient(process.base_url, credentials.access_token)

        client = aio.run(make_client())
        aio.run(process.wait_until_running(client), timeout=180)
        mqtt_entry = aio.run(
            client.create_mqtt_entry(
                broker.host, broker.port, broker.mqtt_protocol, account=broker.admin
            )
        )
        startup_errors = process.error_records()
        yield HassSession(process, credentials, client, mqtt_entry, aio, startup_errors)
    finally:
        if client is not None:
            aio.run(client.close())
        process.stop()


@dataclass
class FederationRun:
    """A federation with real nodes that completed at least ``MIN_ROUNDS`` rounds."""

    entry: dict
    settings: FederationSettings
    nodes: list[EdgeNodeProcess]
    capture: MqttCapture
    broker: Broker

    @property
    def entry_id(self) -> str:
        """Config entry id of the federation."""
        return self.entry["entry_id"]


def _node_specs(data_dir: Path) -> list[NodeSpec]:
    specs = []
    for node_id, (start, end) in NODE_SLICES.items():
        data: DeviceData = write_nab_slice("machine", data_dir / f"{node_id}.csv", start, end)
        device = DeviceSpec(
            device_id="machine",
            kind="temperature",
            name="Machine temperature",
            features=("temperature",),
            data=data,
            rows_per_second=ROWS_PER_SECOND,
        )
        specs.append(NodeSpec(node_id, (device,), detection={"train_rows": TRAIN_ROWS}))
    return specs


def start_test_nodes(
    specs: list[NodeSpec], settings: FederationSettings, run_dir: Path, broker: Broker
) -> list[EdgeNodeProcess]:
    """Start edge node processes of a test federation, with the tests' heartbeat and timeout."""
    return start_nodes(
        specs,
        federation=settings.name,
        run_dir=run_dir,
        broker_host=LOOPBACK,
        broker_port=broker.port,
        prefix=settings.topic_prefix,
        federation_key=settings.federation_key,
        heartbeat_interval=HEARTBEAT_INTERVAL,
        wait_timeout=30.0,
    )


def _global_model_rounds(capture: MqttCapture) -> set[int]:
    rounds = set()
    for message in capture.messages(lambda m: m.topic == f"{PREFIX}/coordinator/model"):
        try:
            body = message.json()["body"]
        except (ValueError, KeyError, TypeError):
            continue
        # Version 0 is the empty model the coordinator publishes before any round.
        if body.get("version", 0) > 0:
            rounds.add(int(body["round"]))
    return rounds


def _update_senders(capture: MqttCapture) -> set[str]:
    """Return the ids of the nodes that published an update."""
    prefix = f"{PREFIX}/node/"
    return {
        message.topic.removeprefix(prefix).removesuffix("/update")
        for message in capture.messages(
            lambda m: m.topic.startswith(prefix) and m.topic.endswith("/update")
        )
    }


@pytest.fixture(scope="session")
def federation(
    run_dir: Path, broker: Broker, home_assistant: HassSession
) -> Iterator[FederationRun]:
    """An fltrust federation with three edge nodes, after ``MIN_ROUNDS`` global models.

    It also waits until every node has sent an update: a node joins a round only
    once its training buffer is full, which on a busy machine can take more than
    ``MIN_ROUNDS`` rounds.
    """
    allow_loopback_sockets()
    settings = FederationSettings(
        name="e2e",
        topic_prefix=PREFIX,
        federation_key=generate_federation_key(),
        round_interval=ROUND_INTERVAL,
        round_timeout=ROUND_TIMEOUT,
        min_nodes=2,
    )
    entry = home_assistant.run(create_federation_entry(home_assistant.client, settings))
    capture = MqttCapture(broker.host, broker.port, f"{PREFIX}/#", client_id="e2e-capture")
    capture.start()
    nodes: list[EdgeNodeProcess] = []
    try:
        nodes = start_test_nodes(_node_specs(run_dir / "data"), settings, run_dir, broker)
        deadline = time.monotonic() + 150
        senders = set(NODE_SLICES)
        while (
            len(_global_model_rounds(capture)) < MIN_ROUNDS or _update_senders(capture) != senders
        ):
            stopped = [n.node_id for n in nodes if not n.is_running()]
            if stopped:
                details = "\n".join(f"--- {n.node_id}\n{n.process.log_tail(15)}" for n in nodes)
                pytest.fail(f"edge nodes {stopped} exited before {MIN_ROUNDS} rounds:\n{details}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"only {len(_global_model_rounds(capture))} global models and updates from "
                    f"{sorted(_update_senders(capture))} within 150 s. "
                    f"Home Assistant log: {home_assistant.process.log_path}, run folder: {run_dir}"
                )
            time.sleep(0.5)
        yield FederationRun(entry, settings, nodes, capture, broker)
    finally:
        for node in nodes:
            node.stop()
        capture.stop()
        capture.save(run_dir / "mqtt-capture.jsonl")
