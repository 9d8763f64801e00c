"""Conversion of the Home Assistant add-on's options into the edge node's configuration.

The Supervisor stores the options that a user sets in the add-on's UI in
``/data/options.json``. The add-on's run script reads the broker of the
Supervisor's MQTT service and passes it in environment variables, because a
password on a command line is visible to every process in the container.
``build_document`` turns both into the document of the node's TOML
configuration, and ``write_addon_config`` writes the file once the node's own
loader accepts it.

Every error names the option as the add-on's UI shows it, such as
``topics[2].feature``. No error contains the value of ``node_key``,
``mqtt_password`` or the service's password.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .addon_options import AddonOptionError, OptionReader
from .config import ConfigError, NodeConfig, load_config, read_small_file
from .toml_writer import dumps_toml

# Environment variables of the MQTT service, set by the add-on's run script.
SERVICE_VARIABLES = {
    "host": "FLTRUST_MQTT_HOST",
    "port": "FLTRUST_MQTT_PORT",
    "username": "FLTRUST_MQTT_USERNAME",
    "password": "FLTRUST_MQTT_PASSWORD",
    "tls": "FLTRUST_MQTT_SSL",
}
DEFAULT_PREFIX = "fltrust"
# Values of the extra_features option. A single choice keeps the option a
# drop-down in the add-on's UI, where a list would need one row per feature.
EXTRA_FEATURE_CHOICES = {
    "trend_and_std": ["trend", "std"],
    "trend": ["trend"],
    "std": ["std"],
    "none": [],
}
LOG_LEVELS = ("debug", "info", "warning", "error")
INTEGER_DETECTION_OPTIONS = ("smoothing_window", "long_window", "train_rows")
NUMBER_DETECTION_OPTIONS = ("target_fpr", "heartbeat_interval")
BROKER_OPTIONS = ("mqtt_host", "mqtt_port", "mqtt_username", "mqtt_password", "mqtt_tls")
TOP_LEVEL_OPTIONS = frozenset(
    {
        "node_id",
        "node_key",
        "coordinator_public_key",
        "topic_prefix",
        *BROKER_OPTIONS,
        *INTEGER_DETECTION_OPTIONS,
        *NUMBER_DETECTION_OPTIONS,
        "personalize",
        "extra_features",
        "known_peers",
        "devices",
        "topics",
        "log_level",
    }
)
DEVICE_FIELDS = frozenset({"id", "kind", "name", "features"})
TOPIC_FIELDS = frozenset({"device", "feature", "topic", "value_path"})


@dataclass(frozen=True)
class BrokerSettings:
    """An MQTT broker and its credentials. None marks a value that was not given."""

    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool | None = None


@dataclass
class AddonDocument:
    """The node's configuration document built from the add-on's options.

    ``option_names`` maps key paths of the document, such as
    ``devices[0].source.topics[1]``, to the option they come from, such as
    ``topics[3]``.
    """

    data: dict[str, Any]
    option_names: dict[str, str]
    broker_from_service: bool

    def translate(self, message: str) -> str:
        """Return a ``ConfigError`` message with its leading key path renamed to the option."""
        key, separator, rest = message.partition(": ")
        if not separator:
            return message
        for prefix in sorted(self.option_names, key=len, reverse=True):
            if key == prefix or key.startswith((f"{prefix}.", f"{prefix}[")):
                return f"{self.option_names[prefix]}{key[len(prefix) :]}: {rest}"
        return message


def service_from_environment(environ: Mapping[str, str]) -> BrokerSettings:
    """Read the MQTT service's broker from the run script's environment variables.

    Unset and empty variables count as not given, and so does ``null``: bashio
    prints the JSON null of a field the service leaves out, such as the
    username of a broker without accounts, as that word.

    Raises:
        AddonOptionError: the port or the TLS flag is invalid.
    """
    values = {
        name: None if environ.get(variable) in (None, "", "null") else environ[variable]
        for name, variable in SERVICE_VARIABLES.items()
    }
    port = None
    if values["port"] is not None:
        port = _parse_port(values["port"], SERVICE_VARIABLES["port"])
    tls = None
    if values["tls"] is not None:
        flag = values["tls"].lower()
        if flag not in ("true", "false"):
            raise AddonOptionError(
                f"{SERVICE_VARIABLES['tls']}: expected true or false, got {values['tls']!r}"
            )
        tls = flag == "true"
    return BrokerSettings(values["host"], port, values["username"], values["password"], tls)


def _parse_port(text: str, name: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise AddonOptionError(f"{name}: expected a port number from 1 to 65535, got {text!r}")
    return port


def read_options(path: Path) -> Any:
    """Return the parsed JSON of the Supervisor's options file.

    Raises:
        AddonOptionError: the file is missing, unreadable, too large or not JSON.
    """
    try:
        raw = read_small_file(path, "options file")
    except ConfigError as err:
        raise AddonOptionError(str(err)) from err
    try:
        return json.loads(raw)
    except RecursionError as err:
        raise AddonOptionError(f"{path}: invalid JSON: nested too deeply") from err
    except ValueError as err:
        # The messages give the position, or the length of an overlong number, but
        # none of the file's text. UnicodeDecodeError and JSONDecodeError are ValueErrors.
        raise AddonOptionError(f"{path}: invalid JSON: {err}") from err


def build_document(options: Any, service: BrokerSettings, state_dir: Path) -> AddonDocument:
    """Convert the add-on's options and the MQTT service into a configuration document.

    This checks what the node's loader cannot see, such as a topic that names
    an unknown device. The loader checks the rest when the file is written.

    Raises:
        AddonOptionError: an option is missing, has the wrong type, or refers
            to something that does not exist.
    """
    root = OptionReader(options, "", TOP_LEVEL_OPTIONS)
    names = {
        "node_id": "node_id",
        "mqtt.prefix": "topic_prefix",
        "security.node_key": "node_key",
        "security.coordinator_public_key": "coordinator_public_key",
        "security.state_dir": "--state-dir",
    }
    node_id = root.text("node_id", required=True)
    broker, broker_names, from_service = _resolve_broker(root, service)
    names.update(broker_names)
    mqtt: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port or 1883,
        "prefix": root.text("topic_prefix") or DEFAULT_PREFIX,
        "tls": bool(broker.tls),
    }
    if broker.username is not None:
        mqtt["username"] = broker.username
    if broker.password is not None:
        mqtt["password"] = broker.password
    # Pasted keys often carry a trailing space or line break.
    security = {
        "node_key": root.text("node_key", required=True, secret=True).strip(),
        "coordinator_public_key": root.text("coordinator_public_key", required=True).strip(),
        "state_dir": str(state_dir.absolute()),
    }
    detection = _build_detection(root)
    names.update({f"detection.{key}": key for key in detection})
    devices, topic_names = _build_devices(root)
    names.update(topic_names)
    # The run script passes log_level to `fltrust-edge run`, so it is only checked here.
    root.choice("log_level", LOG_LEVELS)
    data = {
        "node_id": node_id,
        "mqtt": mqtt,
        "security": security,
        "detection": detection,
        "devices": devices,
    }
    return AddonDocument(data, names, from_service)


def _resolve_broker(
    root: OptionReader, service: BrokerSettings
) -> tuple[BrokerSettings, dict[str, str], bool]:
    """Return the broker to use, the option behind each of its keys, and whether it is the service.

    A ``mqtt_host`` option replaces the whole service. Without it, the
    ``mqtt_port`` and ``mqtt_tls`` options replace the service's values, and
    ``mqtt_username`` replaces the service's credentials together with
    ``mqtt_password``, so that a password never goes with another account's user name.
    """
    chosen = BrokerSettings(
        host=root.text("mqtt_host"),
        port=root.port("mqtt_port"),
        username=root.text("mqtt_username"),
        password=root.text("mqtt_password", secret=True),
        tls=root.boolean("mqtt_tls"),
    )
    names = {f"mqtt.{name}": f"mqtt_{name}" for name in SERVICE_VARIABLES}
    if chosen.password is not None and chosen.username is None:
        raise AddonOptionError("mqtt_password: set mqtt_username too, or clear mqtt_password")
    if chosen.host is not None:
        return chosen, names, False
    if service.host is None:
        raise AddonOptionError(
            "mqtt_host: no MQTT broker, because the Supervisor offers no MQTT service. "
            "Install and start the Mosquitto broker add-on, or set mqtt_host to your broker"
        )
    own_account = chosen.username is not None
    merged = BrokerSettings(
        host=service.host,
        port=chosen.port if chosen.port is not None else service.port,
        username=chosen.username if own_account else service.username,
        password=chosen.password if own_account else service.password,
        tls=chosen.tls if chosen.tls is not None else service.tls,
    )
    names["mqtt.host"] = SERVICE_VARIABLES["host"]
    for name in ("port", "tls"):
        if getattr(chosen, name) is None:
            names[f"mqtt.{name}"] = SERVICE_VARIABLES[name]
    if not own_account:
        names["mqtt.username"] = SERVICE_VARIABLES["username"]
        names["mqtt.password"] = SERVICE_VARIABLES["password"]
    return merged, names, True


def _build_detection(root: OptionReader) -> dict[str, Any]:
    """Return the ``[detection]`` table. Options that are not set keep the node's defaults."""
    detection: dict[str, Any] = {}
    for name in INTEGER_DETECTION_OPTIONS:
        detection[name] = root.integer(name)
    for name in NUMBER_DETECTION_OPTIONS:
        detection[name] = root.number(name)
    detection["personalize"] = root.boolean("personalize")
    choice = root.choice("extra_features", tuple(EXTRA_FEATURE_CHOICES))
    detection["extra_features"] = None if choice is None else EXTRA_FEATURE_CHOICES[choice]
    detection["known_peers"] = root.text_list("known_peers")
    return {name: value for name, value in detection.items() if value is not None}


def _build_devices(root: OptionReader) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Return the ``[[devices]]`` tables, each with the topics that name it.

    The add-on lists topics beside the devices rather than inside them, because
    the add-on developer documentation allows options to nest two levels deep,
    and older Supervisor versions reject a list of objects inside a list of objects.
    The second value maps each topic's key path in the document to its option.
    """
    device_options = root.objects("devices", DEVICE_FIELDS)
    if not device_options:
        raise AddonOptionError("devices: add at least one device")
    devices: list[dict[str, Any]] = []
    index_by_id: dict[str, int] = {}
    for options in device_options:
        device_id = options.text("id", required=True)
        if device_id in index_by_id:
            raise AddonOptionError(f"{options.name('id')}: duplicate device id {device_id!r}")
        features = options.text_list("features")
        if not features:
            raise AddonOptionError(f"{options.name('features')}: list at least one feature")
        device: dict[str, Any] = {"id": device_id, "kind": options.text("kind", required=True)}
        name = options.text("name")
        if name is not None:
            device["name"] = name
        device["features"] = features
        device["source"] = {"type": "mqtt", "topics": []}
        index_by_id[device_id] = len(devices)
        devices.append(device)

    names: dict[str, str] = {}
    for topic_index, options in enumerate(root.objects("topics", TOPIC_FIELDS)):
        device_id = options.text("device", required=True)
        if device_id not in index_by_id:
            raise AddonOptionError(
                f"{options.name('device')}: no device with id {device_id!r}; "
                f"the devices are {', '.join(index_by_id)}"
            )
        device_index = index_by_id[device_id]
        device = devices[device_index]
        feature = options.text("feature", required=True)
        if feature not in device["features"]:
            raise AddonOptionError(
                f"{options.name('feature')}: {feature!r} is not a feature of device "
                f"{device_id!r}, whose features are {', '.join(device['features'])}"
            )
        topic = {"topic": options.text("topic", required=True), "feature": feature}
        value_path = options.text("value_path")
        if value_path is not None:
            topic["value_path"] = value_path
        topics = device["source"]["topics"]
        names[f"devices[{device_index}].source.topics[{len(topics)}]"] = f"topics[{topic_index}]"
        topics.append(topic)

    for device_index, device in enumerate(devices):
        covered = {topic["feature"] for topic in device["source"]["topics"]}
        for feature in device["features"]:
            if feature not in covered:
                raise AddonOptionError(
                    f"devices[{device_index}].features: no topic for feature {feature!r} of "
                    f"device {device['id']!r}. Add an entry to topics with this device and feature"
                )
    return devices, names


def write_addon_config(
    options_path: Path, output_path: Path, service: BrokerSettings, state_dir: Path
) -> tuple[AddonDocument, NodeConfig]:
    """Convert the options file and write the node's configuration to ``output_path``.

    The file is written under a temporary name, readable by its owner only
    because it contains the node key, and loaded with ``load_config``. It
    replaces ``output_path`` only when the loader accepts it. The loader
    creates ``state_dir`` if it is missing.

    Raises:
        AddonOptionError: the options are invalid, with the option's name.
        OSError: the file cannot be written.
    """
    document = build_document(read_options(options_path), service, state_dir)
    text = dumps_toml(document.data)
    temporary = output_path.with_name(f".{output_path.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        config = load_config(temporary)
        os.replace(temporary, output_path)
    except ConfigError as err:
        temporary.unlink(missing_ok=True)
        raise AddonOptionError(document.translate(str(err))) from err
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    return document, config
