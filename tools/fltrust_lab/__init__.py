"""Orchestration of real fltrust processes: broker, Home Assistant and edge nodes.

The lab runs under the Home Assistant virtual environment (``.venv``) with
``PYTHONPATH=tools``. It starts every component as a separate process on the
loopback interface, so the demo and the end-to-end tests exercise the same code
paths as a real installation.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = REPO_ROOT / ".venv"
EDGE_VENV = REPO_ROOT / ".venv-edge"
HASS_BIN = VENV / "bin" / "hass"
EDGE_BIN = EDGE_VENV / "bin" / "fltrust-edge"
INTEGRATION_DIR = REPO_ROOT / "custom_components" / "fltrust"
SHIPPED_NAB_DIR = REPO_ROOT / "data" / "nab"
DEFAULT_SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

LOOPBACK = "127.0.0.1"
