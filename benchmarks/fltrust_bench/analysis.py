"""Summaries of the raw grid results: detection figures, robustness, trust and targets.

Conventions used throughout:

- A run's figure of a method is the mean, over the run's honest nodes whose
  test rows hold both classes, of that node's ROC AUC, precision, recall and
  F1 at its calibrated threshold (FPR over every honest node).
- A run's change is that figure minus the same method's figure in the
  attack-free run with the same seed, over the same nodes, so that a node
  that became malicious is left out of both.
- A cell is one federation, attack and malicious fraction; its figures are
  means over seeds.
- Rounds to quarantine count attack rounds: 1 means quarantined when the
  round in which the node started to attack closed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FLOWER_METHODS = ("FedAvg", "Krum", "Multi-Krum", "FedMedian", "FedTrimmedAvg", "Bulyan")
MAIN_METHODS = ("fltrust", *FLOWER_METHODS)
# fltrust's global model blended on each node with a model of its own rows.
PERSONALIZED = "fltrust, personalized"
CANDIDATE_PREFIX = "candidate: "
QUARANTINE_TARGET_ROUNDS = 3


def _mean(values: Iterable[float | None]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def run_figures(
    per_node: dict[str, dict[str, float | None]], nodes: Iterable[str] | None = None
) -> dict[str, float]:
    """Return a method's mean figures over ``nodes`` (default: all) of one run."""
    chosen = list(per_node) if nodes is None else [n for n in nodes if n in per_node]
    labelled = [n for n in chosen if per_node[n].get("auc") is not None]
    return {
        "auc": _mean(per_node[n]["auc"] for n in labelled),
        "f1": _mean(per_node[n]["f1"] for n in labelled),
        "precision": _mean(per_node[n]["precision"] for n in labelled),
        "recall": _mean(per_node[n]["recall"] for n in labelled),
        "flag_all_f1": _mean(per_node[n]["flag_all_f1"] for n in labelled),
        "fpr": _mean(per_node[n]["fpr"] for n in chosen),
    }


@dataclass
class Cell:
    """Figures of one method in one cell, one entry per seed."""

    auc: list[float] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    delta_auc: list[float] = field(default_factory=list)
    delta_f1: list[float] = field(default_factory=list)

    def mean(self, name: str) -> float:
        """Return the mean over seeds of one figure."""
        return _mean(getattr(self, name))


def clean_runs(runs: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Return the attack-free run of each federation and seed."""
    return {
        (r["spec"]["federation"], r["spec"]["seed"]): r
        for r in runs
        if r["spec"]["attack"] == "none"
    }


def cells(runs: list[dict[str, Any]]) -> dict[tuple[str, str, float, str], Cell]:
    """Return (federation, attack, fraction, method) -> Cell for every attacked run."""
    clean = clean_runs(runs)
    result: dict[tuple[str, str, float, str], Cell] = defaultdict(Cell)
    for run in runs:
        spec = run["spec"]
        if spec["attack"] == "none":
            continue
        reference = clean.get((spec["federation"], spec["seed"]))
        for method, per_node in run["metrics"].items():
            nodes = list(per_node)
            now = run_figures(per_node, nodes)
            cell = result[(spec["federation"], spec["attack"], spec["fraction"], method)]
            cell.auc.append(now["auc"])
            cell.f1.append(now["f1"])
            if reference is not None and method in reference["metrics"]:
                before = run_figures(reference["metrics"][method], nodes)
                cell.delta_auc.append(now["auc"] - before["auc"])
                cell.delta_f1.append(now["f1"] - before["f1"])
    return result


def clean_figures(
    runs: list[dict[str, Any]], references: list[dict[str, Any]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Return federation -> method -> mean attack-free figures over seeds.

    Includes the local-only and centralized references, on the same nodes.
    """
    collected: dict[str, dict[str, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for (federation, _seed), run in clean_runs(runs).items():
        for method, per_node in run["metrics"].items():
            collected[federation][method].append(run_figures(per_node))
    for reference in references:
        for method in ("local", "central", "central_typical"):
            if method in reference:
                collected[reference["federation"]][method].append(run_figures(reference[method]))
    return {
        federation: {
            method: {
                name: _mean(entry[name] for entry in entries)
                for name in ("auc", "f1", "precision", "recall", "fpr", "flag_all_f1")
            }
            for method, entries in by_method.items()
        }
        for federation, by_method in collected.items()
    }


def scarce_figures(
    scarce: list[dict[str, Any]],
) -> dict[str, dict[int, dict[str, dict[str, float]]]]:
    """Return federation -> training rows per node -> method -> mean AUC and F1 over seeds."""
    collected: dict[tuple[str, int, str], list[dict[str, float]]] = defaultdict(list)
    for entry in scarce:
        for method, per_node in entry["metrics"].items():
            collected[(entry["federation"], entry["rows"], method)].append(run_figures(per_node))
    result: dict[str, dict[int, dict[str, dict[str, float]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for (federation, rows, method), entries in collected.items():
        result[federation][rows][method] = {
            name: _mean(entry[name] for entry in entries) for name in ("auc", "f1")
        }
    return {federation: dict(by_rows) for federation, by_rows in result.items()}


def quarantine_round(history: list[list[Any]]) -> int | None:
    """Return the first round whose status is quarantined, or None."""
    for round_number, _score, status in history:
        if status == "quarantined":
            return int(round_number)
    return None


@dataclass
class TrustSummary:
    """Trust outcomes of one method over a set of runs."""

    # (federation, attack, fraction, seed, node, attack rounds until quarantine or None)
    malicious: list[tuple[str, str, float, int, str, int | None]] = field(default_factory=list)
    # (federation, attack, fraction, seed, node) of honest nodes that were quarantined
    benign_quarantined: list[tuple[str, str, float, int, str]] = field(default_factory=list)
    # node -> lowest and final trust of honest nodes with atypical data, over all runs
    different_min: dict[str, float] = field(default_factory=dict)
    different_final: dict[str, list[float]] = field(default_factory=dict)
    benign_min: float = math.inf

    def within_target(self) -> float:
        """Return the share of malicious nodes quarantined within the target rounds."""
        if not self.malicious:
            return math.nan
        hits = [r for *_, r in self.malicious if r is not None and r <= QUARANTINE_TARGET_ROUNDS]
        return len(hits) / len(self.malicious)


def trust_summary(
    runs: list[dict[str, Any]], method: str, different: dict[str, set[str]]
) -> TrustSummary:
    """Return the trust outcomes of ``method`` over ``runs``.

    ``different`` maps each federation to its honest nodes with atypical data.
    """
    summary = TrustSummary()
    for run in runs:
        spec = run["spec"]
        histories = run["trust"].get(method)
        if histories is None:
            continue
        federation = spec["federation"]
        key = (federation, spec["attack"], spec["fraction"], spec["seed"])
        for node, history in histories.items():
            quarantined = quarantine_round(history)
            if node in run["malicious"]:
                rounds = None if quarantined is None else quarantined - spec["attack_start"] + 1
                summary.malicious.append((*key, node, rounds))
                continue
            if quarantined is not None:
                summary.benign_quarantined.append((*key, node))
            lowest = min(score for _, score, _ in history)
            summary.benign_min = min(summary.benign_min, lowest)
            if node in different.get(federation, set()):
                summary.different_min[node] = min(summary.different_min.get(node, math.inf), lowest)
                summary.different_final.setdefault(node, []).append(history[-1][1])
    return summary


def methods_over_grid(
    grid: dict[tuple[str, str, float, str], Cell], methods: Iterable[str]
) -> dict[str, dict[str, float]]:
    """Return method -> mean AUC and F1 over every attacked cell of the grid."""
    return {
        method: {
            "auc": _mean(c.mean("auc") for k, c in grid.items() if k[3] == method),
            "f1": _mean(c.mean("f1") for k, c in grid.items() if k[3] == method),
            "delta_auc": _mean(c.mean("delta_auc") for k, c in grid.items() if k[3] == method),
            "delta_f1": _mean(c.mean("delta_f1") for k, c in grid.items() if k[3] == method),
            "worst_delta_auc": min(
                (c.mean("delta_auc") for k, c in grid.items() if k[3] == method), default=math.nan
            ),
        }
        for method in methods
    }


def by_fraction(
    runs: list[dict[str, Any]], methods: Iterable[str]
) -> dict[str, dict[str, dict[float, dict[str, float]]]]:
    """Return federation -> method -> fraction -> mean AUC and F1 over attacks and seeds.

    Fraction 0 is the attack-free run.
    """
    collected: dict[str, dict[str, dict[float, list[dict[str, float]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    selected = set(methods)
    for run in runs:
        spec = run["spec"]
        for method, per_node in run["metrics"].items():
            if method in selected:
                collected[spec["federation"]][method][spec["fraction"]].append(
                    run_figures(per_node)
                )
    return {
        federation: {
            method: {
                fraction: {
                    "auc": _mean(e["auc"] for e in entries),
                    "f1": _mean(e["f1"] for e in entries),
                }
                for fraction, entries in sorted(by_frac.items())
            }
            for method, by_frac in by_method.items()
        }
        for federation, by_method in collected.items()
    }
