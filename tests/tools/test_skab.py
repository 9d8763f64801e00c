"""Tests of the SKAB reader."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fltrust_data import SKAB_COLUMNS, DataMissingError, read_skab

HEADER = ";".join(["datetime", *SKAB_COLUMNS, "anomaly", "changepoint"])


def write_experiment(data_dir: Path, experiment: str, lines: list[str]) -> Path:
    """Write an experiment file the way SKAB does: semicolons and CRLF."""
    path = data_dir / "skab" / f"{experiment}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def test_valve_experiment_read(tmp_path: Path) -> None:
    write_experiment(
        tmp_path,
        "valve1/0",
        [
            HEADER,
            "2020-03-09 10:14:33;0.027;0.039;0.87;0.05;75.5;25.8;244.1;32.0;0.0;0.0",
            "2020-03-09 10:14:34;0.028;0.040;1.30;0.05;75.6;25.9;224.2;31.0;1.0;1.0",
        ],
    )

    data = read_skab(tmp_path, "valve1/0")

    assert data.name == "valve1/0"
    assert data.timestamps == (datetime(2020, 3, 9, 10, 14, 33), datetime(2020, 3, 9, 10, 14, 34))
    assert data.values.shape == (2, 8)
    np.testing.assert_array_equal(data.values[:, -1], [32.0, 31.0])
    assert data.labels is not None
    np.testing.assert_array_equal(data.labels, [0, 1])
    assert data.labels.dtype == np.int64
    assert data.changepoints is not None
    np.testing.assert_array_equal(data.changepoints, [0, 1])


def test_anomaly_free_has_no_labels(tmp_path: Path) -> None:
    write_experiment(
        tmp_path,
        "anomaly-free/anomaly-free",
        [
            ";".join(["datetime", *SKAB_COLUMNS]),
            "2020-02-08 13:30:47;0.2;0.26;2.4;0.38;89.9;33.2;223.1;125.0",
        ],
    )

    data = read_skab(tmp_path, "anomaly-free/anomaly-free")

    assert data.values.shape == (1, 8)
    assert data.labels is None
    assert data.changepoints is None


def test_label_other_than_zero_or_one_rejected(tmp_path: Path) -> None:
    write_experiment(
        tmp_path,
        "valve1/0",
        [HEADER, "2020-03-09 10:14:33;0.027;0.039;0.87;0.05;75.5;25.8;244.1;32.0;2.0;0.0"],
    )

    with pytest.raises(ValueError, match=r":2: column 'anomaly' must be 0 or 1, got '2.0'"):
        read_skab(tmp_path, "valve1/0")


@pytest.mark.parametrize("value", ["nan", "inf", "", "0,5"])
def test_invalid_reading_rejected(tmp_path: Path, value: str) -> None:
    write_experiment(
        tmp_path,
        "valve1/0",
        [HEADER, f"2020-03-09 10:14:33;{value};0.039;0.87;0.05;75.5;25.8;244.1;32.0;0.0;0.0"],
    )

    with pytest.raises(ValueError, match=r":2: column 'Accelerometer1RMS' is not a finite number"):
        read_skab(tmp_path, "valve1/0")


def test_ragged_row_rejected(tmp_path: Path) -> None:
    write_experiment(
        tmp_path,
        "valve1/0",
        [
            HEADER,
            "2020-03-09 10:14:33;0.027;0.039;0.87;0.05;75.5;25.8;244.1;32.0;0.0;0.0",
            "2020-03-09 10:14:34;0.028;0.040;1.30;0.05;75.6;25.9;224.2;31.0;0.0",
        ],
    )

    with pytest.raises(ValueError, match=r":3: 10 fields, expected 11"):
        read_skab(tmp_path, "valve1/0")


def test_missing_sensor_column_rejected(tmp_path: Path) -> None:
    write_experiment(
        tmp_path,
        "valve1/0",
        [
            HEADER.replace(";Voltage", ""),
            "2020-03-09 10:14:33;0.027;0.039;0.87;0.05;75.5;25.8;32.0;0.0;0.0",
        ],
    )

    with pytest.raises(ValueError, match="missing columns Voltage"):
        read_skab(tmp_path, "valve1/0")


def test_header_without_rows_rejected(tmp_path: Path) -> None:
    write_experiment(tmp_path, "valve1/0", [HEADER])

    with pytest.raises(ValueError, match="no data rows"):
        read_skab(tmp_path, "valve1/0")


def test_missing_data_folder_named(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match="data folder not found") as caught:
        read_skab(tmp_path / "missing", "valve1/0")

    assert "skab/" in str(caught.value)


def test_missing_experiment_named(tmp_path: Path) -> None:
    (tmp_path / "skab" / "valve1").mkdir(parents=True)

    with pytest.raises(DataMissingError, match="data file not found") as caught:
        read_skab(tmp_path, "valve1/7")

    assert "skab/valve1/7.csv" in str(caught.value)


def test_shared_experiments_read(shared_data: Path) -> None:
    # Counts from the per-file table of the shared folder's SOURCE.md.
    valve = read_skab(shared_data, "valve1/1")
    anomaly_free = read_skab(shared_data, "anomaly-free/anomaly-free")

    assert valve.values.shape == (1145, 8)
    assert valve.labels is not None
    assert int(valve.labels.sum()) == 402
    assert anomaly_free.values.shape == (9405, 8)
    assert anomaly_free.labels is None
