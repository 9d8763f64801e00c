"""The coordinator's round engine, free of Home Assistant and of MQTT clients.

``Federation`` takes received messages and clock ticks and returns what to
publish and what happened. The Home Assistant coordinator owns the MQTT
subscription, the timers, the storage and the entities, and calls these
methods one at a time from an executor thread, because several of them do
numeric work.

A round: ``start_round`` announces it; ``handle_message`` collects the signed
updates; ``ready_to_close`` returns whether every active node sent one or the
deadline passed; ``close_round`` scores every update against the round's
robust reference and its sender's own earlier updates, updates each node's
trust, aggregates with FedAvg weighted by sample count, trust, integrity and
direction after clipping oversized changes, and returns the new global model
to publish.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .aggregation import MAX_SAMPLE_RATIO, aggregate_kind, bounded_samples
from .model import FederationParams, GlobalModel, KindModel
from .protocol import (
    COORDINATOR_SENDER,
    MAX_DEVICES,
    MAX_KINDS,
    MAX_REGIMES,
    Command,
    DeviceInfo,
    Envelope,
    ModelUpdate,
    RoundAnnouncement,
    base_kind,
    build_envelope,
    command_body,
    command_topic,
    decode_envelope,
    encode,
    is_valid_id,
    model_topic,
    parse_auth,
    parse_heartbeat,
    parse_model,
    parse_state,
    parse_update,
    parse_uplink_topic,
    regime_index,
    round_body,
    round_topic,
)
from .scoring import (
    UpdateBaseline,
    UpdateScore,
    model_key,
    score_updates,
    typical_data,
    update_digest,
    update_parts,
)
from .security import (
    MAX_KEY_GENERATION,
    REJECTION_SEVERITY,
    MessageRejected,
    RejectReason,
    ReplayGuard,
    derive_coordinator_private_key,
    derive_node_key,
    ed25519_signature,
    verify_hmac,
)
from .trust import DeviceTrust, NodeTrust, TrustConfig, TrustStatus

_LOGGER = logging.getLogger(__name__)

# Rounds a node may leave a re-authentication challenge unanswered before it
# counts as a security event and a new challenge is sent.
CHALLENGE_ROUNDS = 2
# A node that sent nothing for this many round intervals is not waited for.
ACTIVE_ROUNDS = 3
# A kind that no round aggregated for this many rounds leaves the global model and
# frees its slot among the MAX_KINDS, so that kinds of nodes that left or were
# quarantined do not keep new kinds out for good. A node that sends it again
# brings it back.
KIND_RETENTION_ROUNDS = 30
STATE_VERSION = 1


@dataclass(frozen=True)
class FederationSettings:
    """Configuration of one federation, taken from its config entry."""

    prefix: str
    federation_key: bytes
    round_interval: float = 60.0
    round_timeout: float = 30.0
    min_nodes: int = 2
    trust: TrustConfig = field(default_factory=TrustConfig)
    params: FederationParams = field(default_factory=FederationParams)


@dataclass(frozen=True)
class Publish:
    """A message to publish on the broker."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1


@dataclass(frozen=True)
class FederationEvent:
    """Something that happened, for entities, bus events and logs.

    ``kind`` is one of ``node_discovered``, ``device_discovered``, ``rejected``,
    ``state_changed``, ``trust_dropped``, ``quarantined``, ``released``,
    ``reauth_required``, ``authenticated``, ``round_started`` or ``round_completed``.
    """

    kind: str
    data: dict[str, Any]


@dataclass
class Outcome:
    """Publishes and events produced by one engine call."""

    publishes: list[Publish] = field(default_factory=list)
    events: list[FederationEvent] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        """Append another outcome's publishes and events."""
        self.publishes.extend(other.publishes)
        self.events.extend(other.events)


@dataclass
class DeviceRecord:
    """Coordinator record of one watched device."""

    info: DeviceInfo
    anomaly: bool | None = None
    score: float | None = None
    threshold: float | None = None
    last_seen: float = 0.0
    trust: DeviceTrust = field(default_factory=DeviceTrust)
    # Whether the node's latest heartbeat listed the device. One that it no
    # longer lists may be removed by a person (``Federation.forget_device``).
    announced: bool = True


@dataclass
class NodeRecord:
    """Coordinator record of one edge node."""

    node_id: str
    trust: NodeTrust
    devices: dict[str, DeviceRecord] = field(default_factory=dict)
    last_seen: float = 0.0
    software: str = ""
    model_version: int = 0
    rejected: int = 0
    last_rejection: str = ""
    authenticated: bool = True
    challenge: str = ""
    challenge_round: int = 0
    # Coordinator time at which the open challenge was sent.
    challenge_sent: float = 0.0
    received_bytes: int = 0
    last_heartbeat: dict[str, Any] = field(default_factory=dict)
    last_integrity: float | None = None


@dataclass
class RoundRecord:
    """Figures of one closed round."""

    round: int
    started: float
    closed: float
    participants: list[str]
    dropped: list[str]
    rejected: int
    version: int
    aggregated: bool

    @property
    def duration(self) -> float:
        """Seconds from announcement to aggregation."""
        return self.closed - self.started


def new_epoch() -> str:
    """Return a random federation epoch, 16 hexadecimal digits."""
    return secrets.token_hex(8)


def _check_state_topic(topic: str, body: dict[str, Any]) -> None:
    """Raise MessageRejected unless a state message's topic names the device in its body."""
    topic_device = topic.split("/")[-2]
    if body.get("device") != topic_device:
        raise MessageRejected(
            RejectReason.TOPIC_MISMATCH,
            f"state for device {body.get('device')!r} published on the topic of {topic_device!r}",
        )


def _stored_count(value: Any, name: str) -> int:
    """Return a stored count, raising ValueError for anything but an integer of at least 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"invalid stored {name} {value!r}: expected an integer of at least 0")
    return value


def _stored_mapping(stored: dict[str, Any], key: str) -> dict[str, Any]:
    """Return a stored object field, raising ValueError when it is missing or not an object."""
    value = stored.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"stored field {key!r} is missing or not an object")
    return value


def _weights_of(score: UpdateScore) -> dict[str, Any]:
    """Return the fields of ``score`` that set its update's weight in the aggregate."""
    return {
        "cosine": score.cosine,
        "norm_ratio": score.norm_ratio,
        "weight": score.weight,
        "clip": score.clip,
        "center_clip": score.center_clip,
        "typical": score.typical,
        "duplicate": score.duplicate,
    }


def _finite(model: KindModel) -> bool:
    """Return whether every parameter and statistic of ``model`` is finite."""
    values = (
        model.svm_vector(),
        model.centers,
        model.counts,
        model.stats.total,
        model.stats.total_sq,
        np.array([model.stats.count]),
    )
    return all(bool(np.all(np.isfinite(v))) for v in values)


def _key_generation(value: Any) -> int:
    """Return a stored key generation, raising ValueError for anything but a valid one."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid stored key generation {value!r}: expected an integer")
    if not 1 <= value <= MAX_KEY_GENERATION:
        raise ValueError(
            f"invalid stored key generation {value}: expected 1 to {MAX_KEY_GENERATION}"
        )
    return value


class Federation:
    """State and rules of one federation's coordinator."""

    def __init__(
        self,
        settings: FederationSettings,
        stored: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> None:
        """Create the engine, restoring ``stored`` state from a previous run when given.

        ``now`` is the time of the restore, by default the system clock. Unless
        ``stored`` was saved on a clean stop (``to_dict(clean=True)``),
        messages sent before it are rejected, because the stored replay
        counters may predate them, and the round number and model version
        move one ahead. A round or model may have gone out after the last
        save: nodes ignore numbers they already handled, and a node that
        kept training from a model missing from the restored state would
        send the same update again.
        """
        self.settings = settings
        self._signing_key = derive_coordinator_private_key(settings.federation_key)
        self.nodes: dict[str, NodeRecord] = {}
        self.replay = ReplayGuard()
        self.model = GlobalModel(params=settings.params, epoch=new_epoch(), max_regimes=MAX_REGIMES)
        self.round = 0
        self.round_open = False
        self.round_started = 0.0
        self.round_deadline = 0.0
        self.updates: dict[str, ModelUpdate] = {}
        self.round_rejected = 0
        self.last_round: RoundRecord | None = None
        # Kind -> node id -> score of its update in the round being closed.
        self._round_scores: dict[str, dict[str, UpdateScore]] = {}
        self.rejected_total = 0
        self._counter = 0
        # Node id -> generation of its current key; nodes not listed use generation 0.
        self.key_generations: dict[str, int] = {}
        # Kind -> the last round that aggregated it.
        self.kind_rounds: dict[str, int] = {}
        if stored is not None:
            self._restore(stored)
            if not stored.get("clean"):
                self.replay.not_before = time.time() if now is None else now
                self.round += 1
                self.model.version += 1

    # Downlink.

    def _next_counter(self) -> int:
        # Floored at the clock so that a coordinator whose storage was lost
        # still sends counters above those nodes remember.
        self._counter = max(self._counter + 1, time.time_ns() // 1000)
        return self._counter

    def _signed(self, message_type: str, body: dict[str, Any], now: float) -> bytes:
        envelope = build_envelope(message_type, COORDINATOR_SENDER, self._next_counter(), body, now)
        envelope["sig"] = ed25519_signature(self._signing_key, envelope)
        return encode(envelope)

    def _command(self, node_id: str, action: str, now: float, nonce: str = "") -> Publish:
        body = command_body(Command(node_id=node_id, action=action, nonce=nonce))
        return Publish(
            command_topic(self.settings.prefix, node_id),
            self._signed("command", body, now),
            retain=True,
        )

    def model_message(self, now: float) -> Publish:
        """Return the retained global model message."""
        return Publish(
            model_topic(self.settings.prefix),
            self._signed("model", self.model.to_json(), now),
            retain=True,
        )

    # Uplink.

    def handle_message(self, topic: str, payload: bytes, now: float) -> Outcome:
        """Verify and apply one uplink message; a rejection is an event, never an exception."""
        parsed_topic = parse_uplink_topic(self.settings.prefix, topic)
        if parsed_topic is None:
            return Outcome()
        node_id, message_type = parsed_topic
        try:
            envelope = self._verify(node_id, message_type, payload, now)
        except MessageRejected as err:
            # Anyone who can publish on the node's topic can send a message that
            # fails these checks, so it is counted but not charged to the node's trust.
            return self._reject(node_id, err, now, charge=False)
        try:
            if message_type == "state":
                _check_state_topic(topic, envelope.body)
            return self._apply(node_id, message_type, envelope, len(payload), now)
        except MessageRejected as err:
            return self._reject(node_id, err, now, charge=True)

    def _reject(self, node_id: str, err: MessageRejected, now: float, charge: bool) -> Outcome:
        self.rejected_total += 1
        if self.round_open:
            self.round_rejected += 1
        node = self.nodes.get(node_id)
        # Only a message that verified as the node's own goes on its record. Anyone
        # who can publish on the node's topic can send one that does not.
        if node is not None and charge:
            node.rejected += 1
            node.last_rejection = f"{err.reason.value}: {err.detail}"
            severity = REJECTION_SEVERITY[err.reason]
            node.trust.record_event(now, err.reason.value, severity, err.detail)
        return Outcome(
            events=[
                FederationEvent(
                    "rejected",
                    {
                        "node_id": node_id,
                        "known_node": node is not None,
                        "reason": err.reason.value,
                        "detail": err.detail,
                    },
                )
            ]
        )

    def _verify(self, node_id: str, message_type: str, payload: bytes, now: float) -> Envelope:
        """Return the envelope once its topic, signature, counter and timestamp check out."""
        envelope = decode_envelope(payload)
        if envelope.sender != node_id or envelope.type != message_type:
            raise MessageRejected(
                RejectReason.TOPIC_MISMATCH,
                f"envelope says {envelope.type} from {envelope.sender!r}, topic says "
                f"{message_type} from {node_id!r}",
            )
        self._verify_node_key(node_id, envelope.raw)
        self.replay.check(node_id, envelope.counter, envelope.timestamp, now)
        # The signature and counter are good: this message is spent even if its body is invalid.
        self.replay.accept(node_id, envelope.counter)
        return envelope

    def _verify_node_key(self, node_id: str, envelope: dict[str, Any]) -> None:
        """Raise MessageRejected unless the message is signed with the node's current key."""
        generation = self.key_generations.get(node_id, 0)
        try:
            verify_hmac(self.node_key(node_id), envelope)
        except MessageRejected:
            if generation == 0:
                raise
            # Telling a replaced key apart lets the rejection name the key the node needs.
            previous = derive_node_key(self.settings.federation_key, node_id, generation - 1)
            try:
                verify_hmac(previous, envelope)
            except MessageRejected:
                raise MessageRejected(
                    RejectReason.BAD_SIGNATURE,
                    f"HMAC tag does not match the node key of generation {generation}",
                ) from None
            raise MessageRejected(
                RejectReason.REVOKED_KEY,
                f"signed with the replaced node key of generation {generation - 1}; the "
                f"node needs its key of generation {generation}",
            ) from None

    def _apply(
        self, node_id: str, message_type: str, envelope: Envelope, size: int, now: float
    ) -> Outcome:
        """Apply a verified message; a rejection raised here is charged to the node."""
        outcome = Outcome()
        node = self.nodes.get(node_id)
        if node is None:
            node = NodeRecord(node_id, NodeTrust(score=self.settings.trust.initial_score))
            self.nodes[node_id] = node
            outcome.events.append(FederationEvent("node_discovered", {"node_id": node_id}))
        node.last_seen = now
        # Only verified messages count as the node's traffic, so that junk published on
        # its topic by someone else cannot lower its network signal.
        node.received_bytes += size

        if message_type == "heartbeat":
            outcome.extend(self._on_heartbeat(node, envelope.body, now))
        elif message_type == "state":
            outcome.extend(self._on_state(node, envelope.body, now))
        elif message_type == "update":
            outcome.extend(self._on_update(node, envelope.body, now))
        elif message_type == "auth":
            outcome.extend(self._on_auth(node, envelope.body, now))
        return outcome

    def _on_heartbeat(self, node: NodeRecord, body: dict[str, Any], now: float) -> Outcome:
        heartbeat = parse_heartbeat(body)
        new_devices = {d.device_id for d in heartbeat.devices} - set(node.devices)
        if len(node.devices) + len(new_devices) > MAX_DEVICES:
            raise MessageRejected(
                RejectReason.SCHEMA,
                f"heartbeat would raise the node's devices to "
                f"{len(node.devices) + len(new_devices)}, above {MAX_DEVICES}",
            )
        outcome = Outcome()
        for info in heartbeat.devices:
            record = node.devices.get(info.device_id)
            if record is None:
                node.devices[info.device_id] = DeviceRecord(info=info, last_seen=now)
                outcome.events.append(
                    FederationEvent(
                        "device_discovered", {"node_id": node.node_id, "device_id": info.device_id}
                    )
                )
            else:
                record.info = info
        listed = {info.device_id for info in heartbeat.devices}
        for device_id, record in node.devices.items():
            record.announced = device_id in listed
        # Traffic the coordinator saw itself counts when the node reports less.
        traffic = max(heartbeat.traffic_bytes, node.received_bytes)
        node.received_bytes = 0
        # Before its first global model a node's anomaly flags come from an untrained
        # detector, so they would teach the behaviour baseline nothing true.
        scored = heartbeat.model_version > 0
        node.trust.observe_heartbeat(
            samples=heartbeat.samples if scored else 0,
            anomalies=heartbeat.anomalies if scored else 0,
            peers_unknown=heartbeat.peers_unknown,
            traffic_bytes=traffic,
            interval=heartbeat.interval,
        )
        node.software = heartbeat.software
        node.model_version = heartbeat.model_version
        node.last_heartbeat = {
            "samples": heartbeat.samples,
            "anomalies": heartbeat.anomalies,
            "peers_known": heartbeat.peers_known,
            "peers_unknown": heartbeat.peers_unknown,
            "traffic_bytes": traffic,
            "interval": heartbeat.interval,
        }
        outcome.events.append(FederationEvent("state_changed", {"node_id": node.node_id}))
        return outcome

    def _on_state(self, node: NodeRecord, body: dict[str, Any], now: float) -> Outcome:
        state = parse_state(body)
        record = node.devices.get(state.device_id)
        if record is None:
            raise MessageRejected(
                RejectReason.UNANNOUNCED_DEVICE,
                f"state for device {state.device_id!r} that no heartbeat announced",
            )
        record.anomaly = state.anomaly
        record.score = state.score
        record.threshold = state.threshold
        record.last_seen = now
        record.trust.observe_state(state.anomaly)
        return Outcome(
            events=[
                FederationEvent(
                    "state_changed", {"node_id": node.node_id, "device_id": state.device_id}
                )
            ]
        )

    def _on_update(self, node: NodeRecord, body: dict[str, Any], now: float) -> Outcome:
        shapes = {kind: model.n_features for kind, model in self.model.kinds.items()}
        update = parse_update(body, self.settings.params, shapes)
        if update.round < self.round or (update.round == self.round and not self.round_open):
            raise MessageRejected(
                RejectReason.LATE,
                f"update for round {update.round}, which has closed; open round is "
                f"{self.round if self.round_open else 'none'}",
            )
        if not self.round_open or update.round != self.round:
            raise MessageRejected(
                RejectReason.WRONG_ROUND,
                f"update for round {update.round}, open round is "
                f"{self.round if self.round_open else 'none'}",
            )
        if node.trust.status == TrustStatus.QUARANTINED:
            raise MessageRejected(
                RejectReason.QUARANTINED, "update from a quarantined node dropped"
            )
        if node.node_id in self.updates:
            raise MessageRejected(
                RejectReason.WRONG_ROUND,
                f"second update for round {self.round}; if this repeats, check whether two "
                f"edge nodes are set up with the id {node.node_id}",
            )
        announced = {record.info.kind for record in node.devices.values()}
        unannounced = sorted(key for key in update.kinds if base_kind(key) not in announced)
        if unannounced:
            raise MessageRejected(
                RejectReason.SCHEMA,
                f"update for kinds {', '.join(unannounced)} that none of its devices has",
            )
        left_out = self._kinds_without_slot(update)
        if left_out:
            # The cap is no fault of the sender, so its update counts without them.
            update = replace(
                update,
                kinds={k: m for k, m in update.kinds.items() if k not in left_out},
            )
        outcome = Outcome()
        if left_out:
            outcome.events.append(
                FederationEvent(
                    "kinds_left_out",
                    {"node_id": node.node_id, "round": update.round, "kinds": left_out},
                )
            )
        if update.kinds:
            self.updates[node.node_id] = update
        return outcome

    def _kinds_without_slot(self, update: ModelUpdate) -> list[str]:
        """Return the new kinds of ``update`` beyond the free places among ``MAX_KINDS``.

        Kinds already in the model, or brought by an update accepted earlier in
        this round, need no new place.
        """
        if self.model.kinds.keys() >= update.kinds.keys():
            # The usual case, decided without walking the round's other updates.
            return []
        claimed = set(self.model.kinds)
        for accepted in self.updates.values():
            claimed.update(accepted.kinds)
        free = MAX_KINDS - len(claimed)
        new_kinds = sorted(set(update.kinds) - claimed)
        return new_kinds[max(free, 0) :]

    def _on_auth(self, node: NodeRecord, body: dict[str, Any], now: float) -> Outcome:
        nonce = parse_auth(body)
        if not node.challenge or not secrets.compare_digest(nonce, node.challenge):
            raise MessageRejected(
                RejectReason.SCHEMA, "authentication response matches no open challenge"
            )
        node.authenticated = True
        node.challenge = ""
        return Outcome(events=[FederationEvent("authenticated", {"node_id": node.node_id})])

    # Rounds.

    def active_nodes(self, now: float) -> list[str]:
        """Return the nodes that were heard from recently and are not quarantined."""
        horizon = now - ACTIVE_ROUNDS * max(self.settings.round_interval, 1.0)
        return [
            node_id
            for node_id, node in self.nodes.items()
            if node.last_seen >= horizon and node.trust.status != TrustStatus.QUARANTINED
        ]

    def start_round(self, now: float) -> Outcome:
        """Announce the next round, and challenge nodes that owe a re-authentication."""
        self.round += 1
        self.round_open = True
        self.round_started = now
        self.round_deadline = now + self.settings.round_timeout
        self.updates = {}
        self.round_rejected = 0
        announcement = RoundAnnouncement(
            round=self.round,
            deadline=self.round_deadline,
            base_version=self.model.version,
            params=self.settings.params,
            epoch=self.model.epoch,
        )
        outcome = Outcome(
            publishes=[
                Publish(
                    round_topic(self.settings.prefix),
                    self._signed("round", round_body(announcement), now),
                    retain=True,
                )
            ],
            events=[FederationEvent("round_started", {"round": self.round})],
        )
        for node in self.nodes.values():
            if node.trust.status != TrustStatus.REAUTH_REQUIRED or node.authenticated:
                continue
            if node.challenge and self.round - node.challenge_round < CHALLENGE_ROUNDS:
                continue
            # A node that sent nothing since the challenge may be reconnecting, or
            # waiting for its replaced key, so only a node that kept talking is charged.
            if node.challenge and node.last_seen > node.challenge_sent:
                node.trust.record_event(now, "reauth_timeout", 0.5, "challenge not answered")
            outcome.publishes.append(self._challenge(node, now))
        return outcome

    def _challenge(self, node: NodeRecord, now: float) -> Publish:
        node.authenticated = False
        node.challenge = secrets.token_hex(16)
        node.challenge_round = self.round
        node.challenge_sent = now
        return self._command(node.node_id, "reauthenticate", now, node.challenge)

    def ready_to_close(self, now: float) -> bool:
        """Return whether the open round has every active node's update or hit its deadline."""
        if not self.round_open:
            return False
        if now >= self.round_deadline:
            return True
        waiting = set(self.active_nodes(now)) - set(self.updates)
        return len(self.updates) >= self.settings.min_nodes and not waiting

    def close_round(self, now: float) -> Outcome:
        """Score, weigh and aggregate the round's updates, and update every node's trust."""
        outcome = Outcome()
        if not self.round_open:
            return outcome
        self.round_open = False
        updates = {
            node_id: update
            for node_id, update in self.updates.items()
            if self.nodes[node_id].trust.status != TrustStatus.QUARANTINED
        }

        integrity_by_node = self._score_integrity(updates, now)
        for node_id, score in integrity_by_node.items():
            self.nodes[node_id].trust.observe_integrity(score)
            self.nodes[node_id].last_integrity = score

        # A node that sent nothing since the previous round brings no new evidence,
        # so its score stays where it is rather than drifting up on old signals.
        heard_since = self.round_started - max(self.settings.round_interval, 1.0)
        for node in self.nodes.values():
            if node.last_seen < heard_since and node.node_id not in updates:
                continue
            change = node.trust.close_round(node.node_id, self.round, now, self.settings.trust)
            outcome.extend(self._status_events(node, change, now))

        weights = {
            node_id: self.nodes[node_id].trust.aggregation_weight(self.nodes[node_id].authenticated)
            * integrity_by_node.get(node_id, 1.0)
            for node_id in updates
        }
        kind_weights = self._kind_weights(updates, weights)
        # The published weight of a node is its SVM weight; a node that sent several
        # kinds is listed with the largest of them.
        contributors: dict[str, float] = {}
        for by_node in kind_weights.values():
            for node_id, (svm_weight, _, _) in by_node.items():
                if svm_weight > 0:
                    contributors[node_id] = max(contributors.get(node_id, 0.0), svm_weight)
        aggregated = len(contributors) >= self.settings.min_nodes
        if aggregated:
            self._aggregate(updates, kind_weights)
        else:
            _LOGGER.info(
                "%s: round %s closed with %s usable updates, fewer than the quorum of %s; "
                "no kind's model changes",
                self.settings.prefix,
                self.round,
                len(contributors),
                self.settings.min_nodes,
            )
        # Also without a quorum, so that the places of kinds that no node sends come free.
        expired = self._expire_kinds()
        if aggregated or expired:
            self.model.version += 1
            self.model.round = self.round
            # Unrounded, so that anyone can recompute the aggregate from the updates.
            self.model.contributors = dict(sorted(contributors.items())) if aggregated else {}
            outcome.publishes.append(self.model_message(now))
        dropped = sorted(set(self.updates) - set(contributors))
        reasons = {
            node_id: self._drop_reason(node_id, weights.get(node_id, 0.0)) for node_id in dropped
        }
        self.last_round = RoundRecord(
            round=self.round,
            started=self.round_started,
            closed=now,
            participants=sorted(contributors),
            dropped=dropped,
            rejected=self.round_rejected,
            version=self.model.version,
            aggregated=aggregated,
        )
        outcome.events.append(
            FederationEvent(
                "round_completed",
                {
                    "round": self.round,
                    "version": self.model.version,
                    "aggregated": aggregated,
                    "participants": sorted(contributors),
                    "dropped": self.last_round.dropped,
                    "dropped_reasons": reasons,
                    "duration": round(self.last_round.duration, 3),
                },
            )
        )
        self.updates = {}
        return outcome

    def _drop_reason(self, node_id: str, trust_weight: float) -> str:
        """Return why the update of ``node_id`` weighed nothing in the round being closed."""
        for kind, scores in sorted(self._round_scores.items()):
            result = scores.get(node_id)
            if result is None:
                continue
            if result.evidence <= 0.0:
                return f"kind {kind}: {result.reason}"
            if result.duplicate:
                return (
                    f"kind {kind}: near-identical to an update that arrived earlier, "
                    "which counts for both"
                )
            if result.weight <= 0.0:
                return (
                    f"kind {kind}: points away from the round's updates "
                    f"(cosine {result.cosine:.2f} with their median)"
                )
        node = self.nodes[node_id]
        if trust_weight <= 0.0:
            if node.trust.status == TrustStatus.REAUTH_REQUIRED and not node.authenticated:
                return "awaiting re-authentication"
            return f"trust status {node.trust.status.value}"
        return "weighed nothing in every kind"

    def _score_integrity(self, updates: dict[str, ModelUpdate], now: float) -> dict[str, float]:
        """Score every update and return each node's lowest integrity evidence over its kinds.

        The updates for a kind's regimes are compared with their senders'
        history in the kind's round, as senders with atypical data, so that
        the round's usual distances set their scale however few nodes a
        regime has. Their weights come from their regime's round alone.
        """
        scores: dict[str, float] = {}
        self._round_scores = {}
        keys = {key for update in updates.values() for key in update.kinds}
        # ``updates`` keeps arrival order, which decides who copied whom.
        order = {node_id: rank for rank, node_id in enumerate(updates)}
        for kind in sorted({base_kind(key) for key in keys}):
            entries = [
                (node_id, key)
                for key in sorted(k for k in keys if base_kind(k) == kind)
                for node_id in sorted(n for n, u in updates.items() if key in u.kinds)
            ]
            models = [updates[n].kinds[key] for n, key in entries]
            parts = [
                update_parts(model, self.model.kinds.get(key))
                for (_, key), model in zip(entries, models, strict=True)
            ]
            digests = [update_digest(model) for model in models]
            repeated = self._repeated(entries, digests)
            typical = self._typical(kind, entries, models)
            baselines = [self.nodes[n].trust.update_baseline(key) for n, key in entries]
            arrival = [order[n] for n, _ in entries]
            groups = [regime_index(key) for _, key in entries]
            results = score_updates(
                parts, baselines, repeated, typical=typical, arrival=arrival, groups=groups
            )
            # A node whose training data grew may stray from its history for that
            # reason alone. It starts afresh only if its update still points the
            # way the round's updates point (a flipped update gains nothing), and
            # only if the aggregation would not cap its sample count: a claim of
            # many more samples than the others' is no evidence of growth.
            samples = np.array([model.n_samples for model in models], dtype=float)
            plausible = bounded_samples(samples, np.ones(len(models))) >= samples
            fresh = [
                result.evidence < 1.0
                and result.weight > 0.0
                and bool(credible)
                and self.nodes[n].trust.grown_data(key, model.n_samples)
                for (n, key), model, result, credible in zip(
                    entries, models, results, plausible, strict=True
                )
            ]
            if any(fresh):
                baselines = [
                    None if restart else baseline
                    for baseline, restart in zip(baselines, fresh, strict=True)
                ]
                results = score_updates(
                    parts, baselines, repeated, typical=typical, arrival=arrival, groups=groups
                )
            current = [updates[n].base_version == self.model.version for n, _ in entries]
            results = self._regime_scores(
                entries, models, parts, baselines, repeated, arrival, current, results
            )
            if kind in self.model.kinds:
                # Typicality against a model, not the first round's rule that has no bulk.
                # Once typical, until a release: an atypical update of the kind
                # loses its evidence anyway and must not open the way to a regime.
                for (node_id, key), is_typical in zip(entries, typical, strict=True):
                    if key == kind:
                        record = self.nodes[node_id].trust.typical_kinds
                        record[kind] = record.get(kind, False) or bool(is_typical)
            for (node_id, key), model, part, digest, result, restart in zip(
                entries, models, parts, digests, results, fresh, strict=True
            ):
                self._round_scores.setdefault(key, {})[node_id] = result
                trust = self.nodes[node_id].trust
                trust.observe_update(
                    key,
                    part,
                    result,
                    digest,
                    self.model.version,
                    model.n_samples,
                    restart,
                )
                scores[node_id] = min(scores.get(node_id, 1.0), result.evidence)
                if result.evidence < 0.5:
                    trust.record_event(
                        now,
                        "inconsistent_update",
                        1.0 - result.evidence,
                        f"kind {key}: {result.reason}",
                    )
        return scores

    def _repeated(self, entries: list[tuple[str, str]], digests: list[str]) -> list[bool]:
        """Return whether each update repeats one sent for the same key against another version."""
        earlier: dict[str, dict[str, set[int]]] = {}
        for key in {key for _, key in entries}:
            by_digest = earlier.setdefault(key, {})
            for node in self.nodes.values():
                for digest, version in node.trust.update_digests.get(key, []):
                    by_digest.setdefault(digest, set()).add(version)
        return [
            bool(earlier[key].get(digest, set()) - {self.model.version})
            for (_, key), digest in zip(entries, digests, strict=True)
        ]

    def _typical(
        self, kind: str, entries: list[tuple[str, str]], models: list[KindModel]
    ) -> np.ndarray:
        """Return which updates of a kind's round have data typical of the kind.

        Updates for a regime count as atypical: the kind's model leaves their
        data out.
        """
        typical = np.zeros(len(entries), dtype=bool)
        own = [i for i, (_, key) in enumerate(entries) if key == kind]
        if own:
            previous = self.model.kinds.get(kind)
            typical[own] = typical_data(
                [models[i].stats for i in own], None if previous is None else previous.stats
            )
        return typical

    def _regime_scores(
        self,
        entries: list[tuple[str, str]],
        models: list[KindModel],
        parts: list[list[np.ndarray]],
        baselines: list[UpdateBaseline | None],
        repeated: list[bool],
        arrival: list[int],
        current: list[bool],
        results: list[UpdateScore],
    ) -> list[UpdateScore]:
        """Return ``results`` with the weights of each regime's updates from the regime's round.

        Their evidence is the lower of the kind's round's and the regime's, and
        none where the sender may not send for the regime (``_regime_entry``).
        """
        merged = list(results)
        for key in sorted({key for _, key in entries if regime_index(key) > 0}):
            rows = [i for i, (_, k) in enumerate(entries) if k == key]
            previous = self.model.kinds.get(key)
            regime = score_updates(
                [parts[i] for i in rows],
                [baselines[i] for i in rows],
                [repeated[i] for i in rows],
                typical=typical_data(
                    [models[i].stats for i in rows], None if previous is None else previous.stats
                ),
                arrival=[arrival[i] for i in rows],
            )
            for i, own in zip(rows, regime, strict=True):
                kind_round = results[i]
                lower = own if own.evidence < kind_round.evidence else kind_round
                merged[i] = self._regime_entry(
                    entries[i][0],
                    key,
                    models[i],
                    replace(
                        kind_round, **_weights_of(own), evidence=lower.evidence, reason=lower.reason
                    ),
                    current[i],
                )
        return merged

    def _regime_entry(
        self, node_id: str, key: str, model: KindModel, result: UpdateScore, current: bool
    ) -> UpdateScore:
        """Return the score of a regime update, with no evidence if the sender may not send it.

        A sender belongs to the regime that ``scoring.model_key`` picks for its
        data. ``current`` is whether it trained from the current model. An
        update from an older one may pick another regime in good faith, so
        it only weighs nothing. A node may not enter a regime either when
        its earlier updates of the kind had typical data, or while it has a
        history in another of the kind's regimes. There it would start a
        history afresh, next to the few nodes whose model it could then pull.
        """
        kind = base_kind(key)
        trust = self.nodes[node_id].trust
        expected = model_key(self.model.kinds, kind, model.stats, self.model.max_regimes)
        entering = key not in trust.update_baselines
        # The node's histories in the kind's other regimes that still have a model.
        elsewhere = sorted(
            other
            for other in trust.update_baselines
            if other in self.model.kinds and other != kind and base_kind(other) == kind
        )
        if expected != key and not current:
            return replace(result, weight=0.0)
        if expected == kind:
            reason = f"its data is typical of kind {kind}, so it belongs in that kind's model"
        elif expected != key:
            reason = f"its data belongs to {expected}, not to {key}"
        elif entering and trust.typical_kinds.get(kind, False):
            reason = (
                f"its earlier updates of kind {kind} had typical data, so it may not move to "
                f"the regime {key}"
            )
        elif entering and elsewhere:
            reason = (
                f"it has a history in {', '.join(elsewhere)}, so it may not move to the "
                f"regime {key}"
            )
        else:
            return result
        _LOGGER.info(
            "%s: round %s: update of %s for %s gets no evidence: %s",
            self.settings.prefix,
            self.round,
            node_id,
            key,
            reason,
        )
        return replace(result, evidence=0.0, weight=0.0, reason=reason)

    def _kind_weights(
        self, updates: dict[str, ModelUpdate], weights: dict[str, float]
    ) -> dict[str, dict[str, tuple[float, float, float]]]:
        """Return kind -> node id -> (SVM, centroid, statistics) weight of each update.

        A node's weight (trust times integrity evidence) is multiplied by its
        update's direction weight and clip factors; the statistics leave out
        data atypical for the kind.
        """
        result: dict[str, dict[str, tuple[float, float, float]]] = {}
        for kind, scores in self._round_scores.items():
            result[kind] = {}
            for node_id, score in scores.items():
                if node_id not in updates or kind not in updates[node_id].kinds:
                    continue
                weight = weights[node_id]
                result[kind][node_id] = (
                    weight * score.weight * score.clip,
                    weight * score.weight * score.center_clip,
                    weight if score.typical else 0.0,
                )
        return result

    def _aggregate(
        self,
        updates: dict[str, ModelUpdate],
        kind_weights: dict[str, dict[str, tuple[float, float, float]]],
    ) -> None:
        for kind, by_node in sorted(kind_weights.items()):
            senders = sorted(n for n, kind_weight in by_node.items() if max(kind_weight) > 0)
            if not any(by_node[n][0] > 0 for n in senders):
                _LOGGER.info(
                    "%s: round %s: every update of kind %s weighs nothing; its model is kept",
                    self.settings.prefix,
                    self.round,
                    kind,
                )
                continue
            aggregated = aggregate_kind(
                [updates[n].kinds[kind] for n in senders],
                np.array([by_node[n][0] for n in senders]),
                self.settings.params.n_clusters,
                self.model.kinds.get(kind),
                random_state=self.settings.params.seed,
                center_weights=np.array([by_node[n][1] for n in senders]),
                stats_weights=np.array([by_node[n][2] for n in senders]),
                sample_ratios=np.array(
                    [self._sample_ratio(self.nodes[n].trust.update_baseline(kind)) for n in senders]
                ),
            )
            if not _finite(aggregated):
                # Parsing bounds every value, so only a bug can get here. A model
                # that JSON cannot carry would stop every later round and save.
                _LOGGER.error(
                    "%s: round %s: the aggregate of kind %s is not finite; its model is kept",
                    self.settings.prefix,
                    self.round,
                    kind,
                )
                continue
            self.model.kinds[kind] = aggregated
            self.kind_rounds[kind] = self.round

    @staticmethod
    def _sample_ratio(baseline: UpdateBaseline | None) -> float:
        """Return the multiple of the median sample count that a sender's update may weigh.

        A sender on probation lost evidence in a recent round, so its claim of
        more data than the median sender's gains it nothing until it is clear.
        """
        if baseline is not None and baseline.probation > 0:
            return 1.0
        return MAX_SAMPLE_RATIO

    def _expire_kinds(self) -> bool:
        """Remove the kinds that no round aggregated for ``KIND_RETENTION_ROUNDS`` rounds.

        Returns whether any kind left the model.
        """
        expired = False
        for kind in sorted(self.model.kinds):
            last = self.kind_rounds.setdefault(kind, self.round)
            if self.round - last >= KIND_RETENTION_ROUNDS:
                _LOGGER.info(
                    "%s: round %s: kind %s was last aggregated in round %s; it leaves the model",
                    self.settings.prefix,
                    self.round,
                    kind,
                    last,
                )
                del self.model.kinds[kind]
                del self.kind_rounds[kind]
                expired = True
        return expired

    def _status_events(self, node: NodeRecord, change: Any, now: float) -> Outcome:
        outcome = Outcome()
        data = {
            "node_id": node.node_id,
            "trust": round(change.score, 1),
            "previous_trust": round(change.previous, 1),
            "round": self.round,
            "status": change.status.value,
            "reasons": change.reasons,
        }
        if change.dropped:
            outcome.events.append(FederationEvent("trust_dropped", data))
        if change.status == change.previous_status:
            return outcome
        if change.status == TrustStatus.QUARANTINED:
            node.challenge = ""
            outcome.publishes.append(self._command(node.node_id, "quarantine", now))
            outcome.events.append(FederationEvent("quarantined", data))
        elif change.status == TrustStatus.REAUTH_REQUIRED:
            outcome.events.append(FederationEvent("reauth_required", data))
            outcome.publishes.append(self._challenge(node, now))
        return outcome

    def release(self, node_id: str, now: float) -> Outcome:
        """Lift a node's quarantine; it must re-authenticate before its updates count again."""
        node = self.nodes.get(node_id)
        if node is None:
            raise KeyError(node_id)
        if node.trust.status != TrustStatus.QUARANTINED:
            return Outcome()
        node.trust.release(self.settings.trust)
        return Outcome(
            publishes=[self._command(node_id, "release", now), self._challenge(node, now)],
            events=[
                FederationEvent(
                    "released", {"node_id": node_id, "trust": round(node.trust.score, 1)}
                )
            ],
        )

    # Node keys.

    def node_key(self, node_id: str) -> bytes:
        """Return the current HMAC key of a node."""
        return derive_node_key(
            self.settings.federation_key, node_id, self.key_generations.get(node_id, 0)
        )

    def replace_node_key(self, node_id: str) -> Outcome:
        """Move a node to its next key generation, so that its current key stops working.

        Messages signed with any earlier key are rejected from now on, without
        counting against the node's trust. The node's trust and status do not
        change: a quarantined node stays quarantined until a release. Its
        replay counter starts over, because a copy of the old key could have
        used up the counter range with one message. Old messages cannot pass
        the signature check with the new key.

        Raises:
            ValueError: when ``node_id`` is not a valid node id, or the node has
                reached ``MAX_KEY_GENERATION``.
            KeyError: when no message of the node ever verified, so that a
                mistyped id is not taken for a revoked key.
        """
        if not is_valid_id(node_id):
            raise ValueError(f"invalid node id {node_id[:64]!r}")
        if not (
            node_id in self.nodes
            or node_id in self.replay.counters
            or node_id in self.key_generations
        ):
            raise KeyError(node_id)
        generation = self.key_generations.get(node_id, 0) + 1
        if generation > MAX_KEY_GENERATION:
            raise ValueError(f"node {node_id} has reached the last key generation")
        self.key_generations[node_id] = generation
        self.replay.counters.pop(node_id, None)
        return Outcome(
            events=[FederationEvent("key_replaced", {"node_id": node_id, "generation": generation})]
        )

    def forget_node(self, node_id: str) -> Outcome:
        """Drop the record of a node taken out of service, and clear its retained command.

        The node's replay counter and key generation stay, so that its old
        messages cannot be replayed and a replaced key does not work again.
        If it comes back, it starts over as a new node. A quarantined node
        cannot be forgotten, because starting over would lift its quarantine:
        release it first.

        Raises:
            KeyError: when the federation does not know the node.
            ValueError: when the node is quarantined.
        """
        node = self.nodes[node_id]
        if node.trust.status == TrustStatus.QUARANTINED:
            raise ValueError(f"node {node_id} is quarantined")
        del self.nodes[node_id]
        self.updates.pop(node_id, None)
        # An empty retained message deletes the retained command.
        return Outcome(
            publishes=[Publish(command_topic(self.settings.prefix, node_id), b"", retain=True)]
        )

    def forget_device(self, node_id: str, device_id: str) -> None:
        """Drop the record of a device that its node no longer watches.

        A device the node announces again later starts over as a new device.

        Raises:
            KeyError: when the federation does not know the node or the device.
            ValueError: when the node's latest heartbeat still lists the device.
        """
        devices = self.nodes[node_id].devices
        if devices[device_id].announced:
            raise ValueError(f"node {node_id} still watches device {device_id}")
        del devices[device_id]

    # Storage.

    def to_dict(self, clean: bool = False) -> dict[str, Any]:
        """Return everything that must survive a restart, JSON-ready.

        Pass ``clean`` only for the last save before the engine stops, after
        which it accepts no message: the replay counters are then complete.
        """
        data = self._state()
        if clean:
            data["clean"] = True
        return data

    def _state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "round": self.round,
            "counter": self._counter,
            "rejected_total": self.rejected_total,
            "replay": dict(self.replay.counters),
            "key_generations": dict(self.key_generations),
            "kind_rounds": dict(self.kind_rounds),
            "model": self.model.to_json(),
            "nodes": {
                node_id: {
                    "trust": node.trust.to_dict(),
                    "software": node.software,
                    "model_version": node.model_version,
                    "rejected": node.rejected,
                    "last_rejection": node.last_rejection,
                    "last_seen": node.last_seen,
                    "authenticated": node.authenticated,
                    "challenge": node.challenge,
                    "challenge_round": node.challenge_round,
                    "challenge_sent": node.challenge_sent,
                    "devices": {
                        device_id: {
                            "kind": record.info.kind,
                            "name": record.info.name,
                            "features": list(record.info.features),
                            "trust": record.trust.to_dict(),
                            "announced": record.announced,
                        }
                        for device_id, record in node.devices.items()
                    },
                }
                for node_id, node in self.nodes.items()
            },
        }

    def _restore(self, stored: dict[str, Any]) -> None:
        """Restore the state that ``to_dict`` returned.

        Every field that each saved state has is required. A damaged or
        emptied state then fails the restore instead of lifting quarantines
        and forgetting replay counters without a trace.

        Raises:
            ValueError: when a required field is missing or invalid.
        """
        version = stored.get("version")
        if version != STATE_VERSION:
            raise ValueError(
                f"unsupported stored state version {version!r}, expected {STATE_VERSION}"
            )
        self.round = _stored_count(stored.get("round"), "round")
        self._counter = _stored_count(stored.get("counter"), "counter")
        self.rejected_total = _stored_count(stored.get("rejected_total", 0), "rejected_total")
        self.replay.counters = {
            str(node_id): _stored_count(counter, f"replay counter of {node_id}")
            for node_id, counter in _stored_mapping(stored, "replay").items()
        }
        self.key_generations = {
            str(node_id): _key_generation(generation)
            for node_id, generation in stored.get("key_generations", {}).items()
        }
        try:
            model = parse_model(_stored_mapping(stored, "model"))
        except MessageRejected as err:
            raise ValueError(f"invalid stored model: {err.detail}") from err
        # The configured parameters win over stored ones; a changed shape restarts the model.
        if model.params == self.settings.params:
            self.model = model
        else:
            self.model = GlobalModel(
                version=model.version, params=self.settings.params, epoch=model.epoch
            )
        if not self.model.epoch:
            # A state saved before epochs existed. Nodes that store no epoch accept any.
            self.model.epoch = new_epoch()
        self.model.max_regimes = MAX_REGIMES
        kind_rounds = stored.get("kind_rounds", {})
        if not isinstance(kind_rounds, dict):
            raise ValueError("stored field 'kind_rounds' is not an object")
        # States saved before kinds had rounds count from the model's round.
        self.kind_rounds = {
            kind: _stored_count(kind_rounds.get(kind, self.model.round), f"round of kind {kind}")
            for kind in self.model.kinds
        }
        for node_id, data in _stored_mapping(stored, "nodes").items():
            if not is_valid_id(node_id):
                raise ValueError(f"invalid stored node id {node_id[:64]!r}")
            trust = data.get("trust") if isinstance(data, dict) else None
            if not isinstance(trust, dict) or "status" not in trust or "score" not in trust:
                raise ValueError(f"stored trust of node {node_id} has no status or score")
            node = NodeRecord(node_id, NodeTrust.from_dict(trust))
            node.software = data.get("software", "")
            node.model_version = int(data.get("model_version", 0))
            node.rejected = int(data.get("rejected", 0))
            node.last_rejection = data.get("last_rejection", "")
            node.last_seen = float(data.get("last_seen", 0.0))
            node.authenticated = bool(data.get("authenticated", True))
            node.challenge = data.get("challenge", "")
            node.challenge_round = int(data.get("challenge_round", 0))
            node.challenge_sent = float(data.get("challenge_sent", 0.0))
            for device_id, device in data.get("devices", {}).items():
                node.devices[device_id] = DeviceRecord(
                    info=DeviceInfo(
                        device_id, device["kind"], device.get("name", ""), tuple(device["features"])
                    ),
                    trust=DeviceTrust.from_dict(device.get("trust", {})),
                    announced=bool(device.get("announced", True)),
                )
            self.nodes[node_id] = node
