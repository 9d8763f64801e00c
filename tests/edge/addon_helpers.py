"""Options of the Home Assistant add-on, as the Supervisor writes them to options.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from fltrust_edge.addon import BrokerSettings

from .conftest import NODE_ID, PREFIX, coordinator_public_key, node_key

SERVICE_PASSWORD = "service-secret-Q7"
SERVICE = BrokerSettings(
    host="core-mosquitto", port=1883, username="addons", password=SERVICE_PASSWORD, tls=False
)
CLIMATE_TOPIC = "zigbee2mqtt/kitchen_sensor"
HALLWAY_TOPIC = "hallway/sensor/temperature/state"


def addon_options(**overrides: Any) -> dict[str, Any]:
    """Return valid options with two devices: a climate sensor on one JSON topic and a thermometer.

    Keys given as None are removed.
    """
    options: dict[str, Any] = {
        "node_id": NODE_ID,
        "node_key": node_key().hex(),
        "coordinator_public_key": coordinator_public_key(),
        "topic_prefix": PREFIX,
        "smoothing_window": 3,
        "long_window": 12,
        "extra_features": "trend",
        "target_fpr": 0.02,
        "personalize": False,
        "train_rows": 40,
        "heartbeat_interval": 1.0,
        "known_peers": ["192.168.1.0/24"],
        "devices": [
            {
                "id": "kitchen-climate",
                "kind": "climate",
                "name": "Kitchen climate",
                "features": ["temperature", "humidity"],
            },
            {"id": "hallway-temperature", "kind": "temperature", "features": ["temperature"]},
        ],
        "topics": [
            {
                "device": "kitchen-climate",
                "feature": "humidity",
                "topic": CLIMATE_TOPIC,
                "value_path": "humidity",
            },
            {"device": "hallway-temperature", "feature": "temperature", "topic": HALLWAY_TOPIC},
            {
                "device": "kitchen-climate",
                "feature": "temperature",
                "topic": CLIMATE_TOPIC,
                "value_path": "temperature",
            },
        ],
        "log_level": "info",
    }
    for key, value in overrides.items():
        if value is None:
            options.pop(key, None)
        else:
            options[key] = copy.deepcopy(value)
    return options


def write_options(directory: Path, options: Any) -> Path:
    path = directory / "options.json"
    path.write_text(json.dumps(options))
    return path
