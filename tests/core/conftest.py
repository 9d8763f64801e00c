"""Fixtures for the shared core: a federation and signed messages from its nodes."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import pytest
from fltrust_core import protocol, security
from fltrust_core.federation import Federation, FederationSettings
from fltrust_core.model import FeatureStats, FederationParams, KindModel

FEDERATION_KEY = bytes(range(32))
PREFIX = "test/fed"
PARAMS = FederationParams(seed=7, rff_components=8, n_clusters=2)


class NodeSimulator:
    """Signs uplink messages the way an edge node does."""

    def __init__(self, node_id: str, key: bytes = FEDERATION_KEY) -> None:
        self.node_id = node_id
        self.key = security.derive_node_key(key, node_id)
        self.counter = itertools.count(1)

    def envelope(self, message_type: str, body: dict[str, Any], now: float) -> dict[str, Any]:
        envelope = protocol.build_envelope(
            message_type, self.node_id, next(self.counter), body, now
        )
        envelope["sig"] = security.hmac_tag(self.key, envelope)
        return envelope

    def message(self, message_type: str, body: dict[str, Any], now: float) -> tuple[str, bytes]:
        topic = protocol.node_topic(PREFIX, self.node_id, message_type)
        payload = protocol.encode(self.envelope(message_type, body, now))
        return topic, payload

    def heartbeat(
        self,
        now: float,
        unknown_peers: int = 0,
        anomalies: int = 1,
        devices: tuple[protocol.DeviceInfo, ...] | None = None,
    ) -> tuple[str, bytes]:
        if devices is None:
            devices = (protocol.DeviceInfo(f"{self.node_id}-dev", "temperature", "Sensor", ("t",)),)
        heartbeat = protocol.Heartbeat(
            devices=devices,
            interval=10.0,
            samples=100,
            anomalies=anomalies,
            peers_known=1,
            peers_unknown=unknown_peers,
            traffic_bytes=5000,
            model_version=0,
            software="test",
        )
        return self.message("heartbeat", protocol.heartbeat_body(heartbeat), now)

    def update(self, round_number: int, model: KindModel, now: float) -> tuple[str, bytes]:
        body = protocol.update_body(
            protocol.ModelUpdate(round=round_number, base_version=0, kinds={"temperature": model})
        )
        return self.message("update", body, now)


def kind_model(
    coef: np.ndarray, offset: float, n_samples: int = 100, center: float = 0.0
) -> KindModel:
    """Return a one-feature model with the given SVM parameters, of data around ``center``."""
    samples = np.linspace(-1.0, 1.0, n_samples)[:, None] + center
    return KindModel(
        stats=FeatureStats.from_samples(samples),
        svm_coef=np.asarray(coef, dtype=float),
        svm_offset=offset,
        centers=np.array([[-0.5], [0.5]]),
        counts=np.array([n_samples / 2, n_samples / 2]),
        n_samples=n_samples,
    )


@pytest.fixture
def now() -> float:
    return time.time()


@pytest.fixture
def federation() -> Federation:
    return Federation(
        FederationSettings(
            prefix=PREFIX,
            federation_key=FEDERATION_KEY,
            round_interval=10.0,
            round_timeout=5.0,
            min_nodes=2,
            params=PARAMS,
        )
    )
