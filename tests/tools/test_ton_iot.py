"""Tests of the TON_IoT reader: the formatting leaks are cleaned and bad input is rejected."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fltrust_data import TON_IOT_DEVICES, DataMissingError, read_ton_iot


def write_device_file(data_dir: Path, device: str, lines: list[str]) -> Path:
    """Write a device file the way TON_IoT does: UTF-8 with a byte order mark and CRLF."""
    folder = data_dir / "ton_iot"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TON_IOT_DEVICES[device].file_name
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8-sig"))
    return path


def test_garage_door_sphone_signal_leak_cleaned(tmp_path: Path) -> None:
    # Normal rows write the signal as padded words, attack rows as numbers.
    write_device_file(
        tmp_path,
        "garage_door",
        [
            "date,time,door_state,sphone_signal,label,type",
            "31-Mar-19,   12:36:55   ,closed,false  ,0,normal",
            "31-Mar-19,   12:36:56   ,open,true  ,0,normal",
            "25-Apr-19,04:07:06,closed,0,1,ddos",
            "25-Apr-19,04:07:07,open,1,1,ddos",
        ],
    )

    data = read_ton_iot(tmp_path, "garage_door")

    assert data.columns == ("door_state", "sphone_signal")
    np.testing.assert_array_equal(data.values, [[0, 0], [1, 1], [0, 0], [1, 1]])
    np.testing.assert_array_equal(data.labels, [0, 0, 1, 1])
    assert data.attack_types == ("normal", "normal", "ddos", "ddos")


def test_fridge_padded_condition_leak_cleaned(tmp_path: Path) -> None:
    # Only normal rows pad temp_condition with spaces.
    write_device_file(
        tmp_path,
        "fridge",
        [
            "date,time,fridge_temperature,temp_condition,label,type",
            "31-Mar-19,   12:44:48   ,7,high  ,0,normal",
            "31-Mar-19,   12:44:49   ,2.5,low ,0,normal",
            "25-Apr-19,12:44:50,9,high,1,backdoor",
            "25-Apr-19,12:44:51,1,low,1,backdoor",
        ],
    )

    data = read_ton_iot(tmp_path, "fridge")
    normal = data.values[data.labels == 0]
    attack = data.values[data.labels == 1]

    np.testing.assert_array_equal(data.values[:, 0], [7, 2.5, 9, 1])
    assert set(normal[:, 1]) == {0.0, 1.0}
    assert set(attack[:, 1]) == {0.0, 1.0}


def test_motion_light_leading_space_cleaned(tmp_path: Path) -> None:
    write_device_file(
        tmp_path,
        "motion_light",
        [
            "date,time,motion_status,light_status,label,type",
            "31-Mar-19, 04:06:47 ,1, on,0,normal",
            "31-Mar-19, 04:06:48 ,0, off,1,scanning",
        ],
    )

    data = read_ton_iot(tmp_path, "motion_light")

    np.testing.assert_array_equal(data.values, [[1, 1], [0, 0]])


def test_rows_sorted_by_parsed_time(tmp_path: Path) -> None:
    # The file groups rows by type. The two rows at 2-Apr-19 10:00:00 share a
    # second and must keep their file order.
    write_device_file(
        tmp_path,
        "thermostat",
        [
            "date,time,current_temperature,thermostat_status,label,type",
            "25-Apr-19,09:00:00,30.57732541,1,1,injection",
            "2-Apr-19,10:00:00,25,0,0,normal",
            "2-Apr-19,10:00:00,26,1,0,normal",
            "31-Mar-19,23:59:59,27,0,1,password",
        ],
    )

    data = read_ton_iot(tmp_path, "thermostat")

    assert data.timestamps == (
        datetime(2019, 3, 31, 23, 59, 59),
        datetime(2019, 4, 2, 10, 0, 0),
        datetime(2019, 4, 2, 10, 0, 0),
        datetime(2019, 4, 25, 9, 0, 0),
    )
    np.testing.assert_array_equal(data.values[:, 0], [27, 25, 26, 30.57732541])
    np.testing.assert_array_equal(data.labels, [1, 0, 0, 1])
    assert data.values.dtype == np.float64
    assert data.labels.dtype == np.int64


THERMOSTAT_HEADER = "date,time,current_temperature,thermostat_status,label,type"


@pytest.mark.parametrize(
    ("device", "lines", "message"),
    [
        (
            "thermostat",
            [THERMOSTAT_HEADER, "2-Apr-19,10:00:00,25,true,0,normal"],
            r":2: column 'thermostat_status' .*'true'",
        ),
        (
            "garage_door",
            ["date,time,door_state,sphone_signal,label,type", "2-Apr-19,10:00:00,ajar,0,0,normal"],
            r"'door_state' is neither a number nor one of open",
        ),
        (
            "thermostat",
            [THERMOSTAT_HEADER, "2-Apr-19,10:00:00,25,0,1,normal"],
            r":2: label 1 contradicts type 'normal'",
        ),
    ],
    ids=["word in numeric column", "unknown word", "label contradicts type"],
)
def test_bad_row_rejected(tmp_path: Path, device: str, lines: list[str], message: str) -> None:
    write_device_file(tmp_path, device, lines)

    with pytest.raises(ValueError, match=message):
        read_ton_iot(tmp_path, device)


@pytest.mark.parametrize("date", ["2019-04-02", "2-Avr-19", "31-Feb-19", "2-Apr"])
def test_invalid_date_rejected(tmp_path: Path, date: str) -> None:
    write_device_file(
        tmp_path,
        "thermostat",
        [THERMOSTAT_HEADER, f"{date},10:00:00,25,0,0,normal"],
    )

    with pytest.raises(ValueError, match=r":2: invalid date or time"):
        read_ton_iot(tmp_path, "thermostat")


def test_missing_column_rejected(tmp_path: Path) -> None:
    write_device_file(
        tmp_path,
        "thermostat",
        ["date,time,current_temperature,label,type", "2-Apr-19,10:00:00,25,0,normal"],
    )

    with pytest.raises(ValueError, match="missing columns thermostat_status"):
        read_ton_iot(tmp_path, "thermostat")


def test_unknown_device_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid TON_IoT device 'toaster'"):
        read_ton_iot(tmp_path, "toaster")


def test_missing_data_folder_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing"

    with pytest.raises(DataMissingError, match="data folder not found") as caught:
        read_ton_iot(missing, "thermostat")

    assert str(missing) in str(caught.value)
    assert "ton_iot/" in str(caught.value)


def test_missing_device_file_named(tmp_path: Path) -> None:
    (tmp_path / "ton_iot").mkdir()

    with pytest.raises(DataMissingError, match="data file not found") as caught:
        read_ton_iot(tmp_path, "thermostat")

    assert "ton_iot/Train_Test_IoT_Thermostat.csv" in str(caught.value)


# Rows and normal rows per device file, as counted in the shared folder's SOURCE.md.
SHARED_COUNTS = {
    "fridge": (39944, 15000),
    "garage_door": (39587, 15000),
    "gps_tracker": (38960, 15000),
    "motion_light": (39488, 15000),
    "thermostat": (32774, 15000),
}


@pytest.mark.parametrize("device", sorted(SHARED_COUNTS))
def test_shared_files_read_clean(shared_data: Path, device: str) -> None:
    data = read_ton_iot(shared_data, device)
    n_rows, n_normal = SHARED_COUNTS[device]

    assert data.values.shape == (n_rows, 2)
    assert int((data.labels == 0).sum()) == n_normal
    assert np.isfinite(data.values).all()
    assert list(data.timestamps) == sorted(data.timestamps)
    assert data.timestamps[0] >= datetime(2019, 3, 31)
    assert data.timestamps[-1] < datetime(2019, 4, 30)


@pytest.mark.parametrize(
    ("device", "column"),
    [
        ("fridge", "temp_condition"),
        ("garage_door", "sphone_signal"),
        ("motion_light", "light_status"),
    ],
)
def test_shared_leak_columns_same_in_both_classes(
    shared_data: Path, device: str, column: str
) -> None:
    # Before cleaning, these columns tell normal rows from attack rows by their
    # padding or by word versus number.
    data = read_ton_iot(shared_data, device)
    values = data.values[:, data.columns.index(column)]

    assert set(values[data.labels == 0]) == {0.0, 1.0}
    assert set(values[data.labels == 1]) == {0.0, 1.0}
