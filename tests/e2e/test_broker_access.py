"""Quarantine cuts a node's broker account in a real Mosquitto, and release restores it.

Home Assistant logs in to the broker with the administrator account of its
dynamic-security plugin and creates an account for each of three edge nodes,
one of which turns compromised. The test checks that an account reaches only
its own node's topics, then the account state through the plugin itself and
the node's own log of refused and new connections.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fltrust_core.dynsec import node_client_id
from fltrust_core.security import generate_federation_key
from fltrust_lab.broker import Broker, BrokerAccount
from fltrust_lab.datasets import write_nab_slice
from fltrust_lab.dynsec_admin import DynsecAdmin
from fltrust_lab.hass import FederationSettings, create_federation_entry, create_node_account
from fltrust_lab.mqtt_capture import MqttCapture
from fltrust_lab.nodes import DeviceSpec, EdgeNodeProcess, NodeSpec
from fltrust_lab.scenario import COMPROMISE
from paho.mqtt.enums import CallbackAPIVersion

from .conftest import ROUND_INTERVAL, ROUND_TIMEOUT, HassSession, start_test_nodes

PREFIX = "fltrust/e2e-access"
ROGUE = "access-rogue"
# Slices of the NAB machine temperature series, apart from the other tests' slices.
# At 25 rows/s each replay lasts 120 s, longer than quarantine, release and reconnection.
NODE_SLICES = {"access-1": (6000, 9000), "access-2": (9000, 12000), ROGUE: (12000, 15000)}
ROWS_PER_SECOND = 25.0
TRAIN_ROWS = 100
COMPROMISE_ROUND = 3


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Return the first true value of ``condition()``, polling twice a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout:.0f} s")


@pytest.fixture
def admin(broker: Broker) -> Iterator[DynsecAdmin]:
    """The broker's dynamic-security administrator."""
    if broker.admin is None:
        pytest.skip("the broker runs without Mosquitto's dynamic-security plugin")
    with DynsecAdmin(broker) as admin:
        yield admin


def _node_specs(data_dir: Path, accounts: dict[str, BrokerAccount]) -> list[NodeSpec]:
    specs = []
    for node_id, (start, end) in NODE_SLICES.items():
        device = DeviceSpec(
            device_id="machine",
            kind="temperature",
            name="Machine temperature",
            features=("temperature",),
            data=write_nab_slice("machine", data_dir / f"{node_id}.csv", start, end),
            rows_per_second=ROWS_PER_SECOND,
        )
        simulation = None
        if node_id == ROGUE:
            simulation = {"compromise_at_round": COMPROMISE_ROUND, **COMPROMISE}
        specs.append(
            NodeSpec(
                node_id,
                (device,),
                detection={"train_rows": TRAIN_ROWS},
                simulation=simulation,
                broker_account=accounts[node_id],
            )
        )
    return specs


def _quarantined_entity(home_assistant: HassSession, entry_id: str) -> str | None:
    """Return the entity id of the rogue node's quarantine sensor once it is registered."""

    async def query() -> list[dict[str, Any]]:
        async with home_assistant.websocket() as websocket:
            return await websocket.entity_registry("fltrust")

    unique_id = f"{entry_id}_{ROGUE}_quarantined"
    for entity in home_assistant.run(query()):
        if entity["unique_id"] == unique_id:
            return entity["entity_id"]
    return None


def _quarantine_issue(home_assistant: HassSession, entry_id: str) -> dict[str, Any] | None:
    """Return the repair issue of the rogue node's quarantine, if Home Assistant lists one."""

    async def query() -> list[dict[str, Any]]:
        async with home_assistant.websocket() as websocket:
            return await websocket.repair_issues("fltrust")

    issue_id = f"node_quarantined_{entry_id}_{ROGUE}"
    for issue in home_assistant.run(query()):
        if issue["issue_id"] == issue_id:
            return issue
    return None


def _create_accounts(home_assistant: HassSession, entry_id: str) -> dict[str, BrokerAccount]:
    """Create each node's broker account through the integration's action."""
    return {
        node_id: home_assistant.run(create_node_account(home_assistant.client, entry_id, node_id))
        for node_id in NODE_SLICES
    }


def _check_confined(broker: Broker, account: BrokerAccount, other: str) -> None:
    """Check that ``account`` publishes under its own topics only and cannot read others'.

    The lab broker's default access allows everything, so only the role
    confines the account.
    """
    capture = MqttCapture(broker.host, broker.port, "#", client_id="access-capture")
    capture.start()
    granted: list[list[int]] = []
    connect_results: list[str] = []
    intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"access-intruder-{other}")
    intruder.username_pw_set(account.username, account.password)
    intruder.on_connect = lambda _c, _u, _f, code, _p: connect_results.append(str(code))
    probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_client_id(ROGUE))
    probe.username_pw_set(account.username, account.password)
    probe.on_subscribe = lambda _c, _u, _mid, codes, _p: granted.append([c.value for c in codes])
    filters = [
        f"{PREFIX}/coordinator/#",
        f"{PREFIX}/node/{other}/#",
        "#",
        "$SYS/#",
        "$share/group/#",
    ]
    try:
        # The account accepts only its node's client id.
        intruder.connect(broker.host, broker.port)
        intruder.loop_start()
        wait_for(lambda: connect_results, 10, "no answer to a connection with another client id")
        probe.connect(broker.host, broker.port)
        probe.loop_start()
        own = f"{PREFIX}/node/{ROGUE}/probe"
        for topic_filter in filters:
            probe.subscribe(topic_filter, qos=1)
        for topic in (
            f"{PREFIX}/node/{other}/update",
            f"{PREFIX}/coordinator/model",
            "homeassistant/lock/front_door/config",
        ):
            probe.publish(topic, b"forged", qos=1).wait_for_publish(10)
        probe.publish(own, b"own", qos=1).wait_for_publish(10)
        wait_for(lambda: capture.messages(lambda m: m.topic == own), 10, "own topic not delivered")
        wait_for(lambda: len(granted) == len(filters), 10, "no answer to the subscriptions")
    finally:
        for client in (intruder, probe):
            client.disconnect()
            client.loop_stop()
        capture.stop()

    # paho retries a refused connection in its loop, so the refusal may come more than once.
    assert connect_results
    assert set(connect_results) == {"Not authorized"}
    assert capture.messages(lambda m: m.payload == b"forged") == []
    # The broker refuses a subscription with a reason code of 0x80 or above.
    assert granted[0][0] < 0x80
    for topic_filter, codes in zip(filters[1:], granted[1:], strict=True):
        assert codes[0] >= 0x80, topic_filter


def _log_count(node: EdgeNodeProcess, text: str) -> int:
    return node.process.log_path.read_text(errors="replace").count(text)


def test_quarantine_cuts_broker_access(
    run_dir: Path,
    broker: Broker,
    home_assistant: HassSession,
    admin: DynsecAdmin,
) -> None:
    """Test a quarantined node is locked out of the broker until a release."""
    client = home_assistant.client
    settings = FederationSettings(
        name="e2e-access",
        topic_prefix=PREFIX,
        federation_key=generate_federation_key(),
        round_interval=ROUND_INTERVAL,
        round_timeout=ROUND_TIMEOUT,
        min_nodes=2,
    )
    entry = home_assistant.run(create_federation_entry(client, settings))
    entry_id = entry["entry_id"]
    home_assistant.run(
        client.run_options_flow(
            entry_id, [{"broker_access": True, "broker_username": "fltrust-{node_id}"}]
        )
    )
    accounts = _create_accounts(home_assistant, entry_id)
    assert {account.username for account in accounts.values()} == {
        f"fltrust-{node_id}" for node_id in NODE_SLICES
    }
    _check_confined(broker, accounts[ROGUE], "access-1")
    access_dir = run_dir / "broker-access"
    nodes = start_test_nodes(
        _node_specs(access_dir / "data", accounts), settings, access_dir, broker
    )
    rogue = next(node for node in nodes if node.node_id == ROGUE)
    try:
        entity_id = wait_for(
            lambda: _quarantined_entity(home_assistant, entry_id), 60, "no quarantine sensor"
        )
        wait_for(
            lambda: home_assistant.run(client.state(entity_id))["state"] == "on",
            120,
            f"{ROGUE} not quarantined",
        )
        wait_for(
            lambda: admin.is_disabled(accounts[ROGUE].username),
            15,
            f"account {accounts[ROGUE].username} not disabled",
        )
        wait_for(
            lambda: _log_count(rogue, "refused the connection: Not authorized"),
            30,
            f"{ROGUE} not refused by the broker",
        )

        for node_id in ("access-1", "access-2"):
            assert not admin.is_disabled(accounts[node_id].username), node_id
        connections = _log_count(rogue, f"{ROGUE}: connected to")
        joined = _log_count(rogue, f"{ROGUE}: joined round")

        # A person releases the node from its repair issue, as the Repairs page does.
        issue = wait_for(
            lambda: _quarantine_issue(home_assistant, entry_id), 15, "no quarantine repair issue"
        )
        assert issue["is_fixable"] is True
        assert issue["translation_placeholders"]["node_id"] == ROGUE
        home_assistant.run(client.run_repair_flow("fltrust", issue["issue_id"], [{}]))

        wait_for(
            lambda: not admin.is_disabled(accounts[ROGUE].username),
            15,
            f"account {accounts[ROGUE].username} still disabled after the release",
        )
        # The node's reconnection backoff grows to at most 60 s while it is locked out.
        wait_for(
            lambda: _log_count(rogue, f"{ROGUE}: connected to") > connections,
            75,
            f"{ROGUE} did not reconnect after the release",
        )
        # Offline at the release, the node finds the challenge that replaced the
        # retained release command, which releases it too.
        wait_for(
            lambda: _log_count(rogue, f"{ROGUE}: answered a reauthentication request") > 0,
            30,
            f"{ROGUE} did not answer its challenge after the release",
        )
        wait_for(
            lambda: _log_count(rogue, f"{ROGUE}: joined round") > joined,
            60,
            f"{ROGUE} did not take part in a round after the release",
        )
        assert f"{ROGUE}: released from quarantine" in rogue.process.log_path.read_text()
        assert "could not cut the broker access" not in home_assistant.log()
        assert _quarantine_issue(home_assistant, entry_id) is None
    finally:
        for node in nodes:
            node.stop()
