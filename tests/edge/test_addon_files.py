"""The Home Assistant add-on's files: config.yaml, translations, build.yaml and run.sh."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fltrust_core import protocol
from fltrust_edge import __version__
from fltrust_edge.addon import (
    DEVICE_FIELDS,
    EXTRA_FEATURE_CHOICES,
    LOG_LEVELS,
    TOP_LEVEL_OPTIONS,
    TOPIC_FIELDS,
    write_addon_config,
)
from fltrust_edge.config import DetectionConfig, load_config

from .addon_helpers import SERVICE, addon_options, write_options

REPO_ROOT = Path(__file__).resolve().parents[2]
ADDON = REPO_ROOT / "addon"
# The value types of the Supervisor's option schema, each optionally ending in "?".
SCHEMA_TYPE = re.compile(
    r"^(bool|email|url|port|password|str(\(\d*,\d*\))?|int(\(\d*,\d*\))?"
    r"|float(\([\d.]*,[\d.]*\))?|match\(.+\)|list\(.+\)|device(\(.+\))?)\??$"
)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file with PyYAML.

    The edge node's environment does not install PyYAML, so without it the
    file is parsed by the Home Assistant environment's Python (.venv), which
    script/setup creates beside it.
    """
    try:
        import yaml
    except ImportError:
        python = Path(os.environ.get("FLTRUST_VENV", REPO_ROOT / ".venv")) / "bin" / "python"
        if not python.exists():
            pytest.skip(f"PyYAML is not installed here, and {python} is missing")
        script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
        completed = subprocess.run(
            [str(python), "-c", script, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(completed.stdout)
    with path.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


@pytest.fixture(scope="module")
def addon_config() -> dict[str, Any]:
    return load_yaml(ADDON / "config.yaml")


@pytest.fixture(scope="module")
def translations() -> dict[str, Any]:
    return load_yaml(ADDON / "translations" / "en.yaml")["configuration"]


def test_version_equals_package_version(addon_config):
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())

    assert addon_config["version"] == pyproject["project"]["version"]
    assert addon_config["version"] == __version__


def test_required_keys(addon_config):
    assert addon_config["slug"] == "fltrust_edge"
    assert addon_config["name"]
    assert addon_config["description"]
    assert addon_config["init"] is False
    assert addon_config["services"] == ["mqtt:want"]
    assert set(addon_config["arch"]) <= {"aarch64", "amd64", "armhf", "armv7", "i386"}


def test_every_option_has_schema_entry(addon_config):
    missing = set(addon_config["options"]) - set(addon_config["schema"])

    assert missing == set()


def test_schema_matches_converter(addon_config):
    schema = addon_config["schema"]

    assert set(schema) == TOP_LEVEL_OPTIONS
    assert set(schema["devices"][0]) == DEVICE_FIELDS
    assert set(schema["topics"][0]) == TOPIC_FIELDS
    assert schema["extra_features"] == f"list({'|'.join(EXTRA_FEATURE_CHOICES)})"
    assert schema["log_level"] == f"list({'|'.join(LOG_LEVELS)})"


def test_id_patterns_match_protocol(addon_config):
    schema = addon_config["schema"]
    expected = f"match({protocol.ID_PATTERN.pattern})"

    assert schema["node_id"] == expected
    assert schema["devices"][0]["id"] == expected
    assert schema["devices"][0]["kind"] == expected


def test_secrets_are_password_fields(addon_config):
    schema = addon_config["schema"]

    assert schema["node_key"] == "password"
    assert schema["mqtt_password"] == "password?"


def schema_leaves(schema: dict[str, Any], depth: int = 1):
    """Yield (name, type, depth) for every value type in the schema."""
    for name, element in schema.items():
        if isinstance(element, dict):
            yield from schema_leaves(element, depth + 1)
        elif isinstance(element, list):
            (item,) = element
            if isinstance(item, dict):
                yield from schema_leaves(item, depth + 1)
            else:
                yield name, item, depth + 1
        else:
            yield name, element, depth


def test_schema_uses_supervisor_types(addon_config):
    for name, element, _ in schema_leaves(addon_config["schema"]):
        assert SCHEMA_TYPE.match(element), f"{name}: {element!r}"


def test_schema_nests_at_most_two_levels(addon_config):
    # The add-on developer documentation allows nesting two levels deep, and
    # older Supervisor versions reject a list of objects inside a list of objects.
    for name, _, depth in schema_leaves(addon_config["schema"]):
        assert depth <= 3, f"{name} is nested {depth - 1} levels deep"


def test_every_option_has_translation(addon_config, translations):
    for name, element in addon_config["schema"].items():
        entry = translations.get(name)
        assert entry, f"{name} has no translation"
        assert entry["name"], name
        assert entry["description"], name
        if isinstance(element, list) and isinstance(element[0], dict):
            for field in element[0]:
                assert entry["fields"][field]["name"], f"{name}.{field}"
                assert entry["fields"][field]["description"], f"{name}.{field}"
    assert set(translations) == set(addon_config["schema"])


def test_default_options_give_node_defaults(tmp_path, addon_config):
    options = dict(addon_config["options"])
    required = addon_options()
    for name in ("node_id", "node_key", "coordinator_public_key", "devices", "topics"):
        options[name] = required[name]
    out = tmp_path / "edge.toml"

    write_addon_config(write_options(tmp_path, options), out, SERVICE, tmp_path / "state")

    assert load_config(out).detection == DetectionConfig()


def test_build_covers_every_architecture(addon_config):
    build = load_yaml(ADDON / "build.yaml")

    assert set(build["build_from"]) == set(addon_config["arch"])


def test_dockerfile_installs_release_tag_of_repository():
    manifest = json.loads((REPO_ROOT / "custom_components/fltrust/manifest.json").read_text())
    dockerfile = (ADDON / "Dockerfile").read_text()

    expected = f'ARG FLTRUST_EDGE_SOURCE="git+{manifest["documentation"]}@v${{BUILD_VERSION}}"'
    assert expected in dockerfile.splitlines()


def test_repository_file_names_repository():
    repository = load_yaml(REPO_ROOT / "repository.yaml")

    assert repository["name"] == "fltrust"


# The run script, with bashio and fltrust-edge replaced by stand-ins that record their use.

BASHIO_STAND_IN = """
bashio::services.available() { [[ -n "${STAND_IN_SERVICE:-}" ]]; }
bashio::services() {
    case "$2" in
        host) echo core-mosquitto ;;
        port) echo 1883 ;;
        username) echo addons ;;
        password) echo service-password ;;
        ssl) echo false ;;
    esac
}
bashio::config() { [[ "$1" == log_level ]] && echo warning; }
bashio::log.info() { echo "info: $*"; }
bashio::exit.nok() { echo "fatal: $*" >&2; exit 1; }
"""
FLTRUST_EDGE_STAND_IN = """#!/bin/sh
echo "$* | ${FLTRUST_MQTT_HOST-unset} ${FLTRUST_MQTT_PORT-unset} ${FLTRUST_MQTT_USERNAME-unset} \
${FLTRUST_MQTT_PASSWORD-unset} ${FLTRUST_MQTT_SSL-unset}" >> "$STAND_IN_RECORD"
[ "$1" != addon-config ] || exit "${STAND_IN_STATUS:-0}"
"""


def run_script(tmp_path: Path, service: bool, status: int = 0) -> tuple[int, list[str]]:
    """Run addon/run.sh with the stand-ins and return its exit code and the recorded commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "bashio.sh").write_text(BASHIO_STAND_IN)
    stand_in = bin_dir / "fltrust-edge"
    stand_in.write_text(FLTRUST_EDGE_STAND_IN)
    stand_in.chmod(0o755)
    record = tmp_path / "record.txt"
    environment = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "BASH_ENV": str(tmp_path / "bashio.sh"),
        "STAND_IN_RECORD": str(record),
        "STAND_IN_STATUS": str(status),
    }
    if service:
        environment["STAND_IN_SERVICE"] = "1"
    completed = subprocess.run(
        ["bash", str(ADDON / "run.sh")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = record.read_text().splitlines() if record.exists() else []
    return completed.returncode, lines


def test_run_script_passes_service_and_options(tmp_path):
    code, commands = run_script(tmp_path, service=True)

    assert code == 0
    assert commands == [
        "addon-config --options /data/options.json --out /data/fltrust-edge.toml "
        "--state-dir /data/state | core-mosquitto 1883 addons service-password false",
        "run --config /data/fltrust-edge.toml --log-level WARNING "
        "| core-mosquitto 1883 addons service-password false",
    ]


def test_run_script_without_service(tmp_path):
    code, commands = run_script(tmp_path, service=False)

    assert code == 0
    assert len(commands) == 2
    for command in commands:
        assert command.endswith(" | unset unset unset unset unset")


def test_run_script_stops_on_invalid_options(tmp_path):
    code, commands = run_script(tmp_path, service=True, status=2)

    assert code == 1
    assert len(commands) == 1
    assert commands[0].startswith("addon-config ")


def test_run_script_is_executable():
    assert os.access(ADDON / "run.sh", os.X_OK)
    assert (ADDON / "run.sh").read_text().startswith("#!/usr/bin/with-contenv bashio\n")


def test_no_other_config_yaml_in_repository():
    # The Supervisor takes every config.yaml in the repository for an add-on's configuration.
    tracked = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "*config.yaml", "*config.yml", "*config.json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    names = {"config.yaml", "config.yml", "config.json"}

    others = [path for path in tracked if Path(path).name in names and path != "addon/config.yaml"]
    assert others == []
