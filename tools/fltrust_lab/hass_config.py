"""The configuration folder that the lab's Home Assistant starts from.

``write_config`` writes ``configuration.yaml``, links the fltrust integration
into ``custom_components`` and writes the HTTP settings to ``.storage/http``.

Home Assistant 2026.10 keeps its HTTP settings in ``.storage/http`` as a
``stable`` and a ``pending`` slot (``homeassistant/components/http/config.py``).
It moves an ``http:`` section of ``configuration.yaml`` into the pending slot
and, unless an admin sends the websocket command ``http/config/promote``
within five minutes, restarts on the stable slot, which by default binds every
interface on port 8123. The lab therefore writes its loopback settings
straight into the stable slot and writes no ``http:`` section, so that the
server binds 127.0.0.1 from the first start on and nothing is reverted.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import INTEGRATION_DIR, LOOPBACK

_LOGGER = logging.getLogger(__name__)

DEFAULT_LOG_LEVELS = {
    "custom_components.fltrust": "debug",
    "homeassistant.components.mqtt": "info",
    "homeassistant.setup": "info",
}
# Integrations the lab needs. ``frontend`` is added when its package is importable.
# ``http`` is set up as a dependency of ``api``, and its settings live in
# ``.storage/http`` (see ``http_settings``).
BASE_COMPONENTS = ("api", "auth", "onboarding", "config", "websocket_api", "mqtt")

# Format of ``.storage/http`` in Home Assistant 2026.10 (``STORAGE_VERSION`` and
# ``STORAGE_MINOR_VERSION`` in homeassistant/components/http/config.py).
HTTP_STORAGE_VERSION = 2
HTTP_STORAGE_MINOR_VERSION = 2


def frontend_available(python: Path | None = None) -> bool:
    """Return whether the frontend package (``hass_frontend``) is importable.

    ``python`` is the interpreter to ask; by default the running one.
    """
    if python is None:
        return importlib.util.find_spec("hass_frontend") is not None
    check = (
        "import importlib.util, sys; sys.exit(importlib.util.find_spec('hass_frontend') is None)"
    )
    return subprocess.run([python, "-c", check], check=False).returncode == 0


def _yaml_scalar(value: object) -> str:
    # JSON strings and numbers are valid YAML scalars.
    return json.dumps(value)


def http_settings(port: int) -> dict[str, Any]:
    """Return the HTTP settings the lab's Home Assistant runs with: 127.0.0.1 on ``port``.

    Home Assistant reads the stored slot by key without applying defaults, so
    every key of its storage schema is present. The values other than host and
    port are the schema defaults of Home Assistant 2026.10.
    """
    return {
        "server_host": [LOOPBACK],
        "server_port": port,
        "cors_allowed_origins": ["https://cast.home-assistant.io"],
        "login_attempts_threshold": -1,
        "ip_ban_enabled": True,
        "ssl_profile": "modern",
        "use_x_frame_options": True,
    }


def write_http_storage(config_dir: Path, port: int) -> Path:
    """Write ``.storage/http`` with the loopback settings as the stable slot and return its path.

    The pending slot is empty and the YAML migration is marked done, so Home
    Assistant starts the server on the stable slot and schedules no revert.
    Recovery mode also starts on the stable slot.

    NOTE: when the stable slot cannot be bound in recovery mode (another
    program took the port after ``HomeAssistantProcess.start`` checked it),
    Home Assistant 2026.10 falls back to its built-in default, which binds
    every interface on port 8123. No setting turns that fallback off.
    """
    stable = {
        **http_settings(port),
        "created_at": datetime.now(UTC).isoformat(),
        "error": None,
        "error_message": None,
    }
    document = {
        "version": HTTP_STORAGE_VERSION,
        "minor_version": HTTP_STORAGE_MINOR_VERSION,
        "key": "http",
        "data": {"stable": stable, "pending": None, "yaml_migration_done": True},
    }
    storage_dir = config_dir / ".storage"
    storage_dir.mkdir(parents=True, exist_ok=True)
    path = storage_dir / "http"
    # Home Assistant keeps this file private (mode 0600), and so does the lab.
    # The mode argument of os.open only applies to a new file, hence fchmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(document, file, indent=2)
        file.write("\n")
    return path


def write_config(
    config_dir: Path,
    port: int,
    *,
    log_levels: Mapping[str, str] | None = None,
    frontend: bool | None = None,
    integration_dir: Path = INTEGRATION_DIR,
) -> None:
    """Write ``configuration.yaml`` and ``.storage/http``, and link the fltrust integration.

    The location, unit system and time zone are set explicitly so that Home
    Assistant does not look them up online. ``frontend`` defaults to whether
    the frontend package is installed. An existing ``.storage/http`` is
    replaced, so a reused folder also starts on 127.0.0.1 and ``port``.
    """
    config_dir.mkdir(parents=True, exist_ok=True)
    if frontend is None:
        frontend = frontend_available()
    levels = dict(DEFAULT_LOG_LEVELS)
    levels.update(log_levels or {})
    lines = [
        "# Generated by fltrust_lab. Only the integrations the lab needs are listed.",
        "# The HTTP server's settings (127.0.0.1 and the port) are in .storage/http.",
        "homeassistant:",
        "  name: fltrust lab",
        "  latitude: 52.0",
        "  longitude: 5.0",
        "  elevation: 0",
        "  unit_system: metric",
        "  time_zone: UTC",
        "  country: NL",
        "  currency: EUR",
        f"  internal_url: {_yaml_scalar(f'http://{LOOPBACK}:{port}')}",
    ]
    components = list(BASE_COMPONENTS)
    if frontend:
        components.append("frontend")
    lines += [f"{component}:" for component in components]
    lines += ["logger:", "  default: warning", "  logs:"]
    lines += [f"    {_yaml_scalar(name)}: {level}" for name, level in sorted(levels.items())]
    (config_dir / "configuration.yaml").write_text("\n".join(lines) + "\n")
    write_http_storage(config_dir, port)

    custom = config_dir / "custom_components"
    custom.mkdir(exist_ok=True)
    link = custom / integration_dir.name
    if link.is_symlink() or link.exists():
        link.unlink()
    if integration_dir.is_dir():
        link.symlink_to(integration_dir, target_is_directory=True)
    else:
        _LOGGER.warning("integration folder %s not found, so it is not linked", integration_dir)
