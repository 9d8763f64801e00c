"""The demo's two field experiments: a smart home and an industrial site.

Smart home (prefix ``fltrust/home``): the NAB office temperature with its
real HVAC failure and, when the shared data is present, a TON_IoT thermostat
and a TON_IoT motion light. Industrial site (prefix ``fltrust/plant``): three
pumps replaying different SKAB valve1 experiments and the NAB machine
temperature with its real failure. One pump turns compromised mid-run.

Without the shared data both federations use the shipped NAB series only: two
slices of the office temperature, and three slices of the machine temperature
of which the last turns compromised. Every slice contains at least one anomaly
window, so every device gets detection figures.

Replays are paced so that each ends after about ``rounds - 1`` round
intervals; a node then exits after the next global model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .datasets import (
    DeviceData,
    clean_skab,
    clean_ton_iot,
    nab_device,
    shared_sets_present,
    skab_feature_names,
)
from .hass import FederationSettings
from .nodes import DeviceSpec, NodeSpec

HOME_PREFIX = "fltrust/home"
PLANT_PREFIX = "fltrust/plant"
# TON_IoT files are thinned to about this many rows so that a replay fits the run.
TON_IOT_TARGET_ROWS = 3000
TON_IOT_ROWS = {"thermostat": 32774, "motion_light": 39488}
SKAB_EXPERIMENTS = ("valve1/1", "valve1/2", "valve1/3")
# Rows a node trains on before it joins a round. Each replay starts with normal rows.
TRAIN_ROWS = 400
SKAB_TRAIN_ROWS = 300
# Behaviour of the compromised node from its compromise round on.
COMPROMISE = {
    "false_reading_offset": 3.0,
    "false_reading_noise": 1.0,
    "unknown_peers": 40,
    "poison": "sign_flip",
    "poison_scale": 3.0,
    "seed": 7,
}
# Rounds after the compromise within which the coordinator must quarantine the node.
QUARANTINE_WITHIN_ROUNDS = 3
MIN_ROUNDS = 6


@dataclass(frozen=True)
class FederationPlan:
    """One federation: its config entry settings and its nodes."""

    settings: FederationSettings
    nodes: tuple[NodeSpec, ...]

    @property
    def name(self) -> str:
        """Federation name, also the config entry title."""
        return self.settings.name


@dataclass(frozen=True)
class Scenario:
    """Both federations of a demo run and how they were built."""

    federations: tuple[FederationPlan, ...]
    uses_shared_data: bool
    replay_seconds: float
    compromise_round: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def nodes(self) -> list[tuple[str, NodeSpec]]:
        """Every node with the name of its federation."""
        return [(plan.name, node) for plan in self.federations for node in plan.nodes]


def compromise_round_for(rounds: int) -> int:
    """Return the round in which the compromised node turns, about mid-run.

    It leaves ``QUARANTINE_WITHIN_ROUNDS`` rounds and one more before the end.
    """
    return max(2, min(rounds // 2 - 1, rounds - QUARANTINE_WITHIN_ROUNDS - 1))


def _device(
    device_id: str,
    kind: str,
    name: str,
    features: tuple[str, ...],
    data: DeviceData,
    replay_seconds: float,
) -> DeviceSpec:
    return DeviceSpec(device_id, kind, name, features, data, data.n_rows / replay_seconds)


def _node(
    node_id: str, device: DeviceSpec, train_rows: int, simulation: dict | None = None
) -> NodeSpec:
    return NodeSpec(node_id, (device,), detection={"train_rows": train_rows}, simulation=simulation)


def plan_scenario(
    data_dir: Path,
    run_dir: Path,
    federation_keys: tuple[str, str],
    *,
    rounds: int,
    round_interval: int,
    round_timeout: int,
) -> Scenario:
    """Build both federations, writing cleaned shared-data CSVs into ``run_dir/data``.

    The shared data is used only when both TON_IoT and SKAB are present in
    ``data_dir``; otherwise the scenario falls back to the shipped NAB files.

    Raises:
        ValueError: when ``rounds`` is below ``MIN_ROUNDS``.
    """
    if rounds < MIN_ROUNDS:
        raise ValueError(f"--rounds must be at least {MIN_ROUNDS}, got {rounds}")
    replay_seconds = float((rounds - 1) * round_interval)
    compromise_round = compromise_round_for(rounds)
    simulation = {"compromise_at_round": compromise_round, **COMPROMISE}
    present = shared_sets_present(data_dir)
    use_shared = all(present.values())
    notes = []
    data_out = run_dir / "data"
    temperature = ("temperature",)

    if use_shared:
        notes.append(f"shared data from {data_dir}: TON_IoT and SKAB")
        notes.append(
            "TON_IoT's thermostat and motion-light readings look alike in attack and normal "
            "rows (the attacks target the network, not the sensor), so the detection figures "
            "of those two devices stay near chance"
        )
        thermostat = clean_ton_iot(
            "thermostat", data_dir, data_out, step=TON_IOT_ROWS["thermostat"] // TON_IOT_TARGET_ROWS
        )
        motion = clean_ton_iot(
            "motion_light",
            data_dir,
            data_out,
            step=TON_IOT_ROWS["motion_light"] // TON_IOT_TARGET_ROWS,
        )
        home_nodes = (
            _node(
                "home-office",
                _device(
                    "office-temperature",
                    "temperature",
                    "Office temperature",
                    temperature,
                    nab_device("ambient"),
                    replay_seconds,
                ),
                TRAIN_ROWS,
            ),
            _node(
                "home-thermostat",
                _device(
                    "thermostat",
                    "thermostat",
                    "Thermostat",
                    ("current_temperature", "thermostat_status"),
                    thermostat,
                    replay_seconds,
                ),
                TRAIN_ROWS,
            ),
            _node(
                "home-hall",
                _device(
                    "hall-motion",
                    "motion",
                    "Hall motion light",
                    ("motion", "light"),
                    motion,
                    replay_seconds,
                ),
                TRAIN_ROWS,
            ),
        )
        pumps = []
        for number, experiment in enumerate(SKAB_EXPERIMENTS, start=1):
            data = clean_skab(experiment, data_dir, data_out)
            device = _device(
                "pump", "pump", f"Pump {number}", skab_feature_names(), data, replay_seconds
            )
            compromised = number == len(SKAB_EXPERIMENTS)
            pumps.append(
                _node(
                    f"plant-pump-{number}",
                    device,
                    SKAB_TRAIN_ROWS,
                    simulation if compromised else None,
                )
            )
        machine = _device(
            "machine-temperature",
            "machine_temperature",
            "Machine temperature",
            temperature,
            nab_device("machine"),
            replay_seconds,
        )
        plant_nodes = (*pumps, _node("plant-machine", machine, TRAIN_ROWS))
    else:
        missing = [name for name, found in present.items() if not found]
        notes.append(f"shared data missing in {data_dir} ({', '.join(missing)}): NAB-only scenario")
        home_nodes = tuple(
            _node(
                node_id,
                _device(
                    "office-temperature",
                    "temperature",
                    "Office temperature",
                    temperature,
                    nab_device("ambient", start, end),
                    replay_seconds,
                ),
                TRAIN_ROWS,
            )
            for node_id, (start, end) in {
                "home-office-a": (0, 4800),
                "home-office-b": (2400, 7267),
            }.items()
        )
        slices = {
            "plant-machine-1": (0, 5000),
            "plant-machine-2": (12000, 18000),
            "plant-machine-3": (16700, 22695),
        }
        plant_nodes = tuple(
            _node(
                node_id,
                _device(
                    "machine-temperature",
                    "machine_temperature",
                    "Machine temperature",
                    temperature,
                    nab_device("machine", start, end),
                    replay_seconds,
                ),
                TRAIN_ROWS,
                simulation if node_id == "plant-machine-3" else None,
            )
            for node_id, (start, end) in slices.items()
        )

    home = FederationPlan(
        FederationSettings(
            name="home",
            topic_prefix=HOME_PREFIX,
            federation_key=federation_keys[0],
            round_interval=round_interval,
            round_timeout=round_timeout,
            min_nodes=2,
        ),
        home_nodes,
    )
    plant = FederationPlan(
        FederationSettings(
            name="plant",
            topic_prefix=PLANT_PREFIX,
            federation_key=federation_keys[1],
            round_interval=round_interval,
            round_timeout=round_timeout,
            min_nodes=2,
        ),
        plant_nodes,
    )
    return Scenario(
        federations=(home, plant),
        uses_shared_data=use_shared,
        replay_seconds=replay_seconds,
        compromise_round=compromise_round,
        notes=tuple(notes),
    )
