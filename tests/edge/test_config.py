"""Tests of configuration loading and validation."""

import copy
import json
from pathlib import Path

import pytest
from fltrust_core import protocol
from fltrust_edge.config import (
    MAX_CONFIG_BYTES,
    MAX_TRAIN_ROWS,
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
    assert config.detection.personalize is True
    assert config.devices[0].source.value_columns == ("value",)


def test_personalize_can_be_turned_off(tmp_path):
    data = base_config(tmp_path)
    data["detection"]["personalize"] = False

    config = load_config(write_config(tmp_path, data))

    assert config.detection.personalize is False


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
            lambda d: d["detection"].update(personalize="no"),
            "detection.personalize: expected true or false",
        ),
        (
            lambda d: d["detection"].update(heartbeat_interval=0),
            "detection.heartbeat_interval: must be from 1 to 3600 seconds, got 0",
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


def test_csv_path_is_directory(tmp_path):
    data = base_config(tmp_path)
    data["devices"][0]["source"]["path"] = str(tmp_path)

    message = load_error(tmp_path, data)

    assert message == f"devices[0].source.path: {tmp_path} is a directory, expected a file"


def test_csv_column_named_twice(tmp_path):
    data = base_config(tmp_path)
    path = tmp_path / "twice.csv"
    path.write_text("timestamp,value,value\n2024-01-01 00:00:00,1.0,2.0\n")
    data["devices"][0]["source"]["path"] = str(path)

    message = load_error(tmp_path, data)

    assert "column 'value' appears 2 times in the header" in message


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


def windows_source(tmp_path, windows_document):
    """Return a configuration whose device is labelled by a windows file with this content."""
    windows = tmp_path / "windows.json"
    windows.write_text(json.dumps(windows_document))
    data = base_config(tmp_path)
    source = data["devices"][0]["source"]
    del source["label_column"]
    source["label_windows"] = str(windows)
    source["label_windows_key"] = "realKnownCause/machine.csv"
    return data


def test_csv_label_windows_loaded(tmp_path):
    data = windows_source(
        tmp_path, {"realKnownCause/machine.csv": [["1970-01-01 00:01:00", "120"]]}
    )

    source = load_config(write_config(tmp_path, data)).devices[0].source

    assert source.anomaly_windows == ((60.0, 120.0),)


def test_csv_label_windows_key_not_in_file(tmp_path):
    data = windows_source(tmp_path, {"realKnownCause/machine_temperature.csv": []})

    message = load_error(tmp_path, data)

    assert message.startswith("devices[0].source.label_windows_key: ")
    assert "has no entry 'realKnownCause/machine.csv'" in message
    assert "did you mean 'realKnownCause/machine_temperature.csv'?" in message
    assert str(tmp_path / "windows.json") in message


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "is not a JSON object of series names"),
        ({"realKnownCause/machine.csv": 5}, "is not a list of [start, end] pairs"),
        ({"realKnownCause/machine.csv": [["a"]]}, "window 0 of"),
        ({"realKnownCause/machine.csv": [["yesterday", "today"]]}, "window 0 of"),
    ],
)
def test_csv_label_windows_bad_format(tmp_path, document, message):
    data = windows_source(tmp_path, document)

    error = load_error(tmp_path, data)

    assert error.startswith("devices[0].source.label_windows: ")
    assert message in error


def test_csv_label_windows_not_json(tmp_path):
    data = windows_source(tmp_path, {})
    (tmp_path / "windows.json").write_text("{" * 100_000)

    error = load_error(tmp_path, data)

    assert error.startswith("devices[0].source.label_windows: cannot read label windows")


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


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('node_id = "n\u00f6de"\n'.encode("latin-1"))

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert str(info.value) == f"{path}: invalid UTF-8 at byte 12, and TOML files must be UTF-8"


def test_deeply_nested_toml(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 100_000)

    with pytest.raises(ConfigError, match="invalid TOML: arrays or tables nest too deeply"):
        load_config(path)


def test_oversized_file(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n")

    with pytest.raises(ConfigError, match=f"larger than {MAX_CONFIG_BYTES} bytes"):
        load_config(path)


def test_state_dir_created(tmp_path):
    data = base_config(tmp_path)
    data["security"]["state_dir"] = str(tmp_path / "a" / "b")

    config = load_config(write_config(tmp_path, data))

    assert config.security.state_dir.is_dir()
    assert list(config.security.state_dir.iterdir()) == []


def test_state_dir_not_a_directory(tmp_path):
    data = base_config(tmp_path)
    data["security"]["state_dir"] = str(tmp_path / "series.csv")

    message = load_error(tmp_path, data)

    assert message == f"security.state_dir: not a directory: {tmp_path / 'series.csv'}"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize(
    ("state_dir", "message"),
    [
        ("/proc/fltrust", "security.state_dir: cannot create directory /proc/fltrust: "),
        ("/proc", "security.state_dir: cannot create files in directory /proc: "),
        ("/proc/version/x", "security.state_dir: cannot create directory /proc/version/x: "),
    ],
)
def test_state_dir_not_writable(tmp_path, state_dir, message):
    data = base_config(tmp_path)
    data["security"]["state_dir"] = state_dir

    assert load_error(tmp_path, data).startswith(message)


def test_invalid_config_creates_no_state_dir(tmp_path):
    data = base_config(tmp_path)
    data["mqtt"]["port"] = 0

    load_error(tmp_path, data)

    assert not (tmp_path / "state").exists()


def test_train_rows_upper_bound(tmp_path):
    data = base_config(tmp_path)
    data["detection"]["train_rows"] = 100_000_000

    message = load_error(tmp_path, data)

    assert message == f"detection.train_rows: must be <= {MAX_TRAIN_ROWS}, got 100000000"


def test_train_rows_bound_fits_coordinator_limit(tmp_path):
    data = base_config(tmp_path)
    data["detection"]["train_rows"] = MAX_TRAIN_ROWS

    assert load_config(write_config(tmp_path, data)).detection.train_rows == MAX_TRAIN_ROWS
    assert MAX_TRAIN_ROWS * protocol.MAX_DEVICES <= protocol.MAX_SAMPLES


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["detection"].update(known_peers=["10.0.0.0/8", 5]),
            "detection.known_peers[1]: expected a string, got an integer (5)",
        ),
        (
            lambda d: d["devices"][0].update(features=["temperature", ["x"]]),
            "devices[0].features[1]: expected a string, got a list (['x'])",
        ),
        (
            lambda d: d["detection"].update(extra_features=[True]),
            "detection.extra_features[0]: expected a string, got a boolean (True)",
        ),
    ],
)
def test_string_list_names_bad_element(tmp_path, edit, message):
    data = base_config(tmp_path)
    edit(data)

    assert load_error(tmp_path, data) == message


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["mqtt"].update(host=""), "mqtt.host: must not be empty"),
        (lambda d: d["mqtt"].update(host="a" * 64 + ".lan"), "mqtt.host: invalid host name"),
        (lambda d: d["mqtt"].update(host="broker..lan"), "mqtt.host: invalid host name"),
        (
            lambda d: d["mqtt"].update(client_id="c" * 70_000),
            "mqtt.client_id: 70000 bytes in UTF-8, above the MQTT limit of 65535",
        ),
        (
            lambda d: d["mqtt"].update(username="u" * 70_000),
            "mqtt.username: 70000 bytes in UTF-8",
        ),
        (
            lambda d: d["mqtt"].update(client_id="a\u0000b"),
            "mqtt.client_id: must not contain the character U+0000",
        ),
        (
            lambda d: d["mqtt"].update(prefix="a\u0000b"),
            "mqtt.prefix: must not contain the character U+0000",
        ),
        (
            lambda d: d["mqtt"].update(prefix="p" * 65_510),
            "mqtt.prefix: too long, because the state topic of device 'sensor-1' has",
        ),
        (
            lambda d: d["security"].update(state_dir="~no-such-user-fltrust/state"),
            "security.state_dir: cannot expand '~no-such-user-fltrust/state'",
        ),
        (
            lambda d: d["security"].update(state_dir="st\u0000ate"),
            "security.state_dir: must not contain the character U+0000",
        ),
        (
            lambda d: d["devices"][0]["source"].update(path="x\u0000.csv"),
            "devices[0].source.path: must not contain the character U+0000",
        ),
    ],
)
def test_bad_connection_and_path_values(tmp_path, edit, message):
    data = base_config(tmp_path)
    edit(data)

    assert load_error(tmp_path, data).startswith(message)


def test_password_error_does_not_show_password(tmp_path):
    data = base_config(tmp_path)
    data["mqtt"]["password"] = "secret\u0000"

    message = load_error(tmp_path, data)

    assert message == "mqtt.password: must not contain the character U+0000"


@pytest.mark.parametrize(
    ("section", "name", "value", "expected"),
    [
        ("mqtt", "password", 83920174551, "mqtt.password: expected a string, got an integer"),
        (
            "security",
            "node_key",
            ["ca0a39f660d0e142fa6ea6595deb2eba"],
            "security.node_key: expected a string, got a list",
        ),
    ],
)
def test_secret_of_wrong_type_not_shown(tmp_path, section, name, value, expected):
    data = base_config(tmp_path)
    data[section][name] = value

    message = load_error(tmp_path, data)

    assert message == expected


def test_mqtt_source_topic_with_nul(tmp_path):
    data = base_config(tmp_path)
    data["devices"] = [mqtt_device([{"topic": "z/\u0000", "feature": "temperature"}])]

    message = load_error(tmp_path, data)

    assert message == "devices[0].source.topics[0].topic: must not contain the character U+0000"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "broker.local", "mosquitto"])
def test_valid_hosts(tmp_path, host):
    data = base_config(tmp_path)
    data["mqtt"]["host"] = host

    assert load_config(write_config(tmp_path, data)).mqtt.host == host


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        (1e-9, "must be from 1 to 3600 seconds, got 1e-09"),
        (0.5, "must be from 1 to 3600 seconds, got 0.5"),
        (-30, "must be from 1 to 3600 seconds, got -30"),
        (3601, "must be from 1 to 3600 seconds, got 3601"),
        (1e300, "must be from 1 to 3600 seconds, got 1e+300"),
    ],
)
def test_heartbeat_interval_bounds(tmp_path, interval, message):
    data = base_config(tmp_path)
    data["detection"]["heartbeat_interval"] = interval

    assert load_error(tmp_path, data) == f"detection.heartbeat_interval: {message}"


@pytest.mark.parametrize("interval", [1, 1.0, 3600])
def test_heartbeat_interval_limits_accepted(tmp_path, interval):
    data = base_config(tmp_path)
    data["detection"]["heartbeat_interval"] = interval

    assert load_config(write_config(tmp_path, data)).detection.heartbeat_interval == interval


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        ("$SYS/x", "must not start with '$', because brokers reserve such topics"),
        ("$fltrust", "must not start with '$', because brokers reserve such topics"),
        ("a/+/b", "must not contain the MQTT wildcards '+' or '#'"),
        ("a/#", "must not contain the MQTT wildcards '+' or '#'"),
        ("", "must not be empty"),
        ("/fltrust", "must not have empty levels: no leading, trailing or double '/'"),
        ("fltrust/", "must not have empty levels: no leading, trailing or double '/'"),
        ("a//b", "must not have empty levels: no leading, trailing or double '/'"),
    ],
)
def test_prefix_rejected(tmp_path, prefix, problem):
    data = base_config(tmp_path)
    data["mqtt"]["prefix"] = prefix

    assert load_error(tmp_path, data) == f"mqtt.prefix: invalid topic prefix {prefix!r}: {problem}"


@pytest.mark.parametrize("prefix", ["fltrust", "home/fltrust", "a$b", "f-1_x.y"])
def test_prefix_accepted(tmp_path, prefix):
    data = base_config(tmp_path)
    data["mqtt"]["prefix"] = prefix

    assert load_config(write_config(tmp_path, data)).mqtt.prefix == prefix


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("prefix", "a\tb", "mqtt.prefix: contains the control character U+0009 at character 2"),
        ("client_id", "c\x7f", "mqtt.client_id: contains the control character U+007F at"),
        ("username", "u\x85", "mqtt.username: contains the control character U+0085 at"),
        ("prefix", "a\ufdd0", "mqtt.prefix: contains the Unicode non-character U+FDD0 at"),
        ("prefix", "a\ufffe", "mqtt.prefix: contains the Unicode non-character U+FFFE at"),
    ],
)
def test_mqtt_string_characters_rejected(tmp_path, key, value, message):
    data = base_config(tmp_path)
    data["mqtt"][key] = value

    assert load_error(tmp_path, data).startswith(message)


def test_password_may_contain_control_characters(tmp_path):
    data = base_config(tmp_path)
    data["mqtt"]["username"] = "user"
    data["mqtt"]["password"] = "p\x01w"

    assert load_config(write_config(tmp_path, data)).mqtt.password == "p\x01w"


def test_sensor_topic_control_character_rejected(tmp_path):
    data = base_config(tmp_path)
    data["devices"][0]["source"] = {
        "type": "mqtt",
        "topics": [{"topic": "z2m/\nkitchen", "feature": "temperature"}],
    }

    assert load_error(tmp_path, data).startswith(
        "devices[0].source.topics[0].topic: contains the control character U+000A at character 5"
    )


def csv_error(tmp_path, content: bytes, **source):
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    data = base_config(tmp_path)
    data["devices"][0]["source"].update(path=str(path), **source)
    return path, load_error(tmp_path, data)


def test_csv_non_utf8_names_line(tmp_path):
    lines = write_csv(tmp_path / "series.csv", n_rows=200).read_bytes().splitlines(keepends=True)
    lines[101] = lines[101].replace(b",0\n", b",\xff0\n")

    path, message = csv_error(tmp_path, b"".join(lines))

    assert message == (
        f"devices[0].source.path: {path} line 102: invalid UTF-8, byte 0xff at character 29"
    )


def test_csv_non_utf8_header(tmp_path):
    path, message = csv_error(tmp_path, b"timestamp,val\xffue,label\n0,1,0\n")

    assert message == (
        f"devices[0].source.path: {path} line 1: invalid UTF-8, byte 0xff at character 14"
    )


def test_csv_unclosed_quote_rejected(tmp_path):
    lines = write_csv(tmp_path / "series.csv", n_rows=200).read_text().splitlines(keepends=True)
    lines[90] = '"unterminated,1\n'

    path, message = csv_error(tmp_path, "".join(lines).encode())

    assert message == (
        f"devices[0].source.path: {path} line 91: invalid CSV: a quote opened here is never closed"
    )


def test_csv_start_row_past_end(tmp_path):
    csv_path = write_csv(tmp_path / "series.csv", n_rows=200)
    data = base_config(tmp_path, csv_path=csv_path)
    data["devices"][0]["source"]["start_row"] = 200

    assert load_error(tmp_path, data) == (
        f"devices[0].source.start_row: 200 is past the end of {csv_path}, "
        "which has 200 data rows, numbered from 0"
    )


def test_csv_start_row_last_row_accepted(tmp_path):
    csv_path = write_csv(tmp_path / "series.csv", n_rows=200)
    data = base_config(tmp_path, csv_path=csv_path)
    data["devices"][0]["source"]["start_row"] = 199

    assert load_config(write_config(tmp_path, data)).devices[0].source.start_row == 199


def test_csv_header_only(tmp_path):
    path, message = csv_error(tmp_path, b"timestamp,value,label\n")

    assert message == f"devices[0].source.path: {path} has no data rows after the header"
