"""Consistency of the integration's strings, translations, icons and action descriptions."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from custom_components.fltrust.binary_sensor import DEVICE_BINARY_SENSORS, NODE_BINARY_SENSORS
from custom_components.fltrust.core.trust import TrustConfig
from custom_components.fltrust.device_trigger import TRIGGER_EVENTS
from custom_components.fltrust.sensor import DEVICE_SENSORS, FEDERATION_SENSORS, NODE_SENSORS

INTEGRATION = Path(__file__).parents[2] / "custom_components/fltrust"


def _json(name: str) -> dict:
    return json.loads((INTEGRATION / name).read_text())


def test_english_translation_matches_strings() -> None:
    """Test translations/en.json is a copy of strings.json."""
    assert _json("translations/en.json") == _json("strings.json")


def test_flow_errors_and_aborts_translated() -> None:
    """Test every error and abort reason the config flow returns has a text."""
    config = _json("strings.json")["config"]
    assert set(config["error"]) == {
        "invalid_topic_prefix",
        "invalid_federation_key",
        "timeout_not_below_interval",
        "quarantine_not_below_reauth",
        "quarantine_not_below_initial",
        "not_a_number",
    }
    assert set(config["abort"]) == {
        "already_configured",
        "mqtt_not_configured",
    }
    assert set(config["create_entry"]) == {"default", "generated_key"}


def test_exceptions_translated() -> None:
    """Test every translation key raised by the integration has a message."""
    raised = set()
    # The modules that raise; entity descriptions elsewhere use translation keys too.
    for name in ("__init__.py", "coordinator.py", "device_trigger.py", "services.py"):
        for line in (INTEGRATION / name).read_text().splitlines():
            if 'translation_key="' in line:
                raised.add(line.split('translation_key="')[1].split('"')[0])
    assert raised == set(_json("strings.json")["exceptions"])


def test_entities_translated_and_have_icons() -> None:
    """Test each entity description's translation key has a name and an icon."""
    entity = _json("strings.json")["entity"]
    icons = _json("icons.json")["entity"]
    for platform, descriptions in (
        ("sensor", FEDERATION_SENSORS + NODE_SENSORS + DEVICE_SENSORS),
        ("binary_sensor", NODE_BINARY_SENSORS + DEVICE_BINARY_SENSORS),
    ):
        for description in descriptions:
            if description.translation_key is None:
                # Named after its device class.
                assert description.device_class is not None
                continue
            assert entity[platform][description.translation_key]["name"]
            assert description.translation_key in icons[platform]


def test_actions_described() -> None:
    """Test services.yaml, the strings and the icons list the same actions and fields."""
    services = yaml.safe_load((INTEGRATION / "services.yaml").read_text())
    strings = _json("strings.json")["services"]
    assert set(services) == set(strings) == set(_json("icons.json")["services"])
    for name, service in services.items():
        assert set(service["fields"]) == set(strings[name]["fields"])


def test_device_triggers_translated() -> None:
    """Test every device trigger type has a text."""
    triggers = _json("strings.json")["device_automation"]["trigger_type"]
    assert set(triggers) == set(TRIGGER_EVENTS)


def test_initial_trust_in_threshold_error() -> None:
    """Test the error text names the trust score that new nodes start with."""
    strings = _json("strings.json")
    message = strings["config"]["error"]["quarantine_not_below_initial"]

    assert f"below {TrustConfig().initial_score:.0f}," in message
    assert strings["options"]["error"]["quarantine_not_below_initial"] == message
