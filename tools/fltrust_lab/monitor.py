"""Round-by-round view of a federation, read from Home Assistant's entities and events.

Entities are found by the unique ids the integration gives them
(``{entry_id}_{node_id}_trust`` and so on), then read through ``/api/states``.
A ``RoundRow`` is recorded each time the round sensor reports a newly closed
round (its ``last_round`` attribute).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from .scenario import FederationPlan


@dataclass(frozen=True)
class RoundRow:
    """The state of a federation right after one round closed."""

    federation: str
    round: int
    model_version: int | None
    duration: float | None
    participants: tuple[str, ...]
    rejected: int | None
    trust: dict[str, float | None]
    quarantined: dict[str, bool]
    # Devices whose anomaly binary sensor is on, as "node/device".
    anomalies: tuple[str, ...]
    seen_at: float


def _number(state: dict[str, Any] | None) -> float | None:
    if state is None:
        return None
    with contextlib.suppress(TypeError, ValueError):
        return float(state["state"])
    return None


@dataclass
class FederationMonitor:
    """Entity ids, round rows and trust events of one federation."""

    plan: FederationPlan
    entry_id: str
    entities: dict[str, str] = field(default_factory=dict)
    rows: list[RoundRow] = field(default_factory=list)
    # Round of the first ``fltrust_quarantined`` event of each node.
    quarantined_at: dict[str, int] = field(default_factory=dict)
    trust_drops: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """Federation name."""
        return self.plan.name

    def expected_unique_ids(self) -> list[str]:
        """Return the unique ids of every entity the contract promises for this federation."""
        ids = [f"{self.entry_id}_round", f"{self.entry_id}_model_version"]
        for node in self.plan.nodes:
            ids += [
                f"{self.entry_id}_{node.node_id}_trust",
                f"{self.entry_id}_{node.node_id}_quarantined",
            ]
            for device in node.devices:
                prefix = f"{self.entry_id}_{node.node_id}_{device.device_id}"
                ids += [f"{prefix}_trust", f"{prefix}_anomaly", f"{prefix}_anomaly_score"]
        return ids

    def missing_entities(self) -> list[str]:
        """Return the promised unique ids that the entity registry does not contain yet."""
        return [
            unique_id for unique_id in self.expected_unique_ids() if unique_id not in self.entities
        ]

    def update_registry(self, registry: list[dict[str, Any]]) -> None:
        """Record the entity ids of this federation's entries in the entity registry."""
        for entry in registry:
            if entry.get("config_entry_id") == self.entry_id or str(
                entry.get("unique_id", "")
            ).startswith(f"{self.entry_id}_"):
                self.entities[entry["unique_id"]] = entry["entity_id"]

    def _state(self, states: dict[str, dict[str, Any]], unique_id: str) -> dict[str, Any] | None:
        entity_id = self.entities.get(unique_id)
        return states.get(entity_id) if entity_id else None

    def observe(self, states: dict[str, dict[str, Any]]) -> RoundRow | None:
        """Record and return a row when the round sensor shows a newly closed round."""
        round_state = self._state(states, f"{self.entry_id}_round")
        if round_state is None:
            return None
        attributes = round_state.get("attributes", {})
        last_round = attributes.get("last_round")
        if not isinstance(last_round, int) or (self.rows and self.rows[-1].round >= last_round):
            return None

        version = attributes.get("model_version")
        trust: dict[str, float | None] = {}
        quarantined: dict[str, bool] = {}
        anomalies = []
        for node in self.plan.nodes:
            trust[node.node_id] = _number(
                self._state(states, f"{self.entry_id}_{node.node_id}_trust")
            )
            flag = self._state(states, f"{self.entry_id}_{node.node_id}_quarantined")
            quarantined[node.node_id] = flag is not None and flag["state"] == "on"
            for device in node.devices:
                anomaly = self._state(
                    states, f"{self.entry_id}_{node.node_id}_{device.device_id}_anomaly"
                )
                if anomaly is not None and anomaly["state"] == "on":
                    anomalies.append(f"{node.node_id}/{device.device_id}")

        duration = attributes.get("last_round_duration")
        row = RoundRow(
            federation=self.name,
            round=last_round,
            model_version=version if isinstance(version, int) else None,
            duration=float(duration) if isinstance(duration, int | float) else None,
            participants=tuple(attributes.get("participants") or ()),
            rejected=attributes.get("rejected"),
            trust=trust,
            quarantined=quarantined,
            anomalies=tuple(anomalies),
            seen_at=time.monotonic(),
        )
        self.rows.append(row)
        return row

    def record_event(self, event: dict[str, Any]) -> bool:
        """Record an ``fltrust_quarantined`` or ``fltrust_trust_dropped`` event of this federation.

        Returns whether the event belonged to this federation.
        """
        data = event.get("data", {})
        if data.get("config_entry_id") != self.entry_id:
            return False
        if event.get("event_type") == "fltrust_quarantined":
            self.quarantined_at.setdefault(str(data.get("node_id")), int(data.get("round", 0)))
        elif event.get("event_type") == "fltrust_trust_dropped":
            self.trust_drops.append(data)
        return True

    def final_states(self, states: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Return each node's final trust and quarantine state."""
        final = {}
        for node in self.plan.nodes:
            flag = self._state(states, f"{self.entry_id}_{node.node_id}_quarantined")
            final[node.node_id] = {
                "trust": _number(self._state(states, f"{self.entry_id}_{node.node_id}_trust")),
                "quarantined": flag is not None and flag["state"] == "on",
            }
        return final

    def format_row(self, row: RoundRow) -> str:
        """Return one line of the round table."""
        cells = []
        for node in self.plan.nodes:
            value = row.trust.get(node.node_id)
            text = "  -  " if value is None else f"{value:5.1f}"
            marker = " Q" if row.quarantined.get(node.node_id) else "  "
            cells.append(f"{node.node_id} {text}{marker}")
        duration = "   -  " if row.duration is None else f"{row.duration:5.1f}s"
        version = "-" if row.model_version is None else str(row.model_version)
        anomalies = ", ".join(row.anomalies) if row.anomalies else "none"
        return (
            f"[{self.name:<5}] round {row.round:>3}  v{version:<3} {duration}  "
            + "  ".join(cells)
            + f"  | anomalies: {anomalies}"
        )
