"""Edge node configurations and ``fltrust-edge`` processes.

``node_config`` turns a ``NodeSpec`` into the document that ``fltrust-edge
run --config`` reads as TOML (see ``edge_node/fltrust_edge/config.py``), and
``EdgeNodeProcess`` writes it with ``dumps_toml`` and runs the node.
The node's keys are derived from the federation key exactly as the
coordinator derives them, so the lab needs no key exchange.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fltrust_core.security import (
    derive_coordinator_private_key,
    derive_node_key,
    parse_key,
    public_key_hex,
)

from . import EDGE_BIN
from .broker import BrokerAccount
from .datasets import DeviceData
from .process import ManagedProcess

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceSpec:
    """One device of a node: its identity, its model kind and the data it replays."""

    device_id: str
    kind: str
    name: str
    features: tuple[str, ...]
    data: DeviceData
    rows_per_second: float


@dataclass(frozen=True)
class NodeSpec:
    """One edge node of a scenario.

    ``simulation`` is the ``[simulation]`` table that makes the node play a
    compromised node, or None for a benign node. ``detection`` overrides keys
    of the ``[detection]`` table.
    """

    node_id: str
    devices: tuple[DeviceSpec, ...]
    detection: Mapping[str, Any] = field(default_factory=dict)
    simulation: Mapping[str, Any] | None = None
    # The node's own broker account, or None to connect anonymously.
    broker_account: BrokerAccount | None = None

    @property
    def compromised(self) -> bool:
        """Whether the scenario makes this node turn compromised."""
        return self.simulation is not None

    @property
    def compromise_round(self) -> int | None:
        """Round from which the node behaves as compromised, or None for a benign node."""
        if self.simulation is None:
            return None
        return int(self.simulation.get("compromise_at_round", 1))


def security_table(federation_key: str, node_id: str, state_dir: Path) -> dict[str, str]:
    """Return the ``[security]`` table of a node of the federation with ``federation_key``."""
    key = parse_key(federation_key, "federation key")
    return {
        "node_key": derive_node_key(key, node_id).hex(),
        "coordinator_public_key": public_key_hex(derive_coordinator_private_key(key)),
        "state_dir": str(state_dir),
    }


# A small TOML writer: the standard library reads TOML but does not write it.


def _toml_string(text: str) -> str:
    """Return ``text`` as a TOML basic string, escaping what TOML requires."""
    escaped = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            escaped.append("\\" + char)
        elif code < 0x20 or code == 0x7F:
            escaped.append(f"\\u{code:04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _toml_key(key: str) -> str:
    if key and all(char.isascii() and (char.isalnum() or char in "-_") for char in key):
        return key
    return _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML cannot hold the non-finite number {value}")
        return repr(value)
    if isinstance(value, str | Path):
        return _toml_string(str(value))
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def _is_table_array(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(item, Mapping) for item in value)
    )


def _toml_body(table: Mapping[str, Any], path: str) -> list[str]:
    lines = []
    for key, value in table.items():
        if value is None or isinstance(value, Mapping) or _is_table_array(value):
            continue
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in table.items():
        if isinstance(value, Mapping):
            name = f"{path}{_toml_key(key)}"
            lines += ["", f"[{name}]", *_toml_body(value, name + ".")]
    for key, value in table.items():
        if _is_table_array(value):
            name = f"{path}{_toml_key(key)}"
            for item in value:
                lines += ["", f"[[{name}]]", *_toml_body(item, name + ".")]
    return lines


def dumps_toml(document: Mapping[str, Any]) -> str:
    """Serialize nested dictionaries and lists as TOML, leaving out keys whose value is None."""
    return "\n".join(_toml_body(document, "")).lstrip("\n") + "\n"


def node_config(
    spec: NodeSpec,
    *,
    broker_host: str,
    broker_port: int,
    prefix: str,
    federation_key: str,
    state_dir: Path,
    heartbeat_interval: float,
) -> dict[str, Any]:
    """Return the configuration document of one node as nested dictionaries."""
    detection: dict[str, Any] = {"heartbeat_interval": heartbeat_interval}
    detection.update(spec.detection)
    document: dict[str, Any] = {
        "node_id": spec.node_id,
        "mqtt": {"host": broker_host, "port": broker_port, "prefix": prefix},
        "security": security_table(federation_key, spec.node_id, state_dir),
        "detection": detection,
        "devices": [
            {
                "id": device.device_id,
                "kind": device.kind,
                "name": device.name,
                "features": list(device.features),
                "source": device.data.source_table(device.rows_per_second),
            }
            for device in spec.devices
        ],
    }
    if spec.broker_account is not None:
        document["mqtt"]["username"] = spec.broker_account.username
        document["mqtt"]["password"] = spec.broker_account.password
    if spec.simulation is not None:
        document["simulation"] = dict(spec.simulation)
    return document


class EdgeNodeProcess:
    """One ``fltrust-edge run`` process with its configuration, results and log in ``node_dir``."""

    def __init__(
        self,
        spec: NodeSpec,
        federation: str,
        node_dir: Path,
        config: Mapping[str, Any],
        *,
        wait_timeout: float = 60.0,
        log_level: str = "INFO",
        edge_bin: Path = EDGE_BIN,
    ) -> None:
        """Write the configuration file. ``start`` starts the process."""
        self.spec = spec
        self.federation = federation
        self.node_dir = node_dir
        node_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = node_dir / "node.toml"
        self.results_path = node_dir / "results.json"
        self.config_path.write_text(dumps_toml(config))
        self.process = ManagedProcess(
            spec.node_id,
            [
                edge_bin,
                "run",
                "--config",
                self.config_path,
                "--results",
                self.results_path,
                "--exit-when-done",
                "--wait-timeout",
                str(wait_timeout),
                "--log-level",
                log_level,
            ],
            node_dir / "node.log",
        )
        self.edge_bin = edge_bin

    @property
    def node_id(self) -> str:
        """Id of the node."""
        return self.spec.node_id

    def start(self) -> None:
        """Start the node.

        Raises:
            FileNotFoundError: when the ``fltrust-edge`` executable is missing.
        """
        if not self.edge_bin.exists():
            raise FileNotFoundError(f"{self.edge_bin} not found. Run script/setup first")
        self.process.start()

    def is_running(self) -> bool:
        """Return whether the node process is alive."""
        return self.process.is_running()

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop the node with SIGTERM (SIGKILL after ``timeout`` seconds) and return its status."""
        return self.process.stop(timeout=timeout)

    def results(self) -> dict[str, Any] | None:
        """Return the node's results document, or None when it wrote none (yet)."""
        try:
            return json.loads(self.results_path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as err:
            _LOGGER.warning(
                "%s: results file %s is not valid JSON: %s", self.node_id, self.results_path, err
            )
            return None


def start_nodes(
    specs: Sequence[NodeSpec],
    *,
    federation: str,
    run_dir: Path,
    broker_host: str,
    broker_port: int,
    prefix: str,
    federation_key: str,
    heartbeat_interval: float,
    wait_timeout: float,
) -> list[EdgeNodeProcess]:
    """Write the configurations of ``specs`` under ``run_dir/nodes`` and start every node."""
    nodes = []
    for spec in specs:
        node_dir = run_dir / "nodes" / spec.node_id
        config = node_config(
            spec,
            broker_host=broker_host,
            broker_port=broker_port,
            prefix=prefix,
            federation_key=federation_key,
            state_dir=node_dir / "state",
            heartbeat_interval=heartbeat_interval,
        )
        node = EdgeNodeProcess(spec, federation, node_dir, config, wait_timeout=wait_timeout)
        node.start()
        _LOGGER.info(
            "%s: started (pid %s) in federation %s", spec.node_id, node.process.pid, federation
        )
        nodes.append(node)
    return nodes
