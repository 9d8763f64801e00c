"""The demo's summary: node trust and quarantine, device detection figures, acceptance targets."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from .monitor import FederationMonitor
from .scenario import QUARANTINE_WITHIN_ROUNDS, Scenario

DETECTION_FIGURES = ("auc", "precision", "recall", "f1", "fpr", "flag_all_f1")


@dataclass(frozen=True)
class Target:
    """One acceptance target and whether the run met it."""

    name: str
    passed: bool
    detail: str


def latency_figures(durations: list[float]) -> dict[str, Any]:
    """Return the min, median and max of round durations in seconds."""
    if not durations:
        return {"min": None, "median": None, "max": None, "rounds": 0}
    return {
        "min": round(min(durations), 3),
        "median": round(statistics.median(durations), 3),
        "max": round(max(durations), 3),
        "rounds": len(durations),
    }


def build_summary(
    scenario: Scenario,
    monitors: list[FederationMonitor],
    final_states: dict[str, dict[str, dict[str, Any]]],
    results: dict[str, dict[str, Any] | None],
    exit_codes: dict[str, int | None],
    *,
    round_interval: int,
    wall_seconds: float,
) -> dict[str, Any]:
    """Return the summary document of a run.

    ``final_states`` maps federation and node id to the node's final ``trust``
    and ``quarantined``. ``results`` maps node id to the node's ``--results``
    document, or to None when the node wrote none.
    """
    monitors_by_name = {monitor.name: monitor for monitor in monitors}
    nodes = []
    devices = []
    for federation, spec in scenario.nodes:
        monitor = monitors_by_name[federation]
        final = final_states.get(federation, {}).get(spec.node_id, {})
        node_results = results.get(spec.node_id) or {}
        nodes.append(
            {
                "node_id": spec.node_id,
                "federation": federation,
                "compromised": spec.compromised,
                "compromise_round": spec.compromise_round,
                "final_trust": final.get("trust"),
                "quarantined": bool(final.get("quarantined")),
                "quarantined_at_round": monitor.quarantined_at.get(spec.node_id),
                "rounds_joined": node_results.get("rounds_joined"),
                "exit_code": exit_codes.get(spec.node_id),
            }
        )
        device_results = node_results.get("devices", {})
        for device in spec.devices:
            figures = device_results.get(device.device_id, {})
            devices.append(
                {
                    "node_id": spec.node_id,
                    "federation": federation,
                    "device_id": device.device_id,
                    "kind": device.kind,
                    "data": device.data.description,
                    # A compromised node scores its own falsified readings after it turns.
                    "compromised_node": spec.compromised,
                    **{name: figures.get(name) for name in DETECTION_FIGURES},
                    "n_rows": figures.get("n_rows"),
                    "n_anomalies": figures.get("n_anomalies"),
                    "model": figures.get("model"),
                }
            )

    durations = [
        row.duration for monitor in monitors for row in monitor.rows if row.duration is not None
    ]
    rounds_per_federation = {
        monitor.name: (monitor.rows[-1].round if monitor.rows else 0) for monitor in monitors
    }
    summary: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall_seconds, 1),
        "shared_data": scenario.uses_shared_data,
        "notes": list(scenario.notes),
        "round_interval": round_interval,
        "compromise_round": scenario.compromise_round,
        "rounds": max(rounds_per_federation.values(), default=0),
        "rounds_per_federation": rounds_per_federation,
        "round_latency_seconds": latency_figures(durations),
        "nodes": nodes,
        "devices": devices,
    }
    targets = check_targets(summary)
    summary["targets"] = [asdict(target) for target in targets]
    summary["targets_met"] = all(target.passed for target in targets)
    return summary


def check_targets(summary: dict[str, Any]) -> list[Target]:
    """Return the acceptance targets evaluated on a summary document."""
    targets = []
    for node in summary["nodes"]:
        if not node["compromised"]:
            continue
        turned = node["compromise_round"]
        caught = node["quarantined_at_round"]
        passed = caught is not None and turned <= caught <= turned + QUARANTINE_WITHIN_ROUNDS
        detail = f"{node['node_id']} turned in round {turned}, " + (
            "never quarantined" if caught is None else f"quarantined in round {caught}"
        )
        targets.append(
            Target(
                f"compromised node quarantined within {QUARANTINE_WITHIN_ROUNDS} rounds",
                passed,
                detail,
            )
        )

    wrongly = [
        node["node_id"]
        for node in summary["nodes"]
        if not node["compromised"]
        and (node["quarantined"] or node["quarantined_at_round"] is not None)
    ]
    targets.append(
        Target(
            "no benign node quarantined",
            not wrongly,
            "none" if not wrongly else "quarantined: " + ", ".join(wrongly),
        )
    )

    incomplete = [
        f"{device['node_id']}/{device['device_id']}"
        for device in summary["devices"]
        if any(device[name] is None for name in DETECTION_FIGURES)
    ]
    targets.append(
        Target(
            "every device has detection figures",
            not incomplete,
            "all devices" if not incomplete else "missing for " + ", ".join(incomplete),
        )
    )
    return targets


def _figure(value: Any) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def format_summary(summary: dict[str, Any]) -> str:
    """Return the summary as text tables for the terminal."""
    lines = ["", "Nodes"]
    lines.append(
        f"  {'node':<18} {'federation':<10} {'compromised':<16} {'trust':>6} "
        f"{'quarantined':<11} {'at round':>8}"
    )
    for node in summary["nodes"]:
        trust = "-" if node["final_trust"] is None else f"{node['final_trust']:.1f}"
        turned = f" (turned {node['compromise_round']})" if node["compromised"] else ""
        at_round = node["quarantined_at_round"]
        compromised = ("yes" + turned) if node["compromised"] else "no"
        quarantined = "yes" if node["quarantined"] else "no"
        caught = "-" if at_round is None else str(at_round)
        lines.append(
            f"  {node['node_id']:<18} {node['federation']:<10} {compromised:<16} {trust:>6} "
            f"{quarantined:<11} {caught:>8}"
        )
    lines += ["", "Devices (test rows after training, against the data's own labels)"]
    lines.append(
        f"  {'node/device':<38} {'auc':>6} {'prec':>6} {'recall':>6} {'f1':>6} {'fpr':>6} "
        f"{'all-f1':>6}  data"
    )
    for device in summary["devices"]:
        name = f"{device['node_id']}/{device['device_id']}"
        if device["compromised_node"]:
            name += " *"
        figures = " ".join(_figure(device[key]) for key in DETECTION_FIGURES)
        lines.append(f"  {name:<38} {figures}  {device['data']}")
    latency = summary["round_latency_seconds"]
    lines += [
        "  * compromised node: figures include its falsified readings after it turned",
        "",
        f"Rounds: {summary['rounds_per_federation']}. Round duration min/median/max: "
        f"{latency['min']}/{latency['median']}/{latency['max']} s over {latency['rounds']} rounds",
        "",
        "Acceptance targets",
    ]
    for target in summary["targets"]:
        status = "PASS" if target["passed"] else "FAIL"
        lines.append(f"  [{status}] {target['name']}: {target['detail']}")
    return "\n".join(lines)
