"""Trust scores of nodes and devices from four signals.

Each signal is in [0, 1], where 1 means "no evidence against":

- behaviour: the node's anomaly rate against its own history;
- network: contacts with unknown peers and traffic volume against the node's
  own baseline;
- integrity: whether its model updates stay consistent with its own earlier
  updates and are not zero, repeated or copied updates (see
  ``scoring.score_updates``);
- security: past security events (rejected messages, failed
  re-authentication, quarantines), each fading with a half-life.

The round's raw score is ``100 * prod(signal ** weight)``, a weighted geometric
mean, so one signal near zero pulls the score down however good the others are.
The published score follows the raw score quickly downwards and slowly upwards,
which makes a node that behaves well for a while and then attacks lose trust
fast, and a released node regain it only over several rounds. Thresholds have a
hysteresis band so that a score hovering near a threshold does not flap. A node
whose update loses all evidence while it is on probation after an earlier
inconsistent update is quarantined at once, whatever its score. One odd round
can be an accident, but a second one so soon is an attack that comes and goes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from .protocol import MIN_HEARTBEAT_INTERVAL
from .scoring import UpdateBaseline, UpdateScore, learn_baseline, relapsed

SIGNALS = ("behaviour", "network", "integrity", "security")
MAX_EVENTS = 100
MAX_HISTORY = 500
# Update fingerprints kept per node and kind, to recognise a repeated update.
MAX_DIGESTS = 32
# A node's training buffer fills over its first rounds, and an update trained on
# several times more rows than the one before may differ from its history for
# that reason alone. Among a node's first GROWTH_WINDOW updates of a kind, one
# whose sample count grew by more than SAMPLE_GROWTH may start its history
# afresh (the round engine also requires that it agrees with the round's
# direction). Later growth does not: an attacker that claimed growth when it
# turned would otherwise be compared only with its attack updates.
SAMPLE_GROWTH = 1.25
GROWTH_WINDOW = 5


class TrustStatus(StrEnum):
    """Access level that a node's trust grants."""

    TRUSTED = "trusted"
    REAUTH_REQUIRED = "reauth_required"
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class TrustConfig:
    """Thresholds and dynamics of the trust score."""

    reauth_threshold: float = 60.0
    quarantine_threshold: float = 30.0
    # A node leaves a lower status only once its score exceeds the threshold by this much.
    hysteresis: float = 5.0
    initial_score: float = 80.0
    # Share of the gap between published and raw score closed in one round.
    rate_down: float = 0.6
    rate_up: float = 0.1
    # Security events lose half their weight after this many seconds.
    event_half_life: float = 6 * 3600.0
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "behaviour": 0.15,
            "network": 0.25,
            "integrity": 0.35,
            "security": 0.25,
        }
    )


@dataclass
class SecurityEvent:
    """A recorded event that counts against a node."""

    timestamp: float
    reason: str
    severity: float
    detail: str = ""


@dataclass
class TrustChange:
    """Change of one node's trust in one round, with the reasons."""

    node_id: str
    previous: float
    score: float
    previous_status: TrustStatus
    status: TrustStatus
    signals: dict[str, float]
    reasons: list[str]

    @property
    def dropped(self) -> bool:
        """Whether the score fell sharply, or fell and left the trusted status.

        A status change alone is no drop: raising a threshold above a node's
        score changes its status while the score may rise.
        """
        left_trusted = (
            self.status != TrustStatus.TRUSTED and self.previous_status == TrustStatus.TRUSTED
        )
        return self.score < self.previous - 10 or (left_trusted and self.score < self.previous)


def _approach(current: float, evidence: float, rate_up: float = 0.25) -> float:
    """Move a signal to worse evidence at once and towards better evidence slowly."""
    if evidence <= current:
        return evidence
    return current + rate_up * (evidence - current)


@dataclass
class NodeTrust:
    """Everything the coordinator remembers to score one node."""

    score: float = 80.0
    status: TrustStatus = TrustStatus.TRUSTED
    behaviour: float = 1.0
    network: float = 1.0
    integrity: float = 1.0
    # Baselines learned from the node's own heartbeats.
    heartbeats: int = 0
    anomaly_rate_mean: float = 0.0
    anomaly_rate_var: float = 0.0
    unknown_peers_mean: float = 0.0
    traffic_rate_mean: float = 0.0
    events: list[SecurityEvent] = field(default_factory=list)
    quarantined_round: int | None = None
    history: list[tuple[int, float]] = field(default_factory=list)
    # Kind -> baseline of this node's updates, as UpdateBaseline.to_json returns it.
    update_baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Kind -> [fingerprint, global model version at arrival] of recent updates, oldest first.
    update_digests: dict[str, list[list[Any]]] = field(default_factory=dict)
    # Kind -> [sample count of the latest update, number of updates so far].
    update_samples: dict[str, list[int]] = field(default_factory=dict)
    # Kind -> whether the data of this node's latest update of the kind was
    # typical of the kind's model. A node whose latest update had typical
    # data may not move to one of the kind's regimes.
    typical_kinds: dict[str, bool] = field(default_factory=dict)
    # Whether an update of this round lost all evidence on probation or under
    # watch (``scoring.relapsed``). The round's close then quarantines the node.
    relapsed: bool = False

    def signals(self, now: float, config: TrustConfig) -> dict[str, float]:
        """Return the four signals as of ``now``."""
        return {
            "behaviour": self.behaviour,
            "network": self.network,
            "integrity": self.integrity,
            "security": self.security_signal(now, config),
        }

    def security_signal(self, now: float, config: TrustConfig) -> float:
        """Return exp(-load / 2), where load sums the event severities decayed by age."""
        load = sum(
            event.severity * 0.5 ** (max(now - event.timestamp, 0.0) / config.event_half_life)
            for event in self.events
        )
        return math.exp(-load / 2.0)

    def record_event(self, now: float, reason: str, severity: float, detail: str = "") -> None:
        """Record a security event; the oldest are dropped beyond MAX_EVENTS."""
        if severity <= 0:
            return
        self.events.append(SecurityEvent(now, reason, severity, detail[:200]))
        del self.events[:-MAX_EVENTS]

    def observe_heartbeat(
        self,
        samples: int,
        anomalies: int,
        peers_unknown: int,
        traffic_bytes: int,
        interval: float,
    ) -> None:
        """Update the behaviour and network signals from one heartbeat.

        The first heartbeats only build the baselines. A baseline then moves
        slowly, and only with evidence that looks normal, so a node cannot drag
        its own baseline towards an attack within a few heartbeats.
        """
        rate = anomalies / samples if samples > 0 else self.anomaly_rate_mean
        # A heartbeat that follows another within milliseconds, after a
        # reconnect for example, would otherwise turn a few hundred bytes into a surge.
        traffic_rate = max(traffic_bytes, 0) / max(interval, MIN_HEARTBEAT_INTERVAL)
        warm = self.heartbeats >= 3
        learning_rate = 1.0 / (self.heartbeats + 1) if not warm else 0.05

        behaviour = 1.0
        network = 1.0
        if warm:
            spread = max(math.sqrt(self.anomaly_rate_var), 0.05)
            z_score = (rate - self.anomaly_rate_mean) / spread
            if z_score > 2.0:
                behaviour = max(0.2, 1.0 - (z_score - 2.0) / 4.0)
            excess_peers = max(0.0, peers_unknown - self.unknown_peers_mean - 1.0)
            network = math.exp(-excess_peers / 5.0)
            if self.traffic_rate_mean > 0:
                ratio = traffic_rate / self.traffic_rate_mean
                if ratio > 3.0:
                    network *= max(0.1, 3.0 / ratio)
        self.behaviour = _approach(self.behaviour, behaviour)
        self.network = _approach(self.network, network)

        if not warm or behaviour >= 0.99:
            delta = rate - self.anomaly_rate_mean
            self.anomaly_rate_mean += learning_rate * delta
            self.anomaly_rate_var = (1 - learning_rate) * (
                self.anomaly_rate_var + learning_rate * delta * delta
            )
        if not warm or network >= 0.99:
            self.unknown_peers_mean += learning_rate * (peers_unknown - self.unknown_peers_mean)
            self.traffic_rate_mean += learning_rate * (traffic_rate - self.traffic_rate_mean)
        self.heartbeats += 1

    def observe_integrity(self, score: float) -> None:
        """Update the integrity signal from one update's integrity score."""
        self.integrity = _approach(self.integrity, min(max(score, 0.0), 1.0))

    def update_baseline(self, kind: str) -> UpdateBaseline | None:
        """Return the baseline of this node's updates of ``kind``, or None before the first."""
        stored = self.update_baselines.get(kind)
        return None if stored is None else UpdateBaseline.from_json(stored)

    def grown_data(self, kind: str, n_samples: int) -> bool:
        """Return whether an update of ``kind`` on ``n_samples`` rows starts its history afresh.

        True when the sample count grew by more than ``SAMPLE_GROWTH`` since the
        node's previous update of the kind, within its first ``GROWTH_WINDOW``
        updates of the kind.
        Score such an update without a baseline and pass ``fresh=True`` to
        ``observe_update``.
        """
        stored = self.update_samples.get(kind)
        if stored is None or kind not in self.update_baselines:
            return False
        last, updates = stored
        return n_samples > SAMPLE_GROWTH * last and updates < GROWTH_WINDOW

    def observe_update(
        self,
        kind: str,
        parts: list[np.ndarray],
        score: UpdateScore,
        digest: str,
        version: int,
        n_samples: int | None = None,
        fresh: bool = False,
    ) -> None:
        """Learn from one scored update of ``kind``: its baseline and its fingerprint.

        ``parts`` come from ``scoring.update_parts`` and ``score`` from
        ``scoring.score_updates``. ``version`` is the global model version
        when the update arrived and ``n_samples`` the update's sample count.
        With ``fresh`` (see ``grown_data``) the update starts a new baseline.
        """
        previous = None if fresh else self.update_baseline(kind)
        self.relapsed = self.relapsed or relapsed(previous, score)
        baseline = learn_baseline(previous, parts, score)
        if baseline is None:
            self.update_baselines.pop(kind, None)
        else:
            self.update_baselines[kind] = baseline.to_json()
        digests = self.update_digests.setdefault(kind, [])
        digests.append([digest, int(version)])
        del digests[:-MAX_DIGESTS]
        if n_samples is not None:
            updates = self.update_samples.get(kind, [0, 0])[1] + 1
            self.update_samples[kind] = [int(n_samples), updates]

    def close_round(
        self, node_id: str, round_number: int, now: float, config: TrustConfig
    ) -> TrustChange:
        """Fold this round's signals into the score and apply the thresholds."""
        signals = self.signals(now, config)
        raw = 100.0
        for name in SIGNALS:
            raw *= max(signals[name], 1e-3) ** config.weights[name]
        previous = self.score
        rate = config.rate_down if raw < self.score else config.rate_up
        if self.status == TrustStatus.QUARANTINED:
            # A quarantined node's updates are dropped, so nothing it does can earn trust back.
            rate = rate if raw < self.score else 0.0
        self.score = min(100.0, max(0.0, self.score + rate * (raw - self.score)))

        previous_status = self.status
        relapse = self.relapsed and self.status != TrustStatus.QUARANTINED
        self.relapsed = False
        if relapse:
            # A second inconsistent update so soon is no accident, whatever the
            # score: the node is quarantined at once.
            self.score = min(self.score, config.quarantine_threshold)
        if self.status != TrustStatus.QUARANTINED:
            if relapse or self.score < config.quarantine_threshold:
                self.status = TrustStatus.QUARANTINED
                self.quarantined_round = round_number
                self.record_event(now, "quarantined", 1.0, f"score {self.score:.1f}")
            elif self.score < config.reauth_threshold:
                self.status = TrustStatus.REAUTH_REQUIRED
            elif (
                self.status == TrustStatus.REAUTH_REQUIRED
                and self.score >= config.reauth_threshold + config.hysteresis
            ):
                self.status = TrustStatus.TRUSTED
        self.history.append((round_number, round(self.score, 2)))
        del self.history[:-MAX_HISTORY]
        reasons = [
            f"{name} {value:.2f}"
            for name, value in sorted(signals.items(), key=lambda x: x[1])
            if value < 0.9
        ]
        if relapse:
            reasons.insert(0, "inconsistent update soon after another")
        return TrustChange(
            node_id, previous, self.score, previous_status, self.status, signals, reasons
        )

    def release(self, config: TrustConfig) -> None:
        """Lift a quarantine; the node restarts just below the re-authentication threshold.

        It must re-authenticate and then regain trust at the slow upward rate.
        """
        self.status = TrustStatus.REAUTH_REQUIRED
        self.quarantined_round = None
        self.score = config.reauth_threshold - config.hysteresis
        # Evidence from before the release would otherwise quarantine it again at once,
        # and its updates are compared with its history from after the release only.
        self.integrity = max(self.integrity, 0.5)
        self.update_baselines = {}
        # A person checked the node, so a device that moved to another operating
        # regime for good may now train the kind's regime.
        self.typical_kinds = {}
        self.network = max(self.network, 0.5)
        self.behaviour = max(self.behaviour, 0.5)
        self.events = [e for e in self.events if e.reason == "quarantined"]

    def aggregation_weight(self, authenticated: bool) -> float:
        """Return the weight in [0, 1] of this node's updates in FedAvg.

        Quarantined nodes and nodes that owe a re-authentication weigh nothing;
        re-authenticated but still doubtful nodes weigh half their trust.
        """
        if self.status == TrustStatus.QUARANTINED:
            return 0.0
        if self.status == TrustStatus.REAUTH_REQUIRED:
            return 0.5 * self.score / 100.0 if authenticated else 0.0
        return self.score / 100.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary for storage."""
        data = asdict(self)
        data["status"] = self.status.value
        data["history"] = [list(item) for item in self.history]
        # It lives for one round only, between scoring and the round's close.
        del data["relapsed"]
        # A node that never sent an update keeps the stored form it had before
        # update histories existed; from_dict fills in the empty defaults.
        for name in ("update_baselines", "update_digests", "update_samples", "typical_kinds"):
            if not data[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeTrust:
        """Restore a node's trust from storage."""
        values = dict(data)
        values["status"] = TrustStatus(values.get("status", TrustStatus.TRUSTED))
        values["events"] = [SecurityEvent(**event) for event in values.get("events", [])]
        values["history"] = [tuple(item) for item in values.get("history", [])]
        values["update_digests"] = {
            kind: [list(item) for item in items]
            for kind, items in values.get("update_digests", {}).items()
        }
        values["update_samples"] = {
            str(kind): [int(count), int(updates)]
            for kind, (count, updates) in values.get("update_samples", {}).items()
        }
        values["typical_kinds"] = {
            str(kind): bool(typical) for kind, typical in values.get("typical_kinds", {}).items()
        }
        for kind, stored in values.get("update_baselines", {}).items():
            # A baseline is parsed only when the node's next update arrives, so
            # a damaged one must fail the restore rather than that round.
            try:
                UpdateBaseline.from_json(stored)
            except (AttributeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"invalid stored update baseline of kind {kind}: {err}") from err
        for key in ("score", "behaviour", "network", "integrity", *_BASELINE_FIELDS):
            if key in values:
                values[key] = _finite(values[key], key)
        if "heartbeats" in values:
            values["heartbeats"] = int(values["heartbeats"])
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in values.items() if key in known})


_BASELINE_FIELDS = (
    "anomaly_rate_mean",
    "anomaly_rate_var",
    "unknown_peers_mean",
    "traffic_rate_mean",
)


def _finite(value: Any, name: str) -> float:
    """Return ``value`` as a finite float, or raise ValueError naming the stored field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"stored trust field {name!r} is {value!r:.40}")
    return number


@dataclass
class DeviceTrust:
    """Trust of one watched device: its node's trust, lowered while it misbehaves.

    ``anomaly_rate`` is an exponential moving average of the device's reported
    anomaly state; ``baseline`` is the same average learned while it was quiet.
    """

    anomaly_rate: float = 0.0
    baseline: float = 0.0
    reports: int = 0

    def observe_state(self, anomaly: bool) -> None:
        """Fold one reported anomaly state into the moving averages."""
        value = 1.0 if anomaly else 0.0
        self.anomaly_rate += 0.1 * (value - self.anomaly_rate)
        if self.reports < 20 or self.anomaly_rate <= self.baseline + 0.1:
            self.baseline += (0.2 if self.reports < 20 else 0.01) * (value - self.baseline)
        self.reports += 1

    def score(self, node_score: float) -> float:
        """Return the device's trust in [0, 100] given its node's trust."""
        excess = max(0.0, self.anomaly_rate - self.baseline - 0.05)
        return node_score * max(0.3, 1.0 - excess)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary for storage."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceTrust:
        """Restore a device's trust from storage."""
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})
