"""PNG plots of the benchmark, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from .analysis import MAIN_METHODS, PERSONALIZED

COLORS = {
    "fltrust": "#d62728",
    "FedAvg": "#7f7f7f",
    "Krum": "#1f77b4",
    "Multi-Krum": "#17becf",
    "FedMedian": "#2ca02c",
    "FedTrimmedAvg": "#bcbd22",
    "Bulyan": "#9467bd",
}
SCARCE_STYLES = {
    "fltrust": ("fltrust", "#d62728", "-"),
    PERSONALIZED: (PERSONALIZED, "#ff7f0e", "-"),
    "local": ("local-only", "#1f77b4", "--"),
    "central_typical": ("centralized, typical nodes", "#7f7f7f", ":"),
}
REAUTH_THRESHOLD = 60.0
QUARANTINE_THRESHOLD = 30.0


def plot_trust(
    panels: list[tuple[str, dict[str, Any]]], different: dict[str, set[str]], path: Path
) -> None:
    """Plot fltrust's trust score over rounds for benign, different and malicious nodes.

    ``panels`` contains (title, run) pairs, each run a compact grid result.
    """
    columns = 2
    rows = (len(panels) + 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(11, 3.6 * rows), squeeze=False)
    for axis, (title, run) in zip(axes.ravel(), panels, strict=False):
        federation = run["spec"]["federation"]
        for node, history in sorted(run["trust"]["fltrust"].items()):
            rounds = [r for r, _, _ in history]
            scores = [s for _, s, _ in history]
            if node in run["malicious"]:
                style = {"color": "#d62728", "lw": 1.6, "label": "malicious"}
            elif node in different.get(federation, set()):
                style = {"color": "#1f77b4", "lw": 1.6, "label": "honest, atypical data"}
            else:
                style = {"color": "#7f7f7f", "lw": 0.9, "alpha": 0.7, "label": "honest"}
            axis.plot(rounds, scores, **style)
        axis.axhline(REAUTH_THRESHOLD, color="k", ls=":", lw=0.8)
        axis.axhline(QUARANTINE_THRESHOLD, color="k", ls="--", lw=0.8)
        axis.axvline(run["spec"]["attack_start"] - 0.5, color="#d62728", ls=":", lw=0.8)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("round")
        axis.set_ylabel("trust score")
        axis.set_ylim(0, 100)
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        axis.legend(unique.values(), unique.keys(), fontsize=7, loc="lower left")
    for axis in axes.ravel()[len(panels) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_fractions(
    figures: dict[str, dict[str, dict[float, dict[str, float]]]], path: Path
) -> None:
    """Plot mean ROC AUC and F1 against the malicious fraction, one line per method."""
    federations = sorted(figures)
    figure, axes = plt.subplots(
        len(federations), 2, figsize=(10, 3.2 * len(federations)), squeeze=False
    )
    for row, federation in enumerate(federations):
        for column, metric in enumerate(("auc", "f1")):
            axis = axes[row, column]
            for method in MAIN_METHODS:
                series = figures[federation].get(method)
                if not series:
                    continue
                fractions = sorted(series)
                axis.plot(
                    [100 * f for f in fractions],
                    [series[f][metric] for f in fractions],
                    marker="o",
                    ms=3,
                    lw=2.2 if method == "fltrust" else 1.1,
                    color=COLORS[method],
                    label=method,
                )
            axis.set_title(f"{federation}: {'ROC AUC' if metric == 'auc' else 'F1'}", fontsize=9)
            axis.set_xlabel("malicious nodes (%)")
            axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_costs(costs: list[dict[str, Any]], path: Path) -> None:
    """Plot aggregation seconds per round against the number of nodes, log-log."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for method in MAIN_METHODS:
        points = [
            (row["nodes"], row["seconds"])
            for row in costs
            if row["method"] == method and row["seconds"] is not None
        ]
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", color=COLORS[method], label=method)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("nodes")
    axis.set_ylabel("seconds per round")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_scarce(figures: dict[str, dict[int, dict[str, dict[str, float]]]], path: Path) -> None:
    """Plot attack-free ROC AUC against the training rows per node, one panel per federation."""
    federations = sorted(figures)
    figure, axes = plt.subplots(
        1, len(federations), figsize=(4.2 * len(federations), 3.4), squeeze=False
    )
    for axis, federation in zip(axes[0], federations, strict=True):
        sizes = sorted(figures[federation])
        for method, (label, color, style) in SCARCE_STYLES.items():
            points = [
                (rows, figures[federation][rows][method]["auc"])
                for rows in sizes
                if method in figures[federation][rows]
            ]
            if points:
                axis.plot(
                    *zip(*points, strict=True), marker="o", ms=3, color=color, ls=style, label=label
                )
        axis.set_xscale("log")
        axis.minorticks_off()
        axis.set_xticks(sizes, [str(rows) for rows in sizes])
        axis.set_title(f"{federation}: ROC AUC", fontsize=9)
        axis.set_xlabel("training rows per node")
        axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
