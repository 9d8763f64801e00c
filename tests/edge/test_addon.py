"""Conversion of the Home Assistant add-on's options into the node's configuration file."""

import stat
from dataclasses import replace

import pytest
from fltrust_edge.addon import (
    AddonOptionError,
    BrokerSettings,
    build_document,
    service_from_environment,
    write_addon_config,
)
from fltrust_edge.cli import main
from fltrust_edge.config import DetectionConfig, MqttSourceConfig, TopicConfig, load_config

from .addon_helpers import (
    CLIMATE_TOPIC,
    HALLWAY_TOPIC,
    SERVICE,
    SERVICE_PASSWORD,
    addon_options,
    write_options,
)
from .conftest import NODE_ID, PREFIX, coordinator_public_key, node_key

SERVICE_ENVIRONMENT = {
    "FLTRUST_MQTT_HOST": "core-mosquitto",
    "FLTRUST_MQTT_PORT": "1883",
    "FLTRUST_MQTT_USERNAME": "addons",
    "FLTRUST_MQTT_PASSWORD": SERVICE_PASSWORD,
    "FLTRUST_MQTT_SSL": "false",
}


def convert(tmp_path, options, service=SERVICE):
    """Convert the options through an options file and return the configuration the node loads."""
    out = tmp_path / "edge.toml"
    write_addon_config(write_options(tmp_path, options), out, service, tmp_path / "state")
    return load_config(out)


def test_conversion_of_good_options(tmp_path):
    config = convert(tmp_path, addon_options())

    assert config.node_id == NODE_ID
    assert config.mqtt.host == "core-mosquitto"
    assert config.mqtt.port == 1883
    assert config.mqtt.username == "addons"
    assert config.mqtt.password == SERVICE_PASSWORD
    assert config.mqtt.tls is False
    assert config.mqtt.prefix == PREFIX
    assert config.security.node_key == node_key()
    assert config.security.coordinator_public_key == coordinator_public_key()
    assert config.security.state_dir == tmp_path / "state"
    assert (tmp_path / "state").is_dir()
    assert config.detection == DetectionConfig(
        smoothing_window=3,
        long_window=12,
        extra_features=("trend",),
        target_fpr=0.02,
        personalize=False,
        train_rows=40,
        heartbeat_interval=1.0,
        known_peers=("192.168.1.0/24",),
    )


def test_topics_join_their_devices(tmp_path):
    climate, hallway = convert(tmp_path, addon_options()).devices

    assert (climate.id, climate.kind, climate.name) == (
        "kitchen-climate",
        "climate",
        "Kitchen climate",
    )
    assert climate.features == ("temperature", "humidity")
    # Topics keep the order of the topics option within each device.
    assert climate.source == MqttSourceConfig(
        (
            TopicConfig(CLIMATE_TOPIC, "humidity", "humidity"),
            TopicConfig(CLIMATE_TOPIC, "temperature", "temperature"),
        )
    )
    assert (hallway.id, hallway.name) == ("hallway-temperature", "hallway-temperature")
    assert hallway.source == MqttSourceConfig((TopicConfig(HALLWAY_TOPIC, "temperature", None),))


def test_missing_detection_options_use_defaults(tmp_path):
    options = addon_options(
        smoothing_window=None,
        long_window=None,
        extra_features=None,
        target_fpr=None,
        personalize=None,
        train_rows=None,
        heartbeat_interval=None,
        known_peers=None,
        topic_prefix="",
        log_level=None,
    )

    config = convert(tmp_path, options)

    assert config.detection == DetectionConfig()
    assert config.mqtt.prefix == "fltrust"


@pytest.mark.parametrize(
    ("choice", "features"),
    [("trend_and_std", ("trend", "std")), ("trend", ("trend",)), ("std", ("std",)), ("none", ())],
)
def test_extra_features_choices(tmp_path, choice, features):
    config = convert(tmp_path, addon_options(extra_features=choice))

    assert config.detection.extra_features == features


def test_configuration_file_readable_by_owner_only(tmp_path):
    convert(tmp_path, addon_options())

    mode = stat.S_IMODE((tmp_path / "edge.toml").stat().st_mode)

    assert mode == 0o600


def test_broker_host_option_replaces_service(tmp_path):
    options = addon_options(mqtt_host="broker.example", mqtt_username="node-1")

    config = convert(tmp_path, options)

    assert config.mqtt.host == "broker.example"
    assert config.mqtt.port == 1883
    assert config.mqtt.username == "node-1"
    # The service's password belongs to the service's account, not to this broker.
    assert config.mqtt.password is None


def test_broker_host_option_with_all_settings(tmp_path):
    options = addon_options(
        mqtt_host="broker.example",
        mqtt_port=8883,
        mqtt_username="node-1",
        mqtt_password="own-secret",
        mqtt_tls=True,
    )

    mqtt = convert(tmp_path, options, service=BrokerSettings()).mqtt

    assert (mqtt.host, mqtt.port, mqtt.username, mqtt.password, mqtt.tls) == (
        "broker.example",
        8883,
        "node-1",
        "own-secret",
        True,
    )


def test_own_account_on_service_broker(tmp_path):
    options = addon_options(mqtt_username="node-1", mqtt_password="own-secret", mqtt_port=1884)

    mqtt = convert(tmp_path, options).mqtt

    assert (mqtt.host, mqtt.port, mqtt.username, mqtt.password) == (
        "core-mosquitto",
        1884,
        "node-1",
        "own-secret",
    )


def test_own_user_name_drops_service_password(tmp_path):
    mqtt = convert(tmp_path, addon_options(mqtt_username="node-1")).mqtt

    assert mqtt.username == "node-1"
    assert mqtt.password is None


def test_service_tls_flag_is_used(tmp_path):
    mqtt = convert(tmp_path, addon_options(), service=replace(SERVICE, tls=True, port=8883)).mqtt

    assert mqtt.tls is True
    assert mqtt.port == 8883


def test_no_broker_names_mqtt_host(tmp_path):
    with pytest.raises(AddonOptionError) as caught:
        build_document(addon_options(), BrokerSettings(), tmp_path / "state")

    assert str(caught.value).startswith("mqtt_host: no MQTT broker")


def test_service_from_environment():
    service = service_from_environment(SERVICE_ENVIRONMENT)

    assert service == SERVICE
    assert service_from_environment({}) == BrokerSettings()
    left_out = {"FLTRUST_MQTT_USERNAME": "null", "FLTRUST_MQTT_PASSWORD": "null"}
    assert service_from_environment(left_out) == BrokerSettings()
    assert service_from_environment({"FLTRUST_MQTT_SSL": "True"}).tls is True


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FLTRUST_MQTT_PORT", "mqtt", "FLTRUST_MQTT_PORT: expected a port number from 1 to 65535"),
        ("FLTRUST_MQTT_PORT", "0", "FLTRUST_MQTT_PORT: expected a port number from 1 to 65535"),
        ("FLTRUST_MQTT_SSL", "yes", "FLTRUST_MQTT_SSL: expected true or false, got 'yes'"),
    ],
)
def test_service_from_environment_rejects_bad_values(variable, value, message):
    with pytest.raises(AddonOptionError) as caught:
        service_from_environment({**SERVICE_ENVIRONMENT, variable: value})

    assert str(caught.value).startswith(message)


def first_device(**changes):
    device = addon_options()["devices"][0]
    device.update(changes)
    return device


def first_topic(**changes):
    topic = addon_options()["topics"][0]
    topic.update(changes)
    return topic


def devices_with(index, device):
    devices = addon_options()["devices"]
    devices[index] = device
    return devices


def topics_with(index, topic):
    topics = addon_options()["topics"]
    topics[index] = topic
    return topics


# Each case changes one option and gives the start of the expected error.
BAD_OPTIONS = {
    "missing node id": ({"node_id": None}, "node_id: missing required option"),
    "empty node id": ({"node_id": ""}, "node_id: missing required option"),
    "invalid node id": ({"node_id": "Kitchen Pi"}, "node_id: invalid id 'Kitchen Pi'"),
    "short node key": ({"node_key": "ab" * 5}, "node_key: must be 64 hexadecimal characters"),
    "node key not text": ({"node_key": 12345}, "node_key: expected text, got an integer"),
    "missing public key": (
        {"coordinator_public_key": None},
        "coordinator_public_key: missing required option",
    ),
    "public key not hex": (
        {"coordinator_public_key": "zz" * 32},
        "coordinator_public_key: must contain only hexadecimal characters",
    ),
    "prefix with wildcard": ({"topic_prefix": "fl/#"}, "topic_prefix: invalid topic prefix"),
    "prefix starting with $": ({"topic_prefix": "$SYS"}, "topic_prefix: invalid topic prefix"),
    "port out of range": ({"mqtt_port": 70000}, "mqtt_port: must be from 1 to 65535"),
    "port as text": ({"mqtt_port": "1883"}, "mqtt_port: expected an integer"),
    "tls as text": ({"mqtt_tls": "yes"}, "mqtt_tls: expected true or false"),
    "invalid broker host": ({"mqtt_host": "a..b"}, "mqtt_host: invalid host name"),
    "password without user name": (
        {"mqtt_password": "secret"},
        "mqtt_password: set mqtt_username too, or clear mqtt_password",
    ),
    "user name with control character": (
        {"mqtt_username": "node\x01"},
        "mqtt_username: contains the control character U+0001",
    ),
    "smoothing window as text": (
        {"smoothing_window": "six"},
        "smoothing_window: expected an integer, got text ('six')",
    ),
    "long window below smoothing window": (
        {"long_window": 2},
        "long_window: must be >= smoothing_window (3), got 2",
    ),
    "target fpr too high": ({"target_fpr": 0.7}, "target_fpr: must be between 0 and 0.5"),
    "heartbeat too short": (
        {"heartbeat_interval": 0.5},
        "heartbeat_interval: must be from 1 to 3600 seconds",
    ),
    "too few training rows": ({"train_rows": 5}, "train_rows: must be >= 20, got 5"),
    "personalize as number": ({"personalize": 1}, "personalize: expected true or false"),
    "unknown extra features": (
        {"extra_features": "both"},
        "extra_features: expected one of trend_and_std, trend, std, none",
    ),
    "invalid known peer": (
        {"known_peers": ["192.168.1.0/24", "gateway"]},
        "known_peers[1]: invalid IP address or network",
    ),
    "known peer not text": ({"known_peers": [5]}, "known_peers[0]: expected text"),
    "unknown log level": ({"log_level": "verbose"}, "log_level: expected one of debug, info"),
    "unknown option": ({"colour": "blue"}, "colour: unknown option"),
    "no devices": ({"devices": []}, "devices: add at least one device"),
    "devices not a list": ({"devices": {"id": "x"}}, "devices: expected a list"),
    "device not an object": ({"devices": ["kitchen"]}, "devices[0]: expected an object"),
    "device without id": (
        {"devices": devices_with(0, first_device(id=None))},
        "devices[0].id: missing required option",
    ),
    "invalid device id": (
        {
            "devices": devices_with(1, {"id": "Hall", "kind": "t", "features": ["t"]}),
            "topics": topics_with(1, {"device": "Hall", "feature": "t", "topic": HALLWAY_TOPIC}),
        },
        "devices[1].id: invalid id 'Hall'",
    ),
    "duplicate device id": (
        {"devices": devices_with(1, first_device())},
        "devices[1].id: duplicate device id 'kitchen-climate'",
    ),
    "device without features": (
        {"devices": devices_with(0, first_device(features=[]))},
        "devices[0].features: list at least one feature",
    ),
    "unknown device field": (
        {"devices": devices_with(0, first_device(room="kitchen"))},
        "devices[0].room: unknown option",
    ),
    "kind with other feature count": (
        {
            "devices": devices_with(1, first_device(id="other", features=["temperature"])),
            "topics": topics_with(
                1, {"device": "other", "feature": "temperature", "topic": HALLWAY_TOPIC}
            ),
        },
        "devices[1].features: kind 'climate' has 2 features",
    ),
    "topic for unknown device": (
        {"topics": topics_with(0, first_topic(device="garage"))},
        "topics[0].device: no device with id 'garage'; the devices are kitchen-climate, "
        "hallway-temperature",
    ),
    "topic for unknown feature": (
        {"topics": topics_with(2, first_topic(feature="pressure"))},
        "topics[2].feature: 'pressure' is not a feature of device 'kitchen-climate'",
    ),
    "topic with wildcard": (
        {
            "topics": topics_with(
                1,
                {
                    "device": "hallway-temperature",
                    "feature": "temperature",
                    "topic": "hallway/+/state",
                },
            )
        },
        "topics[1].topic: expected a topic without wildcards",
    ),
    "invalid value path": (
        {"topics": topics_with(2, first_topic(feature="temperature", value_path="a..b"))},
        "topics[2].value_path: expected dotted keys",
    ),
    "topic without topic": (
        {"topics": topics_with(0, first_topic(topic=""))},
        "topics[0].topic: missing required option",
    ),
    "feature without topic": (
        {"topics": addon_options()["topics"][1:]},
        "devices[0].features: no topic for feature 'humidity' of device 'kitchen-climate'",
    ),
    "empty feature": (
        {"devices": devices_with(0, first_device(features=["temperature", ""]))},
        "devices[0].features[1]: must not be empty",
    ),
    "lone surrogate": (
        {"devices": devices_with(0, first_device(name="Kitchen \ud800"))},
        "devices[0].name: invalid Unicode character at position 9",
    ),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_option_error_names_option(tmp_path, case):
    changes, message = BAD_OPTIONS[case]
    out = tmp_path / "edge.toml"
    options_path = write_options(tmp_path, addon_options(**changes))

    with pytest.raises(AddonOptionError) as caught:
        write_addon_config(options_path, out, SERVICE, tmp_path / "state")

    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)
    assert not out.exists()
    assert list(tmp_path.glob(".edge.toml*")) == []


def test_bad_option_keeps_previous_file(tmp_path):
    out = tmp_path / "edge.toml"
    convert(tmp_path, addon_options())
    previous = out.read_text()
    options_path = write_options(tmp_path, addon_options(train_rows=5))

    with pytest.raises(AddonOptionError):
        write_addon_config(options_path, out, SERVICE, tmp_path / "state")

    assert out.read_text() == previous


def test_options_not_an_object(tmp_path):
    with pytest.raises(AddonOptionError) as caught:
        build_document([], SERVICE, tmp_path)

    assert str(caught.value) == "options: expected an object, got a list"


def test_options_file_missing(tmp_path):
    path = tmp_path / "options.json"

    with pytest.raises(AddonOptionError) as caught:
        write_addon_config(path, tmp_path / "edge.toml", SERVICE, tmp_path / "state")

    assert str(caught.value) == f"options file not found: {path}"


def test_options_file_not_json(tmp_path):
    path = tmp_path / "options.json"
    path.write_text('{"node_id": ')

    with pytest.raises(AddonOptionError) as caught:
        write_addon_config(path, tmp_path / "edge.toml", SERVICE, tmp_path / "state")

    assert str(caught.value).startswith(f"{path}: invalid JSON: Expecting value")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        ('{"train_rows": ' + "9" * 5000 + "}", "invalid JSON"),
        (r'{"node_id": "\udc80"}', None),
    ],
)
def test_options_file_hostile_json(tmp_path, text, reason):
    path = tmp_path / "options.json"
    path.write_text(text)

    with pytest.raises(AddonOptionError) as caught:
        write_addon_config(path, tmp_path / "edge.toml", SERVICE, tmp_path / "state")

    assert len(str(caught.value)) < 300
    if reason is not None:
        assert reason in str(caught.value)


# Command line.


def run_addon_config(tmp_path, options, monkeypatch, environment=SERVICE_ENVIRONMENT):
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    options_path = write_options(tmp_path, options)
    out = tmp_path / "edge.toml"
    arguments = ["addon-config", "--options", str(options_path), "--out", str(out)]
    return main([*arguments, "--state-dir", str(tmp_path / "state")]), out


def test_cli_writes_valid_file(tmp_path, capsys, monkeypatch):
    code, out = run_addon_config(tmp_path, addon_options(), monkeypatch)

    assert code == 0
    assert capsys.readouterr().out == (
        f"{out}: configuration of node {NODE_ID} with 2 devices, broker core-mosquitto:1883 "
        "from the MQTT service\n"
    )
    assert main(["check-config", str(out)]) == 0


def test_cli_reports_broker_from_options(tmp_path, capsys, monkeypatch):
    options = addon_options(mqtt_host="broker.example", mqtt_port=1884)

    code, _ = run_addon_config(tmp_path, options, monkeypatch, environment={})

    assert code == 0
    assert "broker broker.example:1884 from the add-on's options" in capsys.readouterr().out


def test_cli_prints_one_error_line(tmp_path, capsys, monkeypatch):
    topics = topics_with(0, first_topic(device="garage"))

    code, out = run_addon_config(tmp_path, addon_options(topics=topics), monkeypatch)

    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("fltrust-edge: error: topics[0].device: no device with id")
    assert captured.err.count("\n") == 1
    assert not out.exists()


def test_cli_rejects_bad_service_port(tmp_path, capsys, monkeypatch):
    environment = {**SERVICE_ENVIRONMENT, "FLTRUST_MQTT_PORT": "many"}

    code, _ = run_addon_config(tmp_path, addon_options(), monkeypatch, environment)

    assert code == 2
    assert capsys.readouterr().err == (
        "fltrust-edge: error: FLTRUST_MQTT_PORT: expected a port number from 1 to 65535, "
        "got 'many'\n"
    )


def test_cli_reports_missing_output_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLTRUST_MQTT_HOST", "core-mosquitto")
    options_path = write_options(tmp_path, addon_options())
    out = tmp_path / "missing" / "edge.toml"

    code = main(
        ["addon-config", "--options", str(options_path), "--out", str(out), "--state-dir", "s"]
    )

    assert code == 1
    assert capsys.readouterr().err == (
        f"fltrust-edge: error: --out: cannot write {out}: No such file or directory\n"
    )


OWN_PASSWORD = "own-password-Z9"
# Options that carry every secret and fail at different stages of the conversion.
SECRET_CASES = {
    "valid": {},
    "node key of wrong type": {"node_key": ["f" * 64]},
    "node key too short": {"node_key": node_key().hex()[:40]},
    "password of wrong type": {"mqtt_username": "node-1", "mqtt_password": 987654321},
    "password with NUL": {"mqtt_username": "node-1", "mqtt_password": f"{OWN_PASSWORD}\x00"},
    "invalid topic": {"topics": topics_with(0, first_topic(topic="a/#"))},
}


@pytest.mark.parametrize("case", list(SECRET_CASES))
def test_cli_never_prints_secrets(tmp_path, capsys, caplog, monkeypatch, case):
    options = addon_options(mqtt_username="node-1", mqtt_password=OWN_PASSWORD)
    options.update(SECRET_CASES[case])

    run_addon_config(tmp_path, options, monkeypatch)

    captured = capsys.readouterr()
    output = captured.out + captured.err + caplog.text
    assert output
    for secret in (node_key().hex(), node_key().hex()[:40], OWN_PASSWORD, "987654321", "f" * 64):
        assert secret not in output
    assert SERVICE_PASSWORD not in output


def test_password_with_toml_special_characters(tmp_path):
    password = 'with "quotes", a \\ and a\ttab'
    options = addon_options(mqtt_username="node-1", mqtt_password=password)

    assert convert(tmp_path, options).mqtt.password == password
