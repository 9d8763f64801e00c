"""Summaries of the benchmark's raw results that the page is written from."""

from __future__ import annotations

import math

import pytest
from fltrust_bench.analysis import scarce_figures


def _metrics(auc: float | None, f1: float) -> dict[str, float | None]:
    return {
        "auc": auc,
        "f1": f1,
        "precision": 0.5,
        "recall": 0.5,
        "fpr": 0.1,
        "flag_all_f1": 0.6,
    }


def _entry(federation: str, rows: int, seed: int, local_auc: float) -> dict:
    return {
        "federation": federation,
        "rows": rows,
        "seed": seed,
        "metrics": {
            "fltrust": {"a": _metrics(0.8, 0.7), "b": _metrics(0.6, 0.5)},
            "local": {"a": _metrics(local_auc, 0.4), "unlabelled": _metrics(None, 0.0)},
        },
    }


def test_scarce_figures_mean_over_nodes_then_seeds() -> None:
    figures = scarce_figures(
        [
            _entry("pump", 25, 0, local_auc=0.5),
            _entry("pump", 25, 1, local_auc=0.7),
            _entry("pump", 50, 0, local_auc=0.9),
        ]
    )

    assert sorted(figures) == ["pump"]
    assert sorted(figures["pump"]) == [25, 50]
    assert figures["pump"][25]["fltrust"]["auc"] == pytest.approx(0.7)
    assert figures["pump"][25]["fltrust"]["f1"] == pytest.approx(0.6)
    # A node without both classes in its test rows has no AUC and no F1 in the mean.
    assert figures["pump"][25]["local"]["auc"] == pytest.approx(0.6)
    assert figures["pump"][25]["local"]["f1"] == pytest.approx(0.4)
    assert figures["pump"][50]["local"]["auc"] == pytest.approx(0.9)


def test_scarce_figures_without_labelled_nodes() -> None:
    entry = _entry("gps", 25, 0, local_auc=0.5)
    entry["metrics"] = {"local": {"unlabelled": _metrics(None, 0.0)}}

    figures = scarce_figures([entry])

    assert math.isnan(figures["gps"][25]["local"]["auc"])
    assert scarce_figures([]) == {}
