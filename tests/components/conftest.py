"""Fixtures for the fltrust integration: a config entry, a set-up federation and edge nodes.

Edge nodes are simulated by ``EdgeNode``, which signs uplink messages exactly
like the edge agent and fires them into Home Assistant's mocked MQTT client.
Time is frozen with ``freezer``; tests move it with ``freezer.tick`` and
``async_fire_time_changed``, and every message carries the frozen time.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from typing import Any
from unittest.mock import MagicMock, PropertyMock, patch

# Importing Home Assistant installs Probatio under the name ``voluptuous``, so it
# must come before any import of voluptuous. The harness's pytest plugin already
# imports it first; this import keeps the order when the file is imported alone.
import homeassistant  # noqa: F401
import numpy as np
import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_mqtt_message,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension
from syrupy.assertion import SnapshotAssertion

from custom_components.fltrust.const import (
    CONF_FEDERATION_KEY,
    CONF_MIN_NODES,
    CONF_QUARANTINE_THRESHOLD,
    CONF_REAUTH_THRESHOLD,
    CONF_ROUND_INTERVAL,
    CONF_ROUND_TIMEOUT,
    CONF_TOPIC_PREFIX,
    DOMAIN,
)
from custom_components.fltrust.coordinator import settings_from_entry
from custom_components.fltrust.core import protocol, security
from custom_components.fltrust.core.federation import Federation
from custom_components.fltrust.core.model import FeatureStats, FederationParams, KindModel
from custom_components.fltrust.core.trust import TrustStatus

FEDERATION_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
PREFIX = "fltrust"
ENTRY_ID = "01JFLTRUSTTESTENTRY0000000"
ROUND_INTERVAL = 60
ROUND_TIMEOUT = 30
FROZEN_TIME = "2026-12-04T12:00:00+00:00"
PARAMS = FederationParams()
N_FEATURES = 2


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load the integration from custom_components."""


@pytest.fixture
def entity_registry_enabled_by_default() -> Generator[None]:
    """Register every entity enabled, including those disabled by default."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        new_callable=PropertyMock,
        return_value=True,
    ):
        yield


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Return syrupy's snapshot with Home Assistant's serializer, which hides random ids.

    The harness's plugin defines the same fixture, but syrupy's own plugin
    fixture of that name takes precedence over it, so the conftest sets it again.
    """
    return snapshot.use_extension(HomeAssistantSnapshotExtension)


@pytest.fixture
def entry_data() -> dict[str, Any]:
    """Return the data of the test federation's config entry: what identifies it."""
    return {CONF_TOPIC_PREFIX: PREFIX, CONF_FEDERATION_KEY: FEDERATION_KEY}


@pytest.fixture
def entry_options() -> dict[str, Any]:
    """Return the options of the test federation's config entry: its round and trust settings."""
    return {
        CONF_ROUND_INTERVAL: ROUND_INTERVAL,
        CONF_ROUND_TIMEOUT: ROUND_TIMEOUT,
        CONF_MIN_NODES: 2,
        CONF_REAUTH_THRESHOLD: 60.0,
        CONF_QUARANTINE_THRESHOLD: 30.0,
    }


@pytest.fixture
def mock_config_entry(entry_data: dict[str, Any], entry_options: dict[str, Any]) -> MockConfigEntry:
    """Return the config entry of the test federation, not yet added to Home Assistant."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="Test federation",
        unique_id=PREFIX,
        entry_id=ENTRY_ID,
        data=entry_data,
        options=entry_options,
        version=1,
        minor_version=2,
    )


@pytest.fixture
def frozen_time(freezer: FrozenDateTimeFactory) -> FrozenDateTimeFactory:
    """Freeze the clock at a fixed moment so that snapshots do not change between runs."""
    freezer.move_to(FROZEN_TIME)
    return freezer


@pytest.fixture
def platforms() -> list[Platform]:
    """Return the platforms to set up; snapshot tests override it with one platform."""
    return [Platform.BINARY_SENSOR, Platform.SENSOR]


@pytest.fixture
async def init_integration(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    frozen_time: FrozenDateTimeFactory,
    platforms: list[Platform],
) -> AsyncGenerator[MockConfigEntry]:
    """Set up MQTT and the test federation, and unload the federation after the test."""
    mock_config_entry.add_to_hass(hass)
    with patch("custom_components.fltrust.PLATFORMS", platforms):
        assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
        await hass.async_block_till_done()
        yield mock_config_entry
        if mock_config_entry.state.recoverable:
            await hass.config_entries.async_unload(mock_config_entry.entry_id)
            await hass.async_block_till_done()


def now() -> float:
    """Return the frozen time as the Unix timestamp a node puts in its messages."""
    return dt_util.utcnow().timestamp()


def kind_model(coef: Iterable[float], offset: float = 0.5, n_samples: int = 100) -> KindModel:
    """Return one kind's parameters with the given SVM weights and plausible statistics."""
    samples = np.linspace(-1.0, 1.0, n_samples * N_FEATURES).reshape(n_samples, N_FEATURES)
    return KindModel(
        stats=FeatureStats.from_samples(samples),
        svm_coef=np.asarray(list(coef), dtype=float),
        svm_offset=offset,
        centers=np.arange(PARAMS.n_clusters * N_FEATURES, dtype=float).reshape(
            PARAMS.n_clusters, N_FEATURES
        ),
        counts=np.full(PARAMS.n_clusters, n_samples / PARAMS.n_clusters),
        n_samples=n_samples,
    )


class EdgeNode:
    """A simulated edge node that signs its messages with its derived key."""

    def __init__(
        self, hass: HomeAssistant | None, node_id: str, federation_key: str = FEDERATION_KEY
    ) -> None:
        """Create a node whose counter starts at 1; without ``hass`` it can only sign."""
        self.hass = hass
        self.node_id = node_id
        self.key = security.derive_node_key(bytes.fromhex(federation_key), node_id)
        self.counter = itertools.count(1)

    def envelope(
        self, message_type: str, body: dict[str, Any], counter: int | None = None
    ) -> dict[str, Any]:
        """Return a signed envelope stamped with the frozen time."""
        envelope = protocol.build_envelope(
            message_type,
            self.node_id,
            next(self.counter) if counter is None else counter,
            body,
            now(),
        )
        envelope["sig"] = security.hmac_tag(self.key, envelope)
        return envelope

    def topic(self, message_type: str, device_id: str | None = None) -> str:
        """Return the uplink topic of one message type."""
        if message_type == "state":
            assert device_id is not None
            return protocol.state_topic(PREFIX, self.node_id, device_id)
        return protocol.node_topic(PREFIX, self.node_id, message_type)

    def send_raw(self, topic: str, payload: bytes | str) -> None:
        """Fire a payload as it is, for malformed and forged messages."""
        assert self.hass is not None
        async_fire_mqtt_message(self.hass, topic, payload)

    def send(
        self,
        message_type: str,
        body: dict[str, Any],
        device_id: str | None = None,
        counter: int | None = None,
    ) -> bytes:
        """Sign, fire and return one message."""
        payload = protocol.encode(self.envelope(message_type, body, counter))
        self.send_raw(self.topic(message_type, device_id), payload)
        return payload

    @staticmethod
    def device(device_id: str, kind: str, name: str) -> protocol.DeviceInfo:
        """Return a device with two features, to announce in a heartbeat."""
        return protocol.DeviceInfo(device_id, kind, name, ("value", "delta"))

    def send_heartbeat(
        self,
        devices: tuple[protocol.DeviceInfo, ...] | None = None,
        anomalies: int = 1,
        peers_unknown: int = 0,
        interval: float = 30.0,
    ) -> bytes:
        """Send a heartbeat that announces ``devices`` (one temperature sensor by default)."""
        if devices is None:
            devices = (self.device("thermostat", "temperature", "Hall thermostat"),)
        heartbeat = protocol.Heartbeat(
            devices=devices,
            interval=interval,
            samples=100,
            anomalies=anomalies,
            peers_known=2,
            peers_unknown=peers_unknown,
            traffic_bytes=4000,
            model_version=0,
            software="fltrust-edge 0.1.0",
        )
        return self.send("heartbeat", protocol.heartbeat_body(heartbeat))

    def send_state(
        self, device_id: str, anomaly: bool, score: float, threshold: float = 0.0
    ) -> bytes:
        """Send one device's anomaly state."""
        state = protocol.DeviceState(device_id, anomaly, score, threshold)
        return self.send("state", protocol.state_body(state), device_id=device_id)

    def send_update(self, round_number: int, model: KindModel, base_version: int = 0) -> bytes:
        """Send a model update with one temperature model."""
        update = protocol.ModelUpdate(
            round=round_number, base_version=base_version, kinds={"temperature": model}
        )
        return self.send("update", protocol.update_body(update))


async def advance(hass: HomeAssistant, freezer: FrozenDateTimeFactory, seconds: float) -> None:
    """Move the frozen clock forward, fire the timers that became due and wait for them."""
    freezer.tick(seconds)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


async def send_poisoned_rounds(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    nodes: list[EdgeNode],
    attacker: str,
    *,
    seed: int,
    n_samples: int = 100,
    until: Callable[[], bool] = lambda: False,
) -> tuple[int, np.ndarray]:
    """Run up to three rounds in which ``attacker`` sends a sign-flipped update scaled by ten.

    The other nodes send updates close to one shared direction. Stops after the
    round in which ``until()`` became true, and returns that round's number and
    the shared direction.
    """
    rng = np.random.default_rng(seed)
    base = rng.normal(size=PARAMS.rff_components)
    round_number = 0
    for round_number in (1, 2, 3):
        await advance(hass, freezer, ROUND_INTERVAL)
        for node in nodes:
            coef = base + 0.05 * rng.normal(size=base.size)
            if node.node_id == attacker:
                coef = -10 * coef
            node.send_update(round_number, kind_model(coef, n_samples=n_samples))
        await hass.async_block_till_done()
        if until():
            break
    return round_number, base


def published(mqtt_mock: MagicMock, topic: str) -> list[tuple[dict[str, Any], int, bool]]:
    """Return the decoded envelopes published on ``topic`` with their QoS and retain flag."""
    messages = []
    for call in mqtt_mock.async_publish.call_args_list:
        call_topic, payload, qos, retain = call.args[:4]
        if call_topic == topic:
            messages.append((json.loads(payload), qos, retain))
    return messages


def federation_with_nodes(entry: MockConfigEntry, *node_ids: str) -> Federation:
    """Return an engine for ``entry`` that has accepted one heartbeat from each node."""
    federation = Federation(settings_from_entry(entry))
    for node_id in node_ids:
        node = EdgeNode(None, node_id)
        heartbeat = protocol.Heartbeat(
            devices=(EdgeNode.device("thermostat", "temperature", "Hall thermostat"),),
            interval=30.0,
            samples=100,
            anomalies=1,
            peers_known=2,
            peers_unknown=0,
            traffic_bytes=4000,
            model_version=0,
            software="fltrust-edge 0.1.0",
        )
        envelope = node.envelope("heartbeat", protocol.heartbeat_body(heartbeat))
        federation.handle_message(node.topic("heartbeat"), protocol.encode(envelope), now())
    return federation


def store_federation(
    hass_storage: dict[str, Any], entry: MockConfigEntry, federation: Federation
) -> None:
    """Put an engine's state where the entry loads it from at set-up."""
    key = f"{DOMAIN}.{entry.entry_id}"
    hass_storage[key] = {
        "version": 1,
        "minor_version": 1,
        "key": key,
        "data": json.loads(json.dumps(federation.to_dict(clean=True))),
    }


async def set_up_with_quarantined_node(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    options: dict[str, Any] | None = None,
) -> None:
    """Set up the federation in round 4 with node-1 quarantined at trust 20 and node-2 trusted."""
    federation = federation_with_nodes(entry, "node-1", "node-2")
    federation.nodes["node-1"].trust.status = TrustStatus.QUARANTINED
    federation.nodes["node-1"].trust.score = 20.0
    federation.round = 4
    store_federation(hass_storage, entry, federation)
    entry.add_to_hass(hass)
    if options is not None:
        hass.config_entries.async_update_entry(entry, options={**entry.options, **options})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


@pytest.fixture
async def quarantined_node(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    frozen_time: FrozenDateTimeFactory,
) -> MockConfigEntry:
    """Set up the federation with node-1 quarantined at trust 20 and node-2 trusted."""
    await set_up_with_quarantined_node(hass, mock_config_entry, hass_storage)
    return mock_config_entry
