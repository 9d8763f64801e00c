"""Tests of the NAB reader and its point labels from anomaly windows."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fltrust_data import DataMissingError, read_nab, read_nab_file, read_nab_windows

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_NAB = REPO_ROOT / "data" / "nab"
SERIES = "machine_temperature_system_failure"


def write_series(folder: Path, windows_folder: Path, lines: list[str], windows: list) -> Path:
    """Write a series and its windows under the key NAB uses."""
    folder.mkdir(parents=True, exist_ok=True)
    windows_folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{SERIES}.csv"
    path.write_text("\n".join(["timestamp,value", *lines]) + "\n")
    (windows_folder / "combined_windows.json").write_text(
        json.dumps({f"realKnownCause/{SERIES}.csv": windows})
    )
    return path


def test_labels_include_window_ends(tmp_path: Path) -> None:
    path = write_series(
        tmp_path,
        tmp_path,
        [
            "2014-01-07 02:50:00,70.1",
            "2014-01-07 02:55:00,70.2",
            "2014-01-07 03:00:00,70.3",
            # The clock goes back, as it does once in the real file.
            "2014-01-07 02:55:00,70.4",
            "2014-01-07 03:05:00,70",
        ],
        [["2014-01-07 02:55:00.000000", "2014-01-07 03:00:00.000000"]],
    )

    series = read_nab_file(path, tmp_path / "combined_windows.json")

    assert series.name == SERIES
    np.testing.assert_array_equal(series.labels, [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(series.values, [70.1, 70.2, 70.3, 70.4, 70.0])
    assert series.timestamps[3] == datetime(2014, 1, 7, 2, 55)
    assert series.windows == ((datetime(2014, 1, 7, 2, 55), datetime(2014, 1, 7, 3, 0)),)


def test_read_nab_uses_nab_layout(tmp_path: Path) -> None:
    root = tmp_path / "nab-realKnownCause"
    write_series(
        root / "data" / "realKnownCause",
        root / "labels",
        ["2014-01-07 02:50:00,70.1"],
        [],
    )

    series = read_nab(tmp_path, SERIES)

    np.testing.assert_array_equal(series.labels, [0])


def test_missing_windows_entry_rejected(tmp_path: Path) -> None:
    windows = tmp_path / "combined_windows.json"
    windows.write_text(json.dumps({"realKnownCause/other.csv": []}))

    with pytest.raises(ValueError, match=f"no anomaly windows for 'realKnownCause/{SERIES}.csv'"):
        read_nab_windows(windows, f"{SERIES}.csv")


def test_invalid_timestamp_rejected(tmp_path: Path) -> None:
    path = write_series(tmp_path, tmp_path, ["07/01/2014 02:50,70.1"], [])

    with pytest.raises(ValueError, match=r":2: invalid timestamp '07/01/2014 02:50'"):
        read_nab_file(path, tmp_path / "combined_windows.json")


def test_missing_data_folder_named(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match="data folder not found") as caught:
        read_nab(tmp_path / "missing", SERIES)

    assert "nab-realKnownCause/" in str(caught.value)


def test_missing_series_named(tmp_path: Path) -> None:
    (tmp_path / "nab-realKnownCause").mkdir()

    with pytest.raises(DataMissingError, match="data file not found") as caught:
        read_nab(tmp_path, SERIES)

    assert f"nab-realKnownCause/data/realKnownCause/{SERIES}.csv" in str(caught.value)


@pytest.mark.parametrize(
    ("file_name", "n_rows", "n_anomalies"),
    [
        ("ambient_temperature_system_failure.csv", 7267, 726),
        ("machine_temperature_system_failure.csv", 22695, 2268),
    ],
)
def test_shipped_series_labels(file_name: str, n_rows: int, n_anomalies: int) -> None:
    series = read_nab_file(SHIPPED_NAB / file_name, SHIPPED_NAB / "combined_windows.json")

    assert series.values.shape == (n_rows,)
    assert int(series.labels.sum()) == n_anomalies


def test_shared_series_match_shipped(shared_data: Path) -> None:
    shared = read_nab(shared_data, SERIES)
    shipped = read_nab_file(SHIPPED_NAB / f"{SERIES}.csv", SHIPPED_NAB / "combined_windows.json")

    np.testing.assert_array_equal(shared.values, shipped.values)
    np.testing.assert_array_equal(shared.labels, shipped.labels)
    assert shared.timestamps == shipped.timestamps
