"""Tests of the CSV replay and the MQTT sensor source."""

import json
import threading

import pytest
from fltrust_edge.config import load_config
from fltrust_edge.csvfile import CsvFormatError
from fltrust_edge.labels import load_label_windows, parse_timestamp
from fltrust_edge.sources import CsvReplay, MqttSensor, extract_value

from .conftest import base_config, write_config, write_csv


def csv_device(tmp_path, **source_overrides):
    data = base_config(tmp_path)
    data["devices"][0]["source"].update(source_overrides)
    for key in [k for k, v in source_overrides.items() if v is None]:
        del data["devices"][0]["source"][key]
    return load_config(write_config(tmp_path, data)).devices[0]


def test_parse_timestamp_formats():
    assert parse_timestamp("1970-01-01 00:01:00") == 60.0
    assert parse_timestamp("1970-01-01T00:01:00+01:00") == -3540.0
    assert parse_timestamp("2013-12-10 06:25:00.000000") == parse_timestamp("2013-12-10 06:25:00")
    assert parse_timestamp(" 1700000000.5 ") == 1700000000.5


@pytest.mark.parametrize("text", ["yesterday", "nan", ""])
def test_parse_timestamp_rejects(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_csv_replay_reads_values_and_labels(tmp_path):
    replay = CsvReplay(csv_device(tmp_path))

    samples = list(replay.samples())

    assert len(samples) == 800
    assert samples[0].device_id == "sensor-1"
    assert samples[0].row == 0
    assert len(samples[0].values) == 1
    assert sum(s.label for s in samples) == 80
    assert samples[600].label == 1
    assert samples[599].label == 0
    assert samples[1].timestamp - samples[0].timestamp == 300.0


def test_csv_replay_row_slice(tmp_path):
    replay = CsvReplay(csv_device(tmp_path, start_row=590, end_row=610))

    samples = list(replay.samples())

    assert [s.row for s in samples] == list(range(590, 610))
    assert sum(s.label for s in samples) == 10


def test_csv_replay_skips_invalid_rows(tmp_path, caplog):
    path = tmp_path / "dirty.csv"
    path.write_text(
        "\ufefftimestamp;value;label\n"
        "2024-01-01 00:00:00; 1.5 ;0\n"
        "2024-01-01 00:05:00;n/a;0\n"
        "2024-01-01 00:10:00;nan;0\n"
        "2024-01-01 00:12:00;1e308;0\n"
        "not a time;2.0;0\n"
        "2024-01-01 00:20:00;2.5\n"
        "\n"
        "2024-01-01 00:25:00;3.5;1.0\n"
    )
    device = csv_device(tmp_path, path=str(path), delimiter=";")
    replay = CsvReplay(device)

    with caplog.at_level("WARNING"):
        samples = list(replay.samples())

    assert [s.values for s in samples] == [(1.5,), (3.5,)]
    assert [s.label for s in samples] == [0, 1]
    assert replay.skipped_rows == 5
    assert "skipped 5 invalid rows" in caplog.text
    assert replay.first_problem == "row 1: column 'value': could not convert string to float: 'n/a'"


def test_csv_replay_names_column_of_missing_cell(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("timestamp,value,label\n2024-01-01 00:00:00,1.5\n2024-01-01 00:05:00,1.6,0\n")
    replay = CsvReplay(csv_device(tmp_path, path=str(path)))

    samples = list(replay.samples())

    assert [s.values for s in samples] == [(1.6,)]
    assert replay.first_problem == "row 0: column 'label': missing"


def test_csv_replay_without_timestamp_uses_row_number(tmp_path):
    device = csv_device(tmp_path, timestamp_column=None, end_row=3)

    samples = list(CsvReplay(device).samples())

    assert [s.timestamp for s in samples] == [0.0, 1.0, 2.0]


def test_csv_replay_label_windows(tmp_path):
    csv_path = write_csv(tmp_path / "nab.csv", n_rows=50, anomaly_rows=None, with_label=False)
    windows = tmp_path / "combined_windows.json"
    windows.write_text(
        json.dumps(
            {
                "data/nab.csv": [
                    ["2024-01-01 01:00:00.000000", "2024-01-01 02:00:00.000000"],
                ],
                "other.csv": [],
            }
        )
    )
    device = csv_device(
        tmp_path,
        path=str(csv_path),
        label_column=None,
        label_windows=str(windows),
        label_windows_key="data/nab.csv",
    )

    samples = list(CsvReplay(device).samples())

    flagged = [s.row for s in samples if s.label == 1]
    assert flagged == list(range(12, 25))


def test_label_windows_missing_key(tmp_path):
    windows = tmp_path / "windows.json"
    windows.write_text(json.dumps({"a.csv": []}))

    with pytest.raises(ValueError, match=r"no entry 'b\.csv'"):
        load_label_windows(windows, "b.csv")


def test_csv_replay_emits_all_rows_at_rate(tmp_path):
    replay = CsvReplay(csv_device(tmp_path, end_row=50, rows_per_second=5000.0))
    emitted = []

    count = replay.run(emitted.append, threading.Event())

    assert count == 50
    assert [s.row for s in emitted] == list(range(50))


def test_csv_replay_paces_rows(tmp_path):
    replay = CsvReplay(csv_device(tmp_path, end_row=5, rows_per_second=10.0))
    waits = []

    class RecordingEvent(threading.Event):
        def wait(self, timeout=None):
            waits.append(timeout)
            return False

    now = [0.0]
    replay.run(lambda sample: None, RecordingEvent(), clock=lambda: now[0])

    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_csv_replay_speedup_uses_timestamps(tmp_path):
    replay = CsvReplay(csv_device(tmp_path, end_row=3, rows_per_second=None, speedup=300.0))
    waits = []

    class RecordingEvent(threading.Event):
        def wait(self, timeout=None):
            waits.append(timeout)
            return False

    replay.run(lambda sample: None, RecordingEvent(), clock=lambda: 0.0)

    assert waits == pytest.approx([1.0, 2.0])


def test_csv_replay_stops_on_event(tmp_path):
    replay = CsvReplay(csv_device(tmp_path, rows_per_second=1.0))
    stop = threading.Event()
    stop.set()

    assert replay.run(lambda sample: None, stop) == 0


@pytest.mark.parametrize("rows_per_second", [1e-20, 5e-324])
def test_csv_replay_slow_pace_waits_until_stopped(tmp_path, rows_per_second):
    replay = CsvReplay(csv_device(tmp_path, rows_per_second=rows_per_second))
    stop = threading.Event()
    emitted = []
    timer = threading.Timer(0.2, stop.set)
    timer.start()

    try:
        count = replay.run(emitted.append, stop)
    finally:
        timer.cancel()

    assert count == 1
    assert [sample.row for sample in emitted] == [0]


def test_csv_replay_large_timestamp_gap(tmp_path):
    path = tmp_path / "gap.csv"
    path.write_text("timestamp,value\n0,1.0\n1e300,2.0\n")
    device = csv_device(
        tmp_path, path=str(path), label_column=None, rows_per_second=None, speedup=1.0
    )
    replay = CsvReplay(device)
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()

    try:
        count = replay.run(lambda sample: None, stop)
    finally:
        timer.cancel()

    assert count == 1


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (b"2024-01-01 00:05:00,\xff\xfe,0\n", "line 3: invalid UTF-8, byte 0xff at character 21"),
        (
            b'2024-01-01 00:05:00,"' + b"1" * 200_000 + b'",0\n',
            "line 3: invalid CSV: field larger than field limit (131072)",
        ),
        (
            b'"unterminated,1\n2024-01-01 00:10:00,2.5,0\n',
            "line 3: invalid CSV: a quote opened here is never closed",
        ),
        (
            b'2024-01-01 00:05:00,"2.5\n2024-01-01 00:10:00,2.5",0\n',
            "line 3: invalid CSV: a quoted field runs from this line to line 4, "
            "so a quote is probably not closed (fields must not contain line breaks)",
        ),
        (
            b'2024-01-01 00:05:00,"2.5"x,0\n',
            "line 3: invalid CSV: ',' expected after '\"'",
        ),
    ],
    ids=["non-UTF-8", "huge field", "unclosed quote", "line break in field", "text after quote"],
)
def test_csv_replay_unreadable_line(tmp_path, tail, message):
    path = tmp_path / "broken.csv"
    head = b"timestamp,value,label\n2024-01-01 00:00:00,1.5,0\n"
    path.write_bytes(head)
    replay = CsvReplay(csv_device(tmp_path, path=str(path)))
    # The file changes after the configuration was checked.
    path.write_bytes(head + tail)
    emitted = []

    with pytest.raises(CsvFormatError) as info:
        replay.run(emitted.append, threading.Event())

    assert str(info.value) == f"{path} {message}"
    assert [sample.row for sample in emitted] == [0]
    assert replay.emitted == 1


def test_csv_replay_non_utf8_line_number(tmp_path):
    path = write_csv(tmp_path / "series.csv", n_rows=200)
    replay = CsvReplay(csv_device(tmp_path, path=str(path)))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[101] = lines[101].replace(b",0\n", b",\xe90\n")
    path.write_bytes(b"".join(lines))

    with pytest.raises(CsvFormatError, match=r"line 102: invalid UTF-8, byte 0xe9"):
        list(replay.samples())


def test_csv_replay_start_row_past_end_warns(tmp_path, caplog):
    path = write_csv(tmp_path / "series.csv", n_rows=50)
    replay = CsvReplay(csv_device(tmp_path, path=str(path), start_row=10))
    write_csv(path, n_rows=5)

    with caplog.at_level("WARNING"):
        samples = list(replay.samples())

    assert samples == []
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert caplog.records[0].getMessage() == (
        f"sensor-1: start_row 10 is past the end of {path}, which has 5 data rows, "
        "so no row was replayed"
    )


@pytest.mark.parametrize(
    ("payload", "path", "expected"),
    [
        (b"21.5", None, 21.5),
        (b" 7 \n", None, 7.0),
        (b"ON", None, 1.0),
        (b"off", None, 0.0),
        (b'{"temperature": 21.5, "humidity": 40}', "temperature", 21.5),
        (b'{"a": {"b": -3}}', "a.b", -3.0),
        (b'{"occupancy": true}', "occupancy", 1.0),
        (b'{"values": [1, 2.5]}', "values.1", 2.5),
        (b'{"t": "19.25"}', "t", 19.25),
    ],
)
def test_extract_value(payload, path, expected):
    assert extract_value(payload, path) == expected


@pytest.mark.parametrize(
    ("payload", "path", "message"),
    [
        (b"warm", None, "payload is not a number"),
        (b"NaN", None, "not finite"),
        (b"\xff\xfe", None, "not UTF-8"),
        (b"21.5", "temperature", "no value at 'temperature'"),
        (b"{temperature: 1}", "temperature", "not JSON"),
        (b'{"humidity": 40}', "temperature", "no value at 'temperature'"),
        (b'{"a": {"b": null}}', "a.b", "a.b is not a number"),
        (b'{"a": [1]}', "a.3", "no value at 'a.3'"),
        (b'{"t": "Infinity"}', "t", "not finite"),
        (b"1e200", None, "payload is out of range: 1e\\+200, beyond ±1e\\+15"),
        (b'{"t": -2e15}', "t", "t is out of range"),
        (b'{"t": 1' + b"0" * 400 + b"}", "t", "t is out of range: an integer of 401 digits"),
        (b'{"t": {"x": 1}}', "t", "t is not a number: dict"),
        (b'{"t":' * 50_000, "t", "payload nests too deeply"),
        (b"[" * 50_000, None, "payload is not a number"),
    ],
)
def test_extract_value_rejects(payload, path, message):
    with pytest.raises(ValueError, match=message):
        extract_value(payload, path)


def mqtt_device(tmp_path, topics, features=("temperature",)):
    data = base_config(tmp_path)
    data["devices"] = [
        {
            "id": "zigbee-1",
            "kind": "climate",
            "features": list(features),
            "source": {"type": "mqtt", "topics": topics},
        }
    ]
    return load_config(write_config(tmp_path, data)).devices[0]


def test_mqtt_sensor_json_value_path(tmp_path):
    device = mqtt_device(
        tmp_path,
        [
            {"topic": "zigbee2mqtt/kitchen", "feature": "temperature", "value_path": "temperature"},
            {"topic": "zigbee2mqtt/kitchen", "feature": "humidity", "value_path": "humidity"},
        ],
        features=("temperature", "humidity"),
    )
    sensor = MqttSensor(device)

    sample = sensor.handle(
        "zigbee2mqtt/kitchen", b'{"temperature": 21.5, "humidity": 40, "battery": 90}', 100.0
    )

    assert sensor.topics == ("zigbee2mqtt/kitchen",)
    assert sample is not None
    assert sample.values == (21.5, 40.0)
    assert sample.timestamp == 100.0
    assert sample.label is None


def test_mqtt_sensor_waits_for_every_feature(tmp_path):
    device = mqtt_device(
        tmp_path,
        [
            {"topic": "esphome/t", "feature": "temperature"},
            {"topic": "esphome/h", "feature": "humidity"},
        ],
        features=("temperature", "humidity"),
    )
    sensor = MqttSensor(device)

    first = sensor.handle("esphome/t", b"20.0", 1.0)
    second = sensor.handle("esphome/h", b"55", 2.0)
    third = sensor.handle("esphome/t", b"21.0", 3.0)

    assert first is None
    assert second is not None
    assert second.values == (20.0, 55.0)
    assert third is not None
    assert third.values == (21.0, 55.0)


def test_mqtt_sensor_skips_bad_payloads(tmp_path, caplog):
    device = mqtt_device(
        tmp_path,
        [{"topic": "zigbee2mqtt/x", "feature": "temperature", "value_path": "temperature"}],
    )
    sensor = MqttSensor(device)

    with caplog.at_level("WARNING"):
        results = [
            sensor.handle("zigbee2mqtt/x", payload, 1.0)
            for payload in (b"garbage", b'{"temperature": "hot"}', b'{"temperature": NaN}', b"")
        ]
    good = sensor.handle("zigbee2mqtt/x", b'{"temperature": 19.0}', 2.0)

    assert results == [None, None, None, None]
    assert sensor.rejected == 4
    assert "skipped reading of temperature on zigbee2mqtt/x" in caplog.text
    assert good is not None
    assert good.values == (19.0,)


def test_mqtt_sensor_ignores_other_topics(tmp_path):
    device = mqtt_device(tmp_path, [{"topic": "a/b", "feature": "temperature"}])

    assert MqttSensor(device).handle("a/c", b"1.0", 1.0) is None
