"""One benchmark run: a federation of simulated nodes under one attack, round by round.

The nodes run in-process. Every round each node trains its update with
``KindDetector.train`` (the edge node's code) on a random 80 % of its
training rows, starting from the global model it last received, and the
attackers replace theirs with what ``attacking.craft`` returns. The updates then go
two ways:

- as signed messages (heartbeat, update, responses to re-authentication
  challenges) into ``fltrust_core.federation.Federation``, the coordinator's
  real round engine, whose published model the nodes train from next round;
- in shadow mode, the very same update arrays to every other method:
  Flower's rules and the candidate rules. Their aggregates are not sent
  back, so their poisoning cannot compound over rounds, which favours them.

At the end every method's model of each kind is calibrated by each honest
node on its own normal training rows (``KindDetector.fit``) and scored on its
test rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fltrust_core import protocol, security
from fltrust_core.detectors import KindDetector, PersonalizedDetector
from fltrust_core.federation import Federation, FederationSettings
from fltrust_core.model import FeatureStats, KindModel
from fltrust_core.scoring import model_key
from fltrust_core.trust import TrustConfig
from fltrust_edge.evaluation import device_metrics

from .analysis import PERSONALIZED
from .attacking import ALL_ATTACKS, AttackContext, craft
from .candidates import CANDIDATES, CandidateCoordinator
from .federations import FederationSpec
from .flower import FLOWER_RULES, aggregate_with

PREFIX = "bench"
FEDERATION_KEY = bytes(range(32))
ROUND_SECONDS = 60.0
START_TIME = 1_700_000_000.0
TRAIN_SHARE = float(__import__("os").environ.get("BENCH_SHARE", "0.8"))
TARGET_FPR = 0.01
# Rows of the calibration set on which the "root" candidates train their reference.
ROOT_ROWS = 100


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid for one seed."""

    federation: str
    attack: str
    fraction: float
    seed: int
    rounds: int = 8
    attack_start: int = 4
    # Last round in which the attackers attack; None attacks to the end.
    attack_stop: int | None = None
    # Round at whose start the operator releases every quarantined attacker.
    release_round: int | None = None
    candidates: bool = True


@dataclass
class RunResult:
    """Metrics and trust histories of one run."""

    spec: RunSpec
    malicious: list[str]
    # method -> node id -> metrics of device_metrics
    metrics: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # method -> node id -> [(round, score, status)]
    trust: dict[str, dict[str, list[tuple[int, float, str]]]] = field(default_factory=dict)
    # candidate name -> node id -> [(round, deviation from its own history,
    # distance from the round's median, distance from the others' mean, reason)]
    deviations: dict[str, dict[str, list[tuple[int, float, float, float, str]]]] = field(
        default_factory=dict
    )


def choose_malicious(federation: FederationSpec, fraction: float, seed: int) -> list[str]:
    """Return the malicious nodes: ``round(fraction * n)`` of them, spread evenly over kinds.

    Nodes whose data is merely different are never chosen. The choice for a
    larger fraction contains the choice for a smaller one with the same seed.
    """
    count = round(fraction * len(federation.nodes))
    rng = np.random.default_rng(seed)
    queues = {
        kind: list(
            rng.permutation(
                [n.node_id for n in federation.nodes if n.kind == kind and not n.different]
            )
        )
        for kind in federation.kinds
    }
    chosen: list[str] = []
    kinds = federation.kinds
    offset = int(rng.integers(len(kinds)))
    position = 0
    while len(chosen) < count and any(queues.values()):
        queue = queues[kinds[(offset + position) % len(kinds)]]
        if queue:
            chosen.append(str(queue.pop(0)))
        position += 1
    return sorted(chosen)


class SimulatedNode:
    """Signs an edge node's messages and trains its updates."""

    def __init__(self, data: Any, index: int, federation: FederationSpec, seed: int) -> None:
        """Set up the node's key and message counter."""
        self.data = data
        self.index = index
        self.federation = federation
        self.seed = seed
        self.key = security.derive_node_key(FEDERATION_KEY, data.node_id)
        self.counter = 0
        self.quarantined = False

    def message(self, message_type: str, body: dict[str, Any], now: float) -> tuple[str, bytes]:
        """Return the topic and signed payload of one uplink message."""
        self.counter += 1
        envelope = protocol.build_envelope(message_type, self.data.node_id, self.counter, body, now)
        envelope["sig"] = security.hmac_tag(self.key, envelope)
        topic = protocol.node_topic(PREFIX, self.data.node_id, message_type)
        return topic, protocol.encode(envelope)

    def heartbeat(self, now: float, model_version: int) -> tuple[str, bytes]:
        """Return an honest heartbeat: constant traffic and anomaly counts."""
        n_features = self.data.X_train.shape[1]
        device = protocol.DeviceInfo(
            f"{self.data.node_id}-dev",
            self.data.kind,
            self.data.source[:60],
            tuple(f"f{i}" for i in range(n_features)),
        )
        heartbeat = protocol.Heartbeat(
            devices=(device,),
            interval=ROUND_SECONDS,
            samples=100,
            anomalies=1,
            peers_known=1,
            peers_unknown=0,
            traffic_bytes=50_000,
            model_version=model_version,
            software="bench",
        )
        return self.message("heartbeat", protocol.heartbeat_body(heartbeat), now)

    def rows(self, round_number: int) -> np.ndarray:
        """Return this round's training rows: a random share of the node's normal rows."""
        rng = np.random.default_rng([self.seed, round_number, self.index])
        X = self.data.X_train
        chosen = np.sort(rng.choice(X.shape[0], int(TRAIN_SHARE * X.shape[0]), replace=False))
        return X[chosen]

    def train(
        self, round_number: int, base: KindModel | None, X: np.ndarray | None = None
    ) -> KindModel:
        """Train this round's update on ``X``, by default on ``rows(round_number)``."""
        rows = self.rows(round_number) if X is None else X
        return KindDetector(self.federation.params, TARGET_FPR).train(rows, base_model=base)


def _commands(publishes: list[Any]) -> list[protocol.Command]:
    return [
        protocol.parse_command(json.loads(publish.payload)["body"])
        for publish in publishes
        if publish.topic.endswith("/command")
    ]


def _root_model(
    federation: FederationSpec,
    kind: str,
    honest_ids: list[str],
    base: KindModel | None,
    seed: int,
    round_number: int,
) -> KindModel:
    """Train the coordinator's reference update on a small clean calibration set of ``kind``.

    The set is ``ROOT_ROWS`` rows drawn from the training rows of the kind's
    honest nodes of the majority regime, which is more representative than a
    real calibration recording would be, so it favours the "root" candidates.
    """
    pooled = np.vstack(
        [
            federation.node(n).X_train
            for n in honest_ids
            if federation.node(n).kind == kind and not federation.node(n).different
        ]
    )
    rng = np.random.default_rng([seed, round_number, 999])
    rows = pooled[
        np.sort(rng.choice(pooled.shape[0], min(ROOT_ROWS, pooled.shape[0]), replace=False))
    ]
    return KindDetector(federation.params, TARGET_FPR).train(rows, base_model=base)


def evaluate(
    federation: FederationSpec,
    models: dict[str, KindModel],
    node_ids: list[str],
    personalized: bool = False,
) -> dict[str, dict[str, Any]]:
    """Return node id -> detection metrics of each node with the model of its kind.

    With ``personalized`` each node blends the model with one trained on its
    own rows (``PersonalizedDetector``), as the edge node does by default.
    """
    results = {}
    estimator = PersonalizedDetector if personalized else KindDetector
    for node_id in node_ids:
        node = federation.node(node_id)
        # The kind's regime where the coordinator keeps one for such data.
        key = model_key(models, node.kind, FeatureStats.from_samples(node.X_train))
        model = models.get(key, models.get(node.kind))
        if model is None:
            continue
        detector = estimator(federation.params, TARGET_FPR).fit(node.X_train, model=model)
        scores = detector.anomaly_score(node.X_test)
        labels = node.y_test if node.y_test is not None else np.zeros(scores.size, dtype=int)
        results[node_id] = device_metrics(labels, scores, detector.threshold_)
    return results


class Simulation:
    """The state of one run: the nodes, the coordinator and the shadow methods."""

    def __init__(self, federation: FederationSpec, spec: RunSpec) -> None:
        """Set up the nodes, the coordinator and the methods that aggregate in shadow mode."""
        self.federation = federation
        self.spec = spec
        self.attack = ALL_ATTACKS[spec.attack] if spec.attack != "none" else None
        self.malicious = (
            choose_malicious(federation, spec.fraction, spec.seed) if self.attack else []
        )
        self.honest_ids = [n.node_id for n in federation.nodes if n.node_id not in self.malicious]
        self.atypical = frozenset(federation.atypical())
        self.nodes = {
            n.node_id: SimulatedNode(n, i, federation, spec.seed)
            for i, n in enumerate(federation.nodes)
        }
        self.coordinator = Federation(
            FederationSettings(
                prefix=PREFIX,
                federation_key=FEDERATION_KEY,
                round_interval=ROUND_SECONDS,
                round_timeout=ROUND_SECONDS / 2,
                min_nodes=2,
                params=federation.params,
            )
        )
        config = TrustConfig()
        self.candidates = (
            [CandidateCoordinator(c, config, federation.params.n_clusters) for c in CANDIDATES]
            if spec.candidates
            else []
        )
        self.submitted: dict[str, list[KindModel]] = {n: [] for n in self.nodes}
        self.rng = np.random.default_rng([spec.seed, 7])
        self.flower_models: dict[str, dict[str, KindModel]] = {rule: {} for rule in FLOWER_RULES}
        self.trust: dict[str, list[tuple[int, float, str]]] = {n: [] for n in self.nodes}

    def attacking(self, round_number: int) -> bool:
        """Return whether the attackers are still in their attack period in ``round_number``."""
        return self.spec.attack_stop is None or round_number <= self.spec.attack_stop

    def run_round(self, round_number: int) -> None:
        """Train, attack, deliver, aggregate in shadow and close one round."""
        now = START_TIME + round_number * ROUND_SECONDS
        coordinator = self.coordinator
        for node in self.nodes.values():
            coordinator.handle_message(*node.heartbeat(now, coordinator.model.version), now)
        if self.spec.release_round == round_number:
            for node_id in self.malicious:
                _answer_challenges(
                    coordinator, self.nodes, coordinator.release(node_id, now).publishes, now
                )
                self.nodes[node_id].quarantined = False
        _answer_challenges(coordinator, self.nodes, coordinator.start_round(now).publishes, now)

        base = {kind: coordinator.model.kinds.get(kind) for kind in self.federation.kinds}
        sending = self._updates(round_number, base)
        for node_id, sent in sending.items():
            self.submitted[node_id].append(sent)
            node = self.nodes[node_id]
            if node.quarantined:
                continue
            key, model = node.data.kind, sent
            if node_id not in self.malicious:
                # An honest node with atypical data trains for its kind's regime,
                # as the edge node does. The shadow methods keep one model per
                # kind, so they get the update trained from the kind's model.
                key = model_key(
                    coordinator.model.kinds, key, model.stats, coordinator.model.max_regimes
                )
                if key != node.data.kind:
                    model = node.train(round_number, coordinator.model.kinds.get(key))
            body = protocol.update_body(
                protocol.ModelUpdate(round_number, coordinator.model.version, {key: model})
            )
            coordinator.handle_message(*node.message("update", body, now + 1), now + 1)

        self._shadow(round_number, base, sending, now + 2)

        closed = coordinator.close_round(now + 2)
        _answer_challenges(coordinator, self.nodes, closed.publishes, now + 3)
        for node_id, record in coordinator.nodes.items():
            self.trust[node_id].append(
                (round_number, round(record.trust.score, 2), record.trust.status.value)
            )

    def _updates(
        self, round_number: int, base: dict[str, KindModel | None]
    ) -> dict[str, KindModel]:
        """Return the update every node sends this round, the attackers' poisoned."""
        nodes = self.nodes
        honest = {
            node_id: node.train(round_number, base[node.data.kind])
            for node_id, node in nodes.items()
        }
        sending = dict(honest)
        if self.attack is None or not self.attacking(round_number):
            return sending
        for kind in self.federation.kinds:
            of_kind = {n: m for n, m in honest.items() if nodes[n].data.kind == kind}

            def retrain(node_id: str, poison: Any, kind: str = kind) -> KindModel:
                rows = nodes[node_id].rows(round_number)
                return nodes[node_id].train(round_number, base[kind], poison(rows))

            context = AttackContext(
                round=round_number,
                start=self.spec.attack_start,
                base=base[kind],
                honest=of_kind,
                malicious=[n for n in self.malicious if n in of_kind],
                submitted=self.submitted,
                retrain=retrain,
                nodes={n: nodes[n].data for n in of_kind},
                rng=self.rng,
                atypical=self.atypical,
            )
            sending.update(craft(self.attack, context))
        return sending

    def _shadow(
        self,
        round_number: int,
        base: dict[str, KindModel | None],
        sending: dict[str, KindModel],
        now: float,
    ) -> None:
        """Aggregate the same updates with the candidates, and with Flower in the last round."""
        by_kind: dict[str, dict[str, KindModel]] = {}
        for node_id, model in sending.items():
            by_kind.setdefault(self.nodes[node_id].data.kind, {})[node_id] = model
        if self.candidates:
            roots = {
                kind: _root_model(
                    self.federation, kind, self.honest_ids, base[kind], self.spec.seed, round_number
                )
                for kind in self.federation.kinds
            }
            for candidate in self.candidates:
                candidate.run_round(round_number, base, by_kind, roots, now)
        if round_number == self.spec.rounds:
            for rule in FLOWER_RULES:
                for kind, updates in by_kind.items():
                    n_malicious = sum(1 for n in updates if n in self.malicious)
                    self.flower_models[rule][kind] = aggregate_with(
                        rule, list(updates.values()), n_malicious
                    )

    def result(self) -> RunResult:
        """Evaluate every method's final models on the honest nodes."""
        result = RunResult(self.spec, self.malicious)
        evaluated = self.honest_ids
        federation = self.federation
        result.metrics["fltrust"] = evaluate(
            federation, dict(self.coordinator.model.kinds), evaluated
        )
        result.metrics[PERSONALIZED] = evaluate(
            federation, dict(self.coordinator.model.kinds), evaluated, personalized=True
        )
        result.trust["fltrust"] = self.trust
        for rule, models in self.flower_models.items():
            result.metrics[rule] = evaluate(federation, models, evaluated)
        for candidate in self.candidates:
            name = f"candidate: {candidate.candidate.name}"
            result.metrics[name] = evaluate(federation, candidate.models, evaluated)
            result.trust[name] = {
                n: [(r, round(s, 2), status) for r, s, status in history]
                for n, history in candidate.history.items()
            }
            result.deviations[candidate.candidate.name] = candidate.deviations
        return result


def run(federation: FederationSpec, spec: RunSpec) -> RunResult:
    """Run one cell of the grid and return its metrics and trust histories."""
    simulation = Simulation(federation, spec)
    for round_number in range(1, spec.rounds + 1):
        simulation.run_round(round_number)
    return simulation.result()


def _answer_challenges(
    coordinator: Federation, nodes: dict[str, SimulatedNode], publishes: list[Any], now: float
) -> None:
    """Send the response to every re-authentication challenge, as any node with valid keys does."""
    for command in _commands(publishes):
        node = nodes.get(command.node_id)
        if node is None:
            continue
        if command.action == "reauthenticate":
            coordinator.handle_message(*node.message("auth", {"nonce": command.nonce}, now), now)
        elif command.action == "quarantine":
            node.quarantined = True
