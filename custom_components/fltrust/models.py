"""Read-only snapshots of the federation that the coordinator hands to entities.

The round engine runs in executor threads, so entities never read it directly.
After every change the coordinator builds a new ``FederationData`` under its
lock and publishes it with ``async_set_updated_data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .const import CONNECTED_HEARTBEATS
from .core.federation import Federation, NodeRecord
from .core.protocol import MAX_HEARTBEAT_INTERVAL


@dataclass(frozen=True)
class DeviceData:
    """The coordinator's view of one watched device."""

    device_id: str
    name: str
    kind: str
    anomaly: bool | None
    anomaly_score: float | None
    threshold: float | None
    trust: float


@dataclass(frozen=True)
class NodeData:
    """One edge node: its trust, its rejected messages and its devices."""

    node_id: str
    trust: float
    status: str
    signals: dict[str, float]
    rejected: int
    last_rejection: str
    last_seen: float
    # Seconds after ``last_seen`` until the node counts as disconnected: a few of
    # its reported heartbeat intervals, or of round intervals before its first heartbeat.
    connected_timeout: float
    software: str
    model_version: int
    authenticated: bool
    last_integrity: float | None
    devices: dict[str, DeviceData] = field(default_factory=dict)

    def is_connected(self, now: float) -> bool:
        """Return whether the node was heard from within ``connected_timeout`` seconds."""
        return self.last_seen > 0 and now - self.last_seen <= self.connected_timeout


@dataclass(frozen=True)
class RoundData:
    """Figures of the last closed round."""

    round: int
    duration: float
    participants: list[str]
    dropped: list[str]
    rejected: int
    aggregated: bool


@dataclass(frozen=True)
class FederationData:
    """Everything entities show, taken at one moment."""

    round: int
    round_open: bool
    model_version: int
    rejected_total: int
    last_round: RoundData | None
    nodes: dict[str, NodeData]


def _node_data(federation: Federation, node: NodeRecord, now: float) -> NodeData:
    trust_config = federation.settings.trust
    # A node reports the time since its previous heartbeat, which is close to 0 for
    # the first one after it starts or reconnects, so the round interval is the
    # floor. Without the cap, one claim could keep a node connected for days.
    reported = float(node.last_heartbeat.get("interval") or 0.0)
    interval = min(max(reported, federation.settings.round_interval), MAX_HEARTBEAT_INTERVAL)
    return NodeData(
        node_id=node.node_id,
        trust=round(node.trust.score, 1),
        status=node.trust.status.value,
        signals={
            name: round(value, 3) for name, value in node.trust.signals(now, trust_config).items()
        },
        rejected=node.rejected,
        last_rejection=node.last_rejection,
        last_seen=node.last_seen,
        connected_timeout=CONNECTED_HEARTBEATS * interval,
        software=node.software,
        model_version=node.model_version,
        authenticated=node.authenticated,
        last_integrity=node.last_integrity,
        devices={
            device_id: DeviceData(
                device_id=device_id,
                name=record.info.name or device_id,
                kind=record.info.kind,
                anomaly=record.anomaly,
                anomaly_score=record.score,
                threshold=record.threshold,
                trust=round(record.trust.score(node.trust.score), 1),
            )
            for device_id, record in node.devices.items()
        },
    )


def build_federation_data(federation: Federation, now: float) -> FederationData:
    """Return a snapshot of ``federation``; call it only while holding the engine's lock."""
    last = federation.last_round
    return FederationData(
        round=federation.round,
        round_open=federation.round_open,
        model_version=federation.model.version,
        rejected_total=federation.rejected_total,
        last_round=None
        if last is None
        else RoundData(
            round=last.round,
            duration=round(last.duration, 3),
            participants=list(last.participants),
            dropped=list(last.dropped),
            rejected=last.rejected,
            aggregated=last.aggregated,
        ),
        nodes={
            node_id: _node_data(federation, node, now) for node_id, node in federation.nodes.items()
        },
    )
