"""Tests of configuration loading and validation."""

import copy
from pathlib import Path

import pytest
from fltrust_edge.config import (
    ConfigError,
    CsvSourceConfig,
    MqttSourceConfig,
    load_config,
    parse_config,
)

from .conftest import NODE_ID, base_config, node_key, write_config, write_csv


def load_error(tmp_path: Path, data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, data))
    return str(info.value)


def test_valid_config_loads(tmp_path):
    config = load_config(write_config(tmp_path, base_config(tmp_path)))

    assert config.node_id == NODE_ID
    assert config.mqtt.prefix == "fltest"
    assert config.mqtt.client_id == f"fltrust-edge-{NODE_ID}"
    assert config.security.node_key == node_key()
    assert config.detection.train_rows == 200
    assert config.detection.extra_features == ("trend", "std")
    assert len(config.devices) == 1
    source = config.devices[0].source
    assert isinstance(source, CsvSourceConfig)
    assert source.value_columns == ("value",)
    assert source.rows_per_second == 2000.0


def test_defaults_apply(tmp_path):
    data = base_config(tmp_path)
    del data["detection"]
    data["mqtt"] = {"host": "broker.local"}
    del data["devices"][0]["source"]["value_columns"]
    data["devices"][0]["features"] = ["value"]

    config = load_config(write_config(tmp_path, data))

    assert config.mqtt.port == 1883
    assert config.mqtt.prefix == "fltrust"
    assert config.mqtt.tls is False
    assert config.detection.smoothing_window == 6
    assert config.detection.heartbeat_interval == 30.0
    assert config.devices[0].source.value_columns == ("value",)


def test_relative_paths_resolve_against_config(tmp_path):
    data = base_config(tmp_path)
    data["devices"][0]["source"]["path"] = "series.csv"
    data["security"]["state_dir"] = "state"

    config = load_config(write_config(tmp_path, data))

    assert config.devices[0].source.path == tmp_path / "series.csv"
    assert config.security.state_dir == tmp_path / "state"


def test_password_and_key_not_in_repr(tmp_path):
    data = base_config(tmp_path)
    data["mqtt"]["username"] = "edge"
    data["mqtt"]["password"] = "hunter2-secret"

    config = load_config(write_config(tmp_path, data))

    assert "hunter2-secret" not in repr(config)
    assert node_key().hex() not in repr(config)
    assert repr(node_key()) not in repr(config)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("node_id = \n")

    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("node_id"), "node_id: missing required key"),
        (lambda d: d["mqtt"].pop("host"), "mqtt.host: missing required key"),
        (lambda d: d.pop("security"), "security: missing required key"),
        (lambda d: d["security"].pop("node_key"), "security.node_key: missing required key"),
        (lambda d: d["devices"][0].pop("kind"), r"devices\[0\].kind: missing required key"),
        (
            lambda d: d["devices"][0]["source"].pop("type"),
            r"devices\[0\].source.type: missing required key",
        ),
    ],
)
def test_missing_key(tmp_path, edit, message):
    data = base_config(tmp_path)
    edit(data)

    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["mqtt"].update(port="1883"), "mqtt.port: expected an integer, got a string"),
        (lambda d: d["mqtt"].update(port=70000), "mqtt.port: must be <= 65535, got 70000"),
        (lambda d: d["mqtt"].update(tls="yes"), "mqtt.tls: expected true or false"),
        (lambda d: d["mqtt"].update(prefix="a/#"), "mqtt.prefix: invalid topic prefix"),
        (
            lambda d: d["detection"].update(train_rows=5.5),
            "detection.train_rows: expected an integer, got a number",
        ),
        (lambda d: d["detection"].update(target_fpr=0.7), "detection.target_fpr: must be between"),
        (
            lambda d: d["detection"].update(heartbeat_interval=0),
            "detection.heartbeat_interval: must be positive",
        ),
        (
            lambda d: d["detection"].update(smoothing_window=10, long_window=5),
            "detection.long_window: must be >= smoothing_window",
        ),
        (
            lambda d: d["detection"].update(extra_features=["slope"]),
            "detection.extra_features: unknown extra feature 'slope'",
        ),
        (
            lambda d: d["detection"].update(known_peers=["10.0.0.300"]),
            r"detection.known_peers\[0\]: invalid IP address",
        ),
        (lambda d: d.update(node_id="Node 1"), "node_id: invalid id 'Node 1'"),
        (lambda d: d["devices"][0].update(features="temperature"), "expected a list of strings"),
        (lambda d: d["mqtt"].update(hostname="x"), "mqtt.hostname: unknown key"),
        (lambda d: d.update(extra=1), "extra: unknown key"),
    ],
)
def test_bad_value(tmp_path, edit, message):
    data = base_config(tmp_path)
    edit(data)

    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, data))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "must be 64 hexadecimal characters, got 3"),
        ("zz" * 32, "must contain only hexadecimal characters"),
        (12, "expected a string, got an integer"),
    ],
)
def test_bad_hex_key(tmp_path, value, message):
    data = base_config(tmp_path)
    data["security"]["node_key"] = value

    assert message in load_error(tmp_path, data)
    assert load_error(tmp_path, data).startswith("security.node_key: ")


def test_bad_coordinator_key(tmp_path):
    data = base_config(tmp_path)
    data["security"]["coordinator_public_key"] = "0" * 63 + "g"

    message = load_error(tmp_path, data)

    assert message.startswith("security.coordinator_public_key: ")


def test_csv_file_not_found(tmp_path):
    data = base_config(tmp_path)
    data["devices"].append(copy.deepcopy(data["devices"][0]))
    data["devices"][1]["id"] = "sensor-2"
    data["devices"][1]["source"]["path"] = "/nonexistent/x.csv"

    message = load_error(tmp_path, data)

    assert message == "devices[1].source.path: file not found: /nonexistent/x.csv"


def test_csv_column_not_found(tmp_path):
    data = base_config(tmp_path)
    data["devices"][0]["source"]["value_columns"] = ["temp"]

    message = load_error(tmp_path, data)

    assert message.startswith("devices[0].source.value_columns: column 'temp' not found")
    assert "timestamp, value, label" in message


def test_csv_rate_and_speedup_exclusive(tmp_path):
    data = base_config(tmp_path)
    data["devices"][0]["source"]["speedup"] = 60.0

    assert "set rows_per_second or speedup" in load_error(tmp_path, data)


def test_csv_bad_slice(tmp_path):
    data = base_config(tmp_path)
    data["devices"][0]["source"].update(start_row=100, end_row=50)

    assert load_error(tmp_path, data).startswith("devices[0].source.end_row: must be above")


def test_csv_label_windows_need_key(tmp_path):
    windows = tmp_path / "windows.json"
    windows.write_text("{}")
    data = base_config(tmp_path)
    source = data["devices"][0]["source"]
    del source["label_column"]
    source["label_windows"] = str(windows)

    assert load_error(tmp_path, data) == "devices[0].source.label_windows_key: missing required key"


def test_csv_label_windows_not_found(tmp_path):
    data = base_config(tmp_path)
    source = data["devices"][0]["source"]
    del source["label_column"]
    source["label_windows"] = "missing.json"
    source["label_windows_key"] = "x"

    message = load_error(tmp_path, data)

    assert message.startswith("devices[0].source.label_windows: file not found")


def test_duplicate_device_id(tmp_path):
    data = base_config(tmp_path)
    data["devices"].append(copy.deepcopy(data["devices"][0]))

    assert "duplicate device id 'sensor-1'" in load_error(tmp_path, data)


def test_kind_feature_count_must_match(tmp_path):
    data = base_config(tmp_path)
    second = copy.deepcopy(data["devices"][0])
    second["id"] = "sensor-2"
    second["features"] = ["a", "b"]
    second["source"]["value_columns"] = ["value", "label"]
    data["devices"].append(second)

    message = load_error(tmp_path, data)

    assert message.startswith("devices[1].features: kind 'temperature' has 1 features")


def test_no_devices(tmp_path):
    data = base_config(tmp_path)
    data["devices"] = []

    assert "at least one [[devices]] entry" in load_error(tmp_path, data)


def mqtt_device(topics):
    return {
        "id": "zigbee-1",
        "kind": "temperature",
        "features": ["temperature"],
        "source": {"type": "mqtt", "topics": topics},
    }


def test_mqtt_source_loads(tmp_path):
    data = base_config(tmp_path)
    data["devices"] = [
        mqtt_device(
            [
                {
                    "topic": "zigbee2mqtt/kitchen",
                    "feature": "temperature",
                    "value_path": "temperature",
                }
            ]
        )
    ]

    config = load_config(write_config(tmp_path, data))

    source = config.devices[0].source
    assert isinstance(source, MqttSourceConfig)
    assert source.topics[0].value_path == "temperature"
    assert config.csv_devices == ()


@pytest.mark.parametrize(
    ("topics", "message"),
    [
        ([{"topic": "z/+", "feature": "temperature"}], "expected a topic without wildcards"),
        ([{"topic": "z/a", "feature": "humidity"}], "'humidity' is not one of the device"),
        (
            [{"topic": "z/a", "feature": "temperature", "value_path": "a..b"}],
            "expected dotted keys",
        ),
    ],
)
def test_mqtt_source_errors(tmp_path, topics, message):
    data = base_config(tmp_path)
    data["devices"] = [mqtt_device(topics)]

    error = load_error(tmp_path, data)

    assert error.startswith("devices[0].source.topics[0].")
    assert message in error


def test_mqtt_source_needs_every_feature(tmp_path):
    data = base_config(tmp_path)
    device = mqtt_device([{"topic": "z/a", "feature": "temperature"}])
    device["features"] = ["temperature", "humidity"]
    data["devices"] = [device]

    assert "no topic for feature 'humidity'" in load_error(tmp_path, data)


def test_unknown_source_type(tmp_path):
    data = base_config(tmp_path)
    data["devices"][0]["source"] = {"type": "serial"}

    assert load_error(tmp_path, data).startswith("devices[0].source.type: expected")


def test_simulation_section(tmp_path):
    data = base_config(tmp_path)
    data["simulation"] = {
        "compromise_at_round": 2,
        "false_reading_offset": 5.0,
        "unknown_peers": 3,
        "poison": "sign_flip",
    }

    config = load_config(write_config(tmp_path, data))

    assert config.simulation is not None
    assert config.simulation.compromise_at_round == 2
    assert config.simulation.poison == "sign_flip"


def test_simulation_bad_poison(tmp_path):
    data = base_config(tmp_path)
    data["simulation"] = {"poison": "flip"}

    assert load_error(tmp_path, data).startswith("simulation.poison: expected one of")


def test_no_simulation_by_default(node_config):
    assert node_config.simulation is None


def test_parse_config_from_dict(tmp_path):
    csv_path = write_csv(tmp_path / "other.csv", n_rows=10)
    data = base_config(tmp_path, csv_path=csv_path)

    config = parse_config(data, base_dir=tmp_path)

    assert config.devices[0].source.path == csv_path
