"""Federations built from the shared data sets, the way deployments look.

Each federation has several nodes per device kind, each node holding its own
slice (another experiment run of the pump, another block of days of the GPS
tracker, another stretch of the machine's temperature). Kinds differ in
their feature extraction, as devices configured on an edge node do:

- ``pump`` (SKAB): the eight sensor values smoothed over 6 readings, without
  the trend and standard-deviation extras, which lowered the local-only ROC
  AUC of the valve1 files (0.82 with them, 0.85 without, measured with the
  default federation parameters).
- ``machine`` (NAB machine_temperature): the edge node's defaults, smoothing
  over 6 readings plus trend and standard deviation over 48.
- ``gps`` (TON_IoT GPS tracker): the raw latitude and longitude of each row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fltrust_core.model import FeatureStats, FederationParams
from fltrust_core.scoring import typical_data

from .data import FeatureSettings, NodeData, nab_nodes, skab_node, ton_iot_nodes

PUMP_FEATURES = FeatureSettings(smoothing_window=6, long_window=48, extra_features=())
MACHINE_FEATURES = FeatureSettings(
    smoothing_window=6, long_window=48, extra_features=("trend", "std")
)
MACHINE_SERIES = "machine_temperature_system_failure"


@dataclass(frozen=True)
class FederationSpec:
    """A federation: its nodes and the parameters its coordinator hands out."""

    name: str
    description: str
    nodes: tuple[NodeData, ...]
    params: FederationParams

    @property
    def kinds(self) -> list[str]:
        """Device kinds of the federation, sorted."""
        return sorted({node.kind for node in self.nodes})

    def atypical(self) -> set[str]:
        """Return the nodes whose training data the core's ``typical_data`` calls atypical.

        The rule is the one the coordinator applies in a kind's first round,
        on each node's whole training data.
        """
        result = set()
        for kind in self.kinds:
            nodes = [n for n in self.nodes if n.kind == kind]
            mask = typical_data([FeatureStats.from_samples(n.X_train) for n in nodes])
            result.update(n.node_id for n, typical in zip(nodes, mask, strict=True) if not typical)
        return result

    def node(self, node_id: str) -> NodeData:
        """Return the node named ``node_id``."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)


def pump_federation(data_dir: Path) -> FederationSpec:
    """Return ten pump nodes: nine valve1 experiments and the anomaly-free run.

    The anomaly-free run comes from another operating regime, so its node is
    honest but different from the rest of its kind.
    """
    nodes = [skab_node(data_dir, f"valve1/{i}", f"pump-{i}", PUMP_FEATURES) for i in range(9)]
    nodes.append(skab_node(data_dir, "anomaly-free/anomaly-free", "pump-regime-b", PUMP_FEATURES))
    return FederationSpec(
        name="pump",
        description=(
            "same kind: 9 SKAB valve1 experiments plus the anomaly-free run "
            "(another operating regime, honest but different)"
        ),
        nodes=tuple(nodes),
        params=FederationParams(),
    )


def gps_federation(data_dir: Path) -> FederationSpec:
    """Return ten GPS tracker nodes, each holding its own block of TON_IoT rows."""
    return FederationSpec(
        name="gps",
        description="same kind: TON_IoT GPS tracker cut into 10 blocks of days",
        nodes=tuple(ton_iot_nodes(data_dir, "gps_tracker", 10, kind="gps")),
        params=FederationParams(),
    )


def machine_federation(data_dir: Path) -> FederationSpec:
    """Return ten nodes that each watch one stretch of NAB's machine temperature series."""
    return FederationSpec(
        name="machine",
        description="same kind: NAB machine_temperature cut into 10 stretches of 8 days",
        nodes=tuple(nab_nodes(data_dir, MACHINE_SERIES, 10, MACHINE_FEATURES, kind="machine")),
        params=FederationParams(),
    )


def mixed_federation(data_dir: Path) -> FederationSpec:
    """Return fifteen nodes of three kinds, five each: pump, GPS tracker and machine."""
    pumps = [skab_node(data_dir, f"valve1/{i}", f"pump-{i}", PUMP_FEATURES) for i in range(10, 15)]
    gps = ton_iot_nodes(data_dir, "gps_tracker", 5, kind="gps")
    machine = nab_nodes(data_dir, MACHINE_SERIES, 5, MACHINE_FEATURES, kind="machine")
    return FederationSpec(
        name="mixed",
        description=(
            "mixed kinds: 5 SKAB valve1 pumps (experiments 10-14), 5 TON_IoT GPS "
            "tracker blocks and 5 NAB machine temperature stretches"
        ),
        nodes=tuple(pumps + gps + machine),
        params=FederationParams(),
    )


# Federations whose nodes all watch one device kind.
SAME_KIND = ("pump", "gps", "machine")

FEDERATIONS: dict[str, Callable[[Path], FederationSpec]] = {
    "pump": pump_federation,
    "gps": gps_federation,
    "mixed": mixed_federation,
    "machine": machine_federation,
}
