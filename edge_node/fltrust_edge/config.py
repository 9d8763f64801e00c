"""Configuration of an edge node: a TOML file loaded into frozen dataclasses.

``load_config`` validates every key and raises ``ConfigError`` with the key's
path and the bad value, for example
``devices[1].source.path: file not found: /x.csv``. Relative paths are
resolved against the directory of the configuration file. The README of the
edge node documents every key.
"""

from __future__ import annotations

import ipaddress
import math
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fltrust_core import protocol
from fltrust_core.preprocessing import EXTRA_FEATURES
from fltrust_core.security import KEY_BYTES, load_public_key

from .csvfile import CsvFormatError, open_csv, read_records
from .labels import MissingSeriesError, load_label_windows

POISON_METHODS = ("sign_flip", "scale", "noise")
# Even a configuration of 64 devices is far below this size. The limit keeps a
# wrong path such as /dev/zero from being read without end.
MAX_CONFIG_BYTES = 1024 * 1024
# Upper bound of detection.train_rows. At one reading every 10 seconds a buffer
# of this size takes 11.6 days to fill, and an update for protocol.MAX_DEVICES
# (64) devices of one kind then carries 6.4 million samples, below the
# protocol.MAX_SAMPLES that the coordinator accepts.
MAX_TRAIN_ROWS = 100_000
# MQTT 3.1.1 (section 1.5.3) limits strings, topics included, to 65535 bytes of
# UTF-8 and forbids the character U+0000 in them.
MAX_MQTT_STRING_BYTES = 65_535
# Bounds of detection.heartbeat_interval, shared with the coordinator. The upper
# bound matches the largest mqtt.keepalive.
MIN_HEARTBEAT_INTERVAL = protocol.MIN_HEARTBEAT_INTERVAL
MAX_HEARTBEAT_INTERVAL = protocol.MAX_HEARTBEAT_INTERVAL


class ConfigError(ValueError):
    """An invalid configuration. The message starts with the path of the bad key."""


@dataclass(frozen=True)
class MqttConfig:
    """Connection to the MQTT broker that the coordinator listens on."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    prefix: str = "fltrust"
    tls: bool = False
    client_id: str = ""
    keepalive: int = 30


@dataclass(frozen=True)
class SecurityConfig:
    """Keys and the directory where the node keeps its replay-protection state."""

    node_key: bytes = field(repr=False)
    coordinator_public_key: str
    state_dir: Path


@dataclass(frozen=True)
class DetectionConfig:
    """Feature extraction, training and reporting settings."""

    smoothing_window: int = 6
    long_window: int = 48
    extra_features: tuple[str, ...] = ("trend", "std")
    target_fpr: float = 0.01
    # Score with the global model and a model of the node's own data together.
    personalize: bool = True
    train_rows: int = 500
    heartbeat_interval: float = 30.0
    known_peers: tuple[str, ...] = ()


@dataclass(frozen=True)
class CsvSourceConfig:
    """Replay of a CSV file as if its rows were live readings."""

    path: Path
    value_columns: tuple[str, ...]
    timestamp_column: str | None = None
    label_column: str | None = None
    delimiter: str = ","
    rows_per_second: float | None = None
    speedup: float | None = None
    start_row: int = 0
    end_row: int | None = None
    label_windows: Path | None = None
    label_windows_key: str | None = None
    # The [start, end] Unix times of the anomaly windows read from label_windows.
    anomaly_windows: tuple[tuple[float, float], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class TopicConfig:
    """One MQTT topic that carries one feature of a device."""

    topic: str
    feature: str
    value_path: str | None = None


@dataclass(frozen=True)
class MqttSourceConfig:
    """Live readings from sensor topics on the node's MQTT broker."""

    topics: tuple[TopicConfig, ...]


@dataclass(frozen=True)
class DeviceConfig:
    """A watched device and where its readings come from."""

    id: str
    kind: str
    name: str
    features: tuple[str, ...]
    source: CsvSourceConfig | MqttSourceConfig


@dataclass(frozen=True)
class SimulationConfig:
    """Behaviour of a compromised node, for demos and tests only.

    From the round ``compromise_at_round`` on, the node adds
    ``false_reading_offset`` plus Gaussian noise of standard deviation
    ``false_reading_noise`` to every reading, reports ``unknown_peers`` extra
    unknown peers per heartbeat and poisons its updates with ``poison``.
    """

    compromise_at_round: int = 1
    false_reading_offset: float = 0.0
    false_reading_noise: float = 0.0
    unknown_peers: int = 0
    poison: str | None = None
    poison_scale: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class NodeConfig:
    """The whole configuration of an edge node."""

    node_id: str
    mqtt: MqttConfig
    security: SecurityConfig
    detection: DetectionConfig
    devices: tuple[DeviceConfig, ...]
    simulation: SimulationConfig | None = None
    path: Path | None = None

    @property
    def csv_devices(self) -> tuple[DeviceConfig, ...]:
        """Devices whose readings are replayed from CSV files."""
        return tuple(d for d in self.devices if isinstance(d.source, CsvSourceConfig))


def read_small_file(path: Path, what: str) -> bytes:
    """Return the bytes of a file of at most ``MAX_CONFIG_BYTES``; ``what`` names it in errors.

    Raises:
        ConfigError: the file is missing, unreadable or too large.
    """
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as err:
        raise ConfigError(f"{what} not found: {path}") from err
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {_reason(err)}") from err
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_CONFIG_BYTES} bytes, more than any {what} needs"
        )
    return raw


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a TOML configuration file, creating ``state_dir`` if it is missing.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or a key is invalid.
    """
    path = Path(path)
    raw = read_small_file(path, "configuration file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: invalid UTF-8 at byte {err.start}, and TOML files must be UTF-8"
        ) from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from err
    except RecursionError as err:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nest too deeply") from err
    return parse_config(data, base_dir=path.resolve().parent, path=path)


def parse_config(data: dict[str, Any], base_dir: Path, path: Path | None = None) -> NodeConfig:
    """Validate a parsed TOML document, resolving relative paths against ``base_dir``.

    Creates ``security.state_dir`` if it is missing, and checks that the node
    can create files in it.
    """
    root = _Table(data, "")
    node_id = root.identifier("node_id")
    mqtt = _parse_mqtt(root.table("mqtt"), node_id)
    security = _parse_security(root.table("security"), base_dir)
    detection = _parse_detection(root.table("detection", required=False))
    devices = _parse_devices(root.array_of_tables("devices"), base_dir)
    simulation_table = root.table("simulation", required=False)
    simulation = _parse_simulation(simulation_table) if "simulation" in data else None
    root.reject_unknown()
    _check_topic_lengths(mqtt, node_id, devices)
    # Last, so that a configuration with an invalid key creates no directory.
    _prepare_state_dir("security.state_dir", security.state_dir)
    return NodeConfig(
        node_id=node_id,
        mqtt=mqtt,
        security=security,
        detection=detection,
        devices=devices,
        simulation=simulation,
        path=path,
    )


# Sections.


def _parse_mqtt(table: _Table, node_id: str) -> MqttConfig:
    host = table.string("host")
    _check_host(table.key("host"), host)
    port = table.integer("port", default=1883, minimum=1, maximum=65535)
    username = table.string("username", default=None) or None
    password = table.string("password", default=None, secret=True) or None
    prefix = table.string("prefix", default="fltrust")
    _check_prefix(table.key("prefix"), prefix)
    tls = table.boolean("tls", default=False)
    client_id = table.string("client_id", default=f"fltrust-edge-{node_id}")
    keepalive = table.integer("keepalive", default=30, minimum=5, maximum=3600)
    for name, value in (
        ("username", username),
        ("password", password),
        ("prefix", prefix),
        ("client_id", client_id),
    ):
        if value is not None:
            _check_mqtt_string(table.key(name), value)
            if name != "password":
                # MQTT 3.1.1 passwords are binary data, so any character may appear in them.
                _check_mqtt_characters(table.key(name), value)
    table.reject_unknown()
    return MqttConfig(host, port, username, password, prefix, tls, client_id, keepalive)


def _check_prefix(key: str, prefix: str) -> None:
    """Raise ConfigError unless ``prefix`` can start every topic that the node publishes to."""
    problem = None
    if not prefix:
        problem = "must not be empty"
    elif prefix.startswith("$"):
        # MQTT 3.1.1 (section 4.7.2) reserves these topics for the broker.
        # Mosquitto (checked with 2.0.11) drops client publishes to them without an error.
        problem = "must not start with '$', because brokers reserve such topics"
    elif "+" in prefix or "#" in prefix:
        problem = "must not contain the MQTT wildcards '+' or '#'"
    elif "" in prefix.split("/"):
        problem = "must not have empty levels: no leading, trailing or double '/'"
    if problem is not None:
        raise ConfigError(f"{key}: invalid topic prefix {_shorten(prefix)}: {problem}")


def _check_host(key: str, host: str) -> None:
    if not host:
        raise ConfigError(f"{key}: must not be empty")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        # socket.getaddrinfo encodes host names with this codec.
        host.encode("idna")
    except UnicodeError as err:
        raise ConfigError(
            f"{key}: invalid host name {_shorten(host)}: {err}. Expected an IP address "
            "or a DNS name whose dot-separated labels have 1 to 63 characters"
        ) from err


def _check_mqtt_string(key: str, value: str) -> None:
    """Raise ConfigError unless ``value`` is a valid MQTT string. Never shows the value."""
    if "\0" in value:
        raise ConfigError(f"{key}: must not contain the character U+0000")
    size = len(value.encode("utf-8"))
    if size > MAX_MQTT_STRING_BYTES:
        raise ConfigError(
            f"{key}: {size} bytes in UTF-8, above the MQTT limit of {MAX_MQTT_STRING_BYTES}"
        )


def _check_mqtt_characters(key: str, value: str) -> None:
    """Raise ConfigError if ``value`` contains a character that MQTT 3.1.1 advises against.

    Section 1.5.3 of MQTT 3.1.1 advises against control characters and
    Unicode non-characters in strings. Mosquitto (checked with 2.0.11) closes
    the connection of a client that sends one in a topic, client id or user name.
    """
    for position, char in enumerate(value):
        code = ord(char)
        is_control = code <= 0x1F or 0x7F <= code <= 0x9F
        is_noncharacter = 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE
        if is_control or is_noncharacter:
            kind = "control character" if is_control else "Unicode non-character"
            raise ConfigError(
                f"{key}: contains the {kind} U+{code:04X} at character {position + 1}, "
                "which MQTT brokers such as Mosquitto reject"
            )


def _check_topic_lengths(mqtt: MqttConfig, node_id: str, devices: tuple[DeviceConfig, ...]) -> None:
    """Check that every topic the node publishes to fits in an MQTT string.

    A device's state topic is the longest of them, because it contains the
    prefix, the node id and the device id.
    """
    for device in devices:
        topic = protocol.state_topic(mqtt.prefix, node_id, device.id)
        size = len(topic.encode("utf-8"))
        if size > MAX_MQTT_STRING_BYTES:
            raise ConfigError(
                f"mqtt.prefix: too long, because the state topic of device {device.id!r} has "
                f"{size} bytes in UTF-8, above the MQTT limit of {MAX_MQTT_STRING_BYTES}"
            )


def _parse_security(table: _Table, base_dir: Path) -> SecurityConfig:
    node_key = bytes.fromhex(table.hex_key("node_key", secret=True))
    public_key = table.hex_key("coordinator_public_key")
    try:
        load_public_key(public_key)
    except ValueError as err:
        raise ConfigError(
            f"{table.key('coordinator_public_key')}: invalid Ed25519 public key: {err}"
        ) from err
    state_dir = table.path("state_dir", base_dir)
    table.reject_unknown()
    return SecurityConfig(node_key=node_key, coordinator_public_key=public_key, state_dir=state_dir)


def _prepare_state_dir(key: str, state_dir: Path) -> None:
    """Create ``state_dir`` if it is missing and check that files can be created in it."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise ConfigError(f"{key}: not a directory: {state_dir}") from err
    except OSError as err:
        raise ConfigError(f"{key}: cannot create directory {state_dir}: {_reason(err)}") from err
    try:
        # The node writes its state files through temporary files in this directory.
        check_can_create_files(state_dir)
    except OSError as err:
        raise ConfigError(
            f"{key}: cannot create files in directory {state_dir}: {_reason(err)}"
        ) from err


def check_can_create_files(directory: Path) -> None:
    """Create and delete a temporary file in ``directory``, raising OSError if that fails."""
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
        pass


def _parse_detection(table: _Table) -> DetectionConfig:
    defaults = DetectionConfig()
    smoothing_window = table.integer(
        "smoothing_window", default=defaults.smoothing_window, minimum=1, maximum=10_000
    )
    long_window = table.integer(
        "long_window", default=defaults.long_window, minimum=1, maximum=10_000
    )
    if long_window < smoothing_window:
        raise ConfigError(
            f"{table.key('long_window')}: must be >= smoothing_window ({smoothing_window}), "
            f"got {long_window}"
        )

    extra_features = table.string_list(
        "extra_features", default=list(defaults.extra_features), allow_empty=True
    )
    for name in extra_features:
        if name not in EXTRA_FEATURES:
            raise ConfigError(
                f"{table.key('extra_features')}: unknown extra feature {name!r}, "
                f"expected any of {', '.join(EXTRA_FEATURES)}"
            )
    if len(set(extra_features)) != len(extra_features):
        raise ConfigError(f"{table.key('extra_features')}: names must not repeat")

    target_fpr = table.number("target_fpr", default=defaults.target_fpr)
    if not 0 < target_fpr < 0.5:
        raise ConfigError(f"{table.key('target_fpr')}: must be between 0 and 0.5, got {target_fpr}")
    personalize = table.boolean("personalize", default=defaults.personalize)
    train_rows = table.integer(
        "train_rows", default=defaults.train_rows, minimum=20, maximum=MAX_TRAIN_ROWS
    )
    heartbeat_interval = table.number("heartbeat_interval", default=defaults.heartbeat_interval)
    if not MIN_HEARTBEAT_INTERVAL <= heartbeat_interval <= MAX_HEARTBEAT_INTERVAL:
        raise ConfigError(
            f"{table.key('heartbeat_interval')}: must be from {MIN_HEARTBEAT_INTERVAL:g} to "
            f"{MAX_HEARTBEAT_INTERVAL:g} seconds, got {heartbeat_interval:g}"
        )

    known_peers = table.string_list("known_peers", default=[], allow_empty=True)
    for index, peer in enumerate(known_peers):
        try:
            ipaddress.ip_network(peer, strict=False)
        except ValueError as err:
            raise ConfigError(
                f"{table.key('known_peers')}[{index}]: invalid IP address or network: {peer!r}"
            ) from err
    table.reject_unknown()

    return DetectionConfig(
        smoothing_window=smoothing_window,
        long_window=long_window,
        extra_features=tuple(extra_features),
        target_fpr=target_fpr,
        personalize=personalize,
        train_rows=train_rows,
        heartbeat_interval=heartbeat_interval,
        known_peers=tuple(known_peers),
    )


def _parse_devices(tables: list[_Table], base_dir: Path) -> tuple[DeviceConfig, ...]:
    if not tables:
        raise ConfigError("devices: at least one [[devices]] entry is required")
    if len(tables) > protocol.MAX_DEVICES:
        raise ConfigError(f"devices: at most {protocol.MAX_DEVICES} devices are supported")
    devices = []
    seen_ids: set[str] = set()
    width_by_kind: dict[str, tuple[int, str]] = {}
    for table in tables:
        device_id = table.identifier("id")
        if device_id in seen_ids:
            raise ConfigError(f"{table.key('id')}: duplicate device id {device_id!r}")
        seen_ids.add(device_id)
        kind = table.identifier("kind")
        name = table.string("name", default=device_id)
        if len(name) > 100:
            raise ConfigError(f"{table.key('name')}: must be at most 100 characters")
        features = table.string_list("features")
        if len(set(features)) != len(features):
            raise ConfigError(f"{table.key('features')}: names must not repeat")
        if len(features) > protocol.MAX_FEATURES or any(len(f) > 64 for f in features):
            raise ConfigError(
                f"{table.key('features')}: at most {protocol.MAX_FEATURES} names "
                "of at most 64 characters"
            )
        previous = width_by_kind.setdefault(kind, (len(features), table.key("features")))
        if previous[0] != len(features):
            raise ConfigError(
                f"{table.key('features')}: kind {kind!r} has {previous[0]} features in "
                f"{previous[1]}, so every device of that kind needs {previous[0]}"
            )
        source_table = table.table("source")
        source_type = source_table.string("type")
        if source_type == "csv":
            source: CsvSourceConfig | MqttSourceConfig = _parse_csv_source(
                source_table, features, base_dir
            )
        elif source_type == "mqtt":
            source = _parse_mqtt_source(source_table, features)
        else:
            raise ConfigError(
                f'{source_table.key("type")}: expected "csv" or "mqtt", got {source_type!r}'
            )
        table.reject_unknown()
        devices.append(DeviceConfig(device_id, kind, name, tuple(features), source))
    return tuple(devices)


def _check_file(path: Path, key: str) -> None:
    """Raise ConfigError unless ``path`` is a file, naming what it is instead."""
    if path.is_file():
        return
    if path.is_dir():
        raise ConfigError(f"{key}: {path} is a directory, expected a file")
    if path.exists():
        raise ConfigError(f"{key}: {path} is not a regular file")
    raise ConfigError(f"{key}: file not found: {path}")


def _parse_csv_source(table: _Table, features: list[str], base_dir: Path) -> CsvSourceConfig:
    path = table.path("path", base_dir)
    _check_file(path, table.key("path"))
    value_columns = table.string_list("value_columns", default=list(features))
    if len(value_columns) != len(features):
        raise ConfigError(
            f"{table.key('value_columns')}: lists {len(value_columns)} columns "
            f"for {len(features)} features; give one column per feature"
        )
    timestamp_column = table.string("timestamp_column", default=None)
    label_column = table.string("label_column", default=None)
    delimiter = table.string("delimiter", default=",")
    if len(delimiter) != 1:
        raise ConfigError(f"{table.key('delimiter')}: must be one character, got {delimiter!r}")

    rows_per_second = table.number("rows_per_second", default=None)
    speedup = table.number("speedup", default=None)
    if rows_per_second is not None and speedup is not None:
        raise ConfigError(f"{table.key('speedup')}: set rows_per_second or speedup, not both")
    for key, value in (("rows_per_second", rows_per_second), ("speedup", speedup)):
        if value is not None and not value > 0:
            raise ConfigError(f"{table.key(key)}: must be positive, got {value}")
    if speedup is not None and timestamp_column is None:
        raise ConfigError(f"{table.key('speedup')}: needs timestamp_column to pace the replay")

    start_row = table.integer("start_row", default=0, minimum=0)
    end_row = table.integer("end_row", default=None, minimum=1)
    if end_row is not None and end_row <= start_row:
        raise ConfigError(
            f"{table.key('end_row')}: must be above start_row ({start_row}), got {end_row}"
        )

    label_windows = None
    anomaly_windows: tuple[tuple[float, float], ...] = ()
    if "label_windows" in table.data:
        label_windows = table.path("label_windows", base_dir)
        _check_file(label_windows, table.key("label_windows"))
    label_windows_key = table.string("label_windows_key", default=None)
    if label_windows is not None:
        if timestamp_column is None:
            raise ConfigError(
                f"{table.key('label_windows')}: needs timestamp_column to match the windows"
            )
        if label_column is not None:
            raise ConfigError(f"{table.key('label_windows')}: set label_column or label_windows")
        if label_windows_key is None:
            raise ConfigError(f"{table.key('label_windows_key')}: missing required key")
        try:
            anomaly_windows = tuple(load_label_windows(label_windows, label_windows_key))
        except MissingSeriesError as err:
            raise ConfigError(f"{table.key('label_windows_key')}: {err}") from err
        except ValueError as err:
            raise ConfigError(f"{table.key('label_windows')}: {err}") from err
    elif label_windows_key is not None:
        raise ConfigError(f"{table.key('label_windows_key')}: needs label_windows")
    table.reject_unknown()

    header, data_rows = _scan_csv(path, delimiter, table.key("path"))
    named_columns = [("value_columns", column) for column in value_columns]
    named_columns += [("timestamp_column", timestamp_column), ("label_column", label_column)]
    for key, column in named_columns:
        if column is not None and column not in header:
            raise ConfigError(
                f"{table.key(key)}: column {column!r} not found in {path}, "
                f"whose header is: {', '.join(header)}"
            )
        if column is not None and header.count(column) > 1:
            # The replay would read the first of them, which may not be the one meant.
            raise ConfigError(
                f"{table.key(key)}: column {column!r} appears {header.count(column)} times in "
                f"the header of {path}; rename the columns so that each name is unique"
            )
    if data_rows == 0:
        raise ConfigError(f"{table.key('path')}: {path} has no data rows after the header")
    if start_row >= data_rows:
        raise ConfigError(
            f"{table.key('start_row')}: {start_row} is past the end of {path}, which has "
            f"{data_rows} data rows, numbered from 0"
        )
    return CsvSourceConfig(
        path=path,
        value_columns=tuple(value_columns),
        timestamp_column=timestamp_column,
        label_column=label_column,
        delimiter=delimiter,
        rows_per_second=rows_per_second,
        speedup=speedup,
        start_row=start_row,
        end_row=end_row,
        label_windows=label_windows,
        label_windows_key=label_windows_key,
        anomaly_windows=anomaly_windows,
    )


def _scan_csv(path: Path, delimiter: str, key: str) -> tuple[list[str], int]:
    """Read a whole CSV file and return its header and its number of data rows.

    Reading every line finds invalid UTF-8 and invalid CSV before the replay
    reaches them. Blank lines count as data rows, as they do in the replay.
    """
    header: list[str] | None = None
    data_rows = 0
    try:
        with open_csv(path) as file:
            for _, fields in read_records(file, path, delimiter):
                if header is None:
                    header = [name.strip() for name in fields]
                else:
                    data_rows += 1
    except OSError as err:
        raise ConfigError(f"{key}: cannot read {path}: {_reason(err)}") from err
    except CsvFormatError as err:
        raise ConfigError(f"{key}: {err}") from err
    if not header:
        raise ConfigError(f"{key}: {path} is empty")
    return header, data_rows


def _parse_mqtt_source(table: _Table, features: list[str]) -> MqttSourceConfig:
    topic_tables = table.array_of_tables("topics")
    if not topic_tables:
        raise ConfigError(f"{table.key('topics')}: at least one topic is required")
    topics = []
    for topic_table in topic_tables:
        topic = topic_table.string("topic")
        if not topic or any(char in topic for char in "+#"):
            raise ConfigError(
                f"{topic_table.key('topic')}: expected a topic without wildcards, got {topic!r}"
            )
        _check_mqtt_string(topic_table.key("topic"), topic)
        _check_mqtt_characters(topic_table.key("topic"), topic)
        feature = topic_table.string("feature")
        if feature not in features:
            raise ConfigError(
                f"{topic_table.key('feature')}: {feature!r} is not one of the device's "
                f"features ({', '.join(features)})"
            )
        value_path = topic_table.string("value_path", default=None)
        if value_path is not None and (not value_path or "" in value_path.split(".")):
            raise ConfigError(
                f"{topic_table.key('value_path')}: expected dotted keys such as "
                f'"temperature" or "a.b", got {value_path!r}'
            )
        topic_table.reject_unknown()
        topics.append(TopicConfig(topic, feature, value_path))
    missing = [f for f in features if f not in {t.feature for t in topics}]
    if missing:
        raise ConfigError(f"{table.key('topics')}: no topic for feature {missing[0]!r}")
    table.reject_unknown()
    return MqttSourceConfig(tuple(topics))


def _parse_simulation(table: _Table) -> SimulationConfig:
    poison = table.string("poison", default=None)
    if poison is not None and poison not in POISON_METHODS:
        raise ConfigError(
            f"{table.key('poison')}: expected one of {', '.join(POISON_METHODS)}, got {poison!r}"
        )
    noise = table.number("false_reading_noise", default=0.0)
    if noise < 0:
        raise ConfigError(f"{table.key('false_reading_noise')}: must not be negative")
    config = SimulationConfig(
        compromise_at_round=table.integer("compromise_at_round", default=1, minimum=1),
        false_reading_offset=table.number("false_reading_offset", default=0.0),
        false_reading_noise=noise,
        unknown_peers=table.integer("unknown_peers", default=0, minimum=0),
        poison=poison,
        poison_scale=table.number("poison_scale", default=1.0),
        seed=table.integer("seed", default=0, minimum=0),
    )
    table.reject_unknown()
    return config


# Typed access to TOML tables with key paths in the errors.

_MISSING = object()


class _Table:
    """One TOML table and its path, with getters that raise ConfigError naming the key."""

    def __init__(self, data: Any, key_path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{key_path}: expected a table, got {_describe(data)}")
        self.data = data
        self.key_path = key_path
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.key_path}.{name}" if self.key_path else name

    def _get(self, name: str, default: Any) -> Any:
        self._read.add(name)
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            raise ConfigError(f"{self.key(name)}: missing required key")
        return default

    def _typed(
        self,
        name: str,
        default: Any,
        check: Callable[[Any], bool],
        expected: str,
        secret: bool = False,
    ) -> Any:
        value = self._get(name, default)
        if value is default and name not in self.data:
            return value
        if not check(value):
            raise ConfigError(
                f"{self.key(name)}: expected {expected}, got {_describe(value, secret)}"
            )
        return value

    def string(self, name: str, default: Any = _MISSING, secret: bool = False) -> Any:
        """Return a string; with ``secret`` an error names the wrong type but not the value."""
        return self._typed(name, default, lambda v: isinstance(v, str), "a string", secret)

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, bool), "true or false")

    def integer(
        self,
        name: str,
        default: Any = _MISSING,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> Any:
        value = self._typed(
            name, default, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"
        )
        if value is None or name not in self.data:
            return value
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.key(name)}: must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self.key(name)}: must be <= {maximum}, got {value}")
        return value

    def number(self, name: str, default: Any = _MISSING) -> Any:
        value = self._typed(
            name,
            default,
            lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "a number",
        )
        if value is None:
            return None
        if not math.isfinite(value):
            raise ConfigError(f"{self.key(name)}: must be finite, got {value}")
        return float(value)

    def identifier(self, name: str) -> str:
        value = self.string(name)
        if not protocol.is_valid_id(value):
            raise ConfigError(
                f"{self.key(name)}: invalid id {value!r}, expected lower-case letters, digits, "
                f"'-' and '_' ({protocol.ID_PATTERN.pattern})"
            )
        return value

    def string_list(self, name: str, default: Any = _MISSING, allow_empty: bool = False) -> Any:
        value = self._typed(name, default, lambda v: isinstance(v, list), "a list of strings")
        if name not in self.data:
            return value
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(
                    f"{self.key(name)}[{index}]: expected a string, got {_describe(item)}"
                )
        if not value and not allow_empty:
            raise ConfigError(f"{self.key(name)}: must not be empty")
        return value

    def hex_key(self, name: str, secret: bool = False) -> str:
        value = self.string(name, secret=secret)
        expected = KEY_BYTES * 2
        if len(value) != expected:
            raise ConfigError(
                f"{self.key(name)}: must be {expected} hexadecimal characters, got {len(value)}"
            )
        try:
            bytes.fromhex(value)
        except ValueError as err:
            raise ConfigError(
                f"{self.key(name)}: must contain only hexadecimal characters (0-9, a-f)"
            ) from err
        return value.lower()

    def path(self, name: str, base_dir: Path) -> Path:
        value = self.string(name)
        if not value:
            raise ConfigError(f"{self.key(name)}: must not be empty")
        if "\0" in value:
            raise ConfigError(f"{self.key(name)}: must not contain the character U+0000")
        try:
            path = Path(value).expanduser()
        except RuntimeError as err:
            # Raised for ~user when the user does not exist.
            raise ConfigError(f"{self.key(name)}: cannot expand {value!r}: {err}") from err
        return path if path.is_absolute() else base_dir / path

    def table(self, name: str, required: bool = True) -> _Table:
        value = self._get(name, _MISSING if required else {})
        return _Table(value, self.key(name))

    def array_of_tables(self, name: str) -> list[_Table]:
        value = self._get(name, [])
        if not isinstance(value, list):
            raise ConfigError(
                f"{self.key(name)}: expected an array of tables, got {_describe(value)}"
            )
        return [_Table(item, f"{self.key(name)}[{index}]") for index, item in enumerate(value)]

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key")


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _shorten(value: Any, limit: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _describe(value: Any, secret: bool = False) -> str:
    type_names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    name = type_names.get(type(value), type(value).__name__)
    return name if secret else f"{name} ({_shorten(value)})"
