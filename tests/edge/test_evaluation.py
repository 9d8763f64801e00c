"""Tests of the detection metrics written by --results."""

import json

import numpy as np
import pytest
from fltrust_edge.evaluation import DeviceEvaluation, build_results, device_metrics, write_results


def test_device_metrics_values():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.05])

    metrics = device_metrics(labels, scores, threshold=0.5)

    assert metrics["precision"] == pytest.approx(0.5)
    assert metrics["recall"] == pytest.approx(0.5)
    assert metrics["f1"] == pytest.approx(0.5)
    assert metrics["fpr"] == pytest.approx(0.25)
    assert metrics["auc"] == pytest.approx(3 / 8)
    assert metrics["flag_all_f1"] == pytest.approx(2 * (2 / 6) / (1 + 2 / 6))
    assert metrics["n_rows"] == 6
    assert metrics["n_anomalies"] == 2
    assert metrics["threshold"] == 0.5


def test_device_metrics_one_class_has_no_auc():
    metrics = device_metrics(np.zeros(10, dtype=int), np.arange(10.0), threshold=8.5)

    assert metrics["auc"] is None
    assert metrics["fpr"] == pytest.approx(0.1)
    assert metrics["precision"] == 0.0
    assert metrics["flag_all_f1"] == 0.0


def test_device_metrics_no_normal_rows():
    metrics = device_metrics(np.ones(4, dtype=int), np.arange(4.0), threshold=1.5)

    assert metrics["fpr"] is None
    assert metrics["recall"] == pytest.approx(0.5)


def test_build_results_without_labels_or_detector():
    devices = [
        DeviceEvaluation("a", "k", None, np.zeros(3), 1.0, "local", 3, 20),
        DeviceEvaluation("b", "k", np.array([0, 1]), None, None, None, 2, 5),
    ]

    results = build_results("node-1", 2, [2, 1], 4, devices)

    assert results["rounds_joined"] == 2
    assert results["rounds"] == [1, 2]
    assert results["model_version"] == 4
    assert results["devices"]["a"]["auc"] is None
    assert results["devices"]["a"]["n_anomalies"] is None
    assert results["devices"]["a"]["threshold"] == 1.0
    assert results["devices"]["b"]["n_anomalies"] == 1
    assert results["devices"]["b"]["model"] is None
    assert results["devices"]["b"]["n_train_rows"] == 5


def test_write_results_is_json(tmp_path):
    devices = [
        DeviceEvaluation("a", "k", np.array([0, 1]), np.array([0.0, 1.0]), 0.5, "global", 2, 9)
    ]
    path = tmp_path / "results.json"

    write_results(path, build_results("node-1", 0, [], 1, devices))

    document = json.loads(path.read_text())
    assert document["devices"]["a"]["auc"] == 1.0
    assert document["devices"]["a"]["f1"] == 1.0
    assert document["devices"]["a"]["replay_error"] is None
    assert [entry.name for entry in tmp_path.iterdir()] == ["results.json"]


def test_write_results_needs_directory(tmp_path):
    path = tmp_path / "missing" / "results.json"

    with pytest.raises(FileNotFoundError):
        write_results(path, build_results("node-1", 0, [], 1, []))

    assert not (tmp_path / "missing").exists()


def test_write_results_to_directory_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "results"
    target.mkdir()

    with pytest.raises(IsADirectoryError):
        write_results(target, build_results("node-1", 0, [], 1, []))

    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["results"]
