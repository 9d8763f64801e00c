"""The lab's building blocks against real processes: brokers, Home Assistant, edge nodes."""

from __future__ import annotations

import asyncio
import json
import secrets
import stat
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from fltrust_core.security import generate_federation_key
from fltrust_lab import EDGE_BIN, LOOPBACK
from fltrust_lab.broker import Broker, BrokerAccount, BrokerError, start_broker
from fltrust_lab.datasets import nab_device, write_nab_slice
from fltrust_lab.dynsec_admin import DynsecAdmin
from fltrust_lab.hass import (
    FLTRUST_LOGGER,
    HassError,
    HomeAssistantProcess,
    find_error_records,
)
from fltrust_lab.hass_config import write_config
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


def test_dynsec_needs_mosquitto(run_dir: Path) -> None:
    with pytest.raises(BrokerError, match="needs Mosquitto"):
        start_broker(run_dir / "embedded-dynsec", kind="embedded", dynsec=True)


def test_dynsec_admin_disables_account(broker: Broker) -> None:
    if broker.admin is None:
        pytest.skip("the broker runs without Mosquitto's dynamic-security plugin")
    account = BrokerAccount(f"infra-{secrets.token_hex(4)}", secrets.token_urlsafe(12))

    with DynsecAdmin(broker) as admin:
        admin.create_client(account)
        assert not admin.is_disabled(account.username)
        admin.command("disableClient", username=account.username)
        assert admin.is_disabled(account.username)
        with pytest.raises(BrokerError, match="Client not found"):
            admin.command("disableClient", username="infra-nobody")
    # Anonymous clients keep full access next to the accounts.
    check_pub_sub(broker, "dynsec")


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


def listening_addresses(port: int) -> set[str]:
    """Return the local addresses that listen on TCP ``port``, in /proc/net/tcp's hex notation."""
    addresses = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            # State 0A is LISTEN.
            if fields[3] == "0A" and int(port_hex, 16) == port:
                addresses.add(address)
    return addresses


def test_write_config_http_storage(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    storage = config_dir / ".storage" / "http"
    storage.parent.mkdir(parents=True)
    storage.write_text('{"stale": true}')

    write_config(config_dir, 18123, frontend=False, integration_dir=tmp_path / "missing")

    yaml_lines = (config_dir / "configuration.yaml").read_text().splitlines()
    document = json.loads(storage.read_text())
    stable = document["data"]["stable"]
    assert not any(line.startswith("http:") for line in yaml_lines)
    assert "api:" in yaml_lines
    assert document["key"] == "http"
    assert document["version"] == 2
    assert document["minor_version"] == 2
    assert document["data"]["pending"] is None
    assert document["data"]["yaml_migration_done"] is True
    assert stable["server_host"] == [LOOPBACK]
    assert stable["server_port"] == 18123
    assert stable["error"] is None
    assert stat.S_IMODE(storage.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("2026-12-04 21:13:46.897 ERROR (MainThread) [homeassistant.setup] Setup failed", True),
        ("2026-12-04 21:13:46.897 CRITICAL (MainThread) [homeassistant.core] Stopping", True),
        ("2026-12-04 21:13:46.897 WARNING (MainThread) [homeassistant.loader] Untested", False),
        (f"2026-12-04 21:13:46.897 ERROR (MainThread) [{FLTRUST_LOGGER}] Rejected", False),
        (f"2026-12-04 21:13:46.897 ERROR (MainThread) [{FLTRUST_LOGGER}.coordinator] x", False),
        (f"2026-12-04 21:13:46.897 ERROR (MainThread) [{FLTRUST_LOGGER}_other] x", True),
        ("ModuleNotFoundError: No module named 'pymicro_vad' ERROR", False),
    ],
)
def test_find_error_records(line: str, found: bool) -> None:
    log = f"2026-12-04 21:13:46.000 INFO (MainThread) [homeassistant.setup] Setting up x\n{line}\n"

    records = find_error_records(log, ignore_loggers=(FLTRUST_LOGGER,))

    assert records == ([line] if found else [])


def test_hass_http_config_stable(home_assistant: HassSession) -> None:
    process = home_assistant.process

    async def query() -> dict:
        async with home_assistant.websocket() as websocket:
            return await websocket.command("http/config")

    config = home_assistant.run(query())
    stored = json.loads((process.config_dir / ".storage" / "http").read_text())["data"]

    # Any pending slot would be tried for five minutes, then reverted with a restart.
    assert config["active_config_type"] == "stable"
    assert config["pending"] is None
    assert config["revert_at"] is None
    assert config["stable"]["server_host"] == [LOOPBACK]
    assert config["stable"]["server_port"] == process.port
    # The stored slot has every key of Home Assistant's default config.
    assert set(config["default"]) <= set(config["stable"])
    assert stored["pending"] is None
    assert stored["stable"]["server_host"] == [LOOPBACK]
    assert stored["stable"]["server_port"] == process.port


def test_check_http_config_passes(home_assistant: HassSession) -> None:
    async def check() -> dict:
        async with home_assistant.websocket() as websocket:
            return await home_assistant.process.check_http_config(websocket)

    config = home_assistant.run(check())

    assert config["active_config_type"] == "stable"


class PendingHttpConfigWebSocket:
    """Stand-in websocket whose ``http/config`` result is a server on trial of a pending slot."""

    async def command(self, command_type: str) -> dict:
        assert command_type == "http/config"
        pending = {"server_host": [LOOPBACK], "server_port": 18123}
        return {
            "stable": {"server_port": 8123},
            "pending": pending,
            "revert_at": "2026-12-04T21:41:22+00:00",
            "active_config_type": "pending",
        }


def test_check_http_config_rejects_pending(tmp_path: Path) -> None:
    process = HomeAssistantProcess(tmp_path / "config", 18123, tmp_path / "hass.log")

    with pytest.raises(HassError) as raised:
        asyncio.run(process.check_http_config(PendingHttpConfigWebSocket()))

    message = str(raised.value)
    assert "runs on the 'pending' slot" in message
    assert "a pending config is stored" in message
    assert "scheduled at 2026-12-04T21:41:22+00:00" in message
    assert "'server_host': None" in message
    assert str(tmp_path / "config" / ".storage" / "http") in message


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_hass_listens_on_loopback_only(home_assistant: HassSession) -> None:
    # 0100007F is 127.0.0.1 as /proc/net/tcp writes it.
    assert listening_addresses(home_assistant.process.port) == {"0100007F"}


def test_hass_log_without_errors(home_assistant: HassSession) -> None:
    errors_so_far = home_assistant.process.error_records()

    assert home_assistant.startup_errors == [], "\n".join(home_assistant.startup_errors)
    assert errors_so_far == [], "\n".join(errors_so_far)


def test_hass_services_api(home_assistant: HassSession) -> None:
    services = home_assistant.run(home_assistant.client.get("/api/services"))

    domains = {entry["domain"] for entry in services}
    assert "homeassistant" in domains
    assert "mqtt" in domains
