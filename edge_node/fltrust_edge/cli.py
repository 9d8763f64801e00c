"""Command line of the edge node: ``fltrust-edge run | keys | check-config | addon-config``.

Exit codes: 0 on success, 1 when the node failed at run time (including a
CSV replay that an error ended early and a results file that could not be
written), 2 for an invalid configuration or invalid arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from fltrust_core import protocol
from fltrust_core.security import (
    derive_coordinator_private_key,
    derive_node_key,
    parse_key,
    public_key_hex,
)

from . import __version__
from .config import ConfigError, NodeConfig, check_can_create_files, load_config
from .sources import CsvReplay

_LOGGER = logging.getLogger("fltrust_edge")
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``fltrust-edge``."""
    parser = argparse.ArgumentParser(
        prog="fltrust-edge",
        description="fltrust edge node: federated anomaly detection for IoT devices.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the node")
    run.add_argument("--config", required=True, type=Path, help="TOML configuration file")
    run.add_argument(
        "--results",
        type=Path,
        help="JSON file for the detection metrics of the CSV replays, written when they end; "
        "its directory must exist",
    )
    run.add_argument(
        "--exit-when-done",
        action="store_true",
        help="exit after the replays ended and one more global model arrived (or the wait "
        "timed out)",
    )
    run.add_argument(
        "--wait-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for a global model after the replays ended (default: 120)",
    )
    run.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: INFO)",
    )

    keys = commands.add_parser(
        "keys", help="print the [security] keys of a node, derived from the federation key"
    )
    keys.add_argument(
        "--federation-key", required=True, help="the federation key, 64 hexadecimal characters"
    )
    keys.add_argument("--node-id", required=True, help="id of the node")
    keys.add_argument(
        "--key-generation",
        type=int,
        default=0,
        help="generation of the node key: 0 for a node's first key, one more for each "
        "time Home Assistant's action fltrust.replace_node_key replaced it (default: 0)",
    )
    keys.add_argument(
        "--state-dir",
        default="/var/lib/fltrust-edge",
        help="state directory to put in the snippet (default: /var/lib/fltrust-edge)",
    )

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config", type=Path, help="TOML configuration file")

    addon = commands.add_parser(
        "addon-config",
        help="write the configuration file of the Home Assistant add-on from its options",
        description="Convert the Home Assistant add-on's options into a configuration file "
        "and validate it. The broker of the Supervisor's MQTT service is read from the "
        "environment variables FLTRUST_MQTT_HOST, FLTRUST_MQTT_PORT, FLTRUST_MQTT_USERNAME, "
        "FLTRUST_MQTT_PASSWORD and FLTRUST_MQTT_SSL (true or false). Broker options set in "
        "the add-on take precedence over them.",
    )
    addon.add_argument(
        "--options", required=True, type=Path, help="the add-on's options file (JSON)"
    )
    addon.add_argument(
        "--out", required=True, type=Path, help="TOML file to write; its directory must exist"
    )
    addon.add_argument(
        "--state-dir",
        required=True,
        type=Path,
        help="state directory to put in the file; created if missing",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "keys":
        return _keys(args)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "addon-config":
        return _addon_config(args)
    return _run(args)


def _error(message: str) -> None:
    sys.stderr.write(f"fltrust-edge: error: {message}\n")


def _keys(args: argparse.Namespace) -> int:
    if not protocol.is_valid_id(args.node_id):
        _error(f"--node-id: invalid id {args.node_id!r}, expected {protocol.ID_PATTERN.pattern}")
        return EXIT_USAGE
    try:
        federation_key = parse_key(args.federation_key, "--federation-key")
    except ValueError as err:
        _error(str(err))
        return EXIT_USAGE
    try:
        node_key = derive_node_key(federation_key, args.node_id, args.key_generation)
    except ValueError as err:
        _error(f"--key-generation: {err}")
        return EXIT_USAGE
    public_key = public_key_hex(derive_coordinator_private_key(federation_key))
    sys.stdout.write(
        "[security]\n"
        f'node_key = "{node_key.hex()}"\n'
        f'coordinator_public_key = "{public_key}"\n'
        f'state_dir = "{args.state_dir}"\n'
    )
    return EXIT_OK


def _load(path: Path) -> NodeConfig | None:
    try:
        return load_config(path)
    except ConfigError as err:
        _error(str(err))
        return None


def _check_config(path: Path) -> int:
    config = _load(path)
    if config is None:
        return EXIT_USAGE
    replays = []
    for device in config.csv_devices:
        # Replaying the slice is the only way to find rows that the node would skip.
        replay = CsvReplay(device)
        try:
            valid = sum(1 for _ in replay.samples())
        except (OSError, ValueError) as err:
            _error(f"device {device.id}: cannot replay {replay.source.path}: {err}")
            return EXIT_USAGE
        if valid == 0:
            _error(
                f"device {device.id}: no valid row to replay in {replay.source.path} "
                f"({replay.skipped_rows} invalid, the first at {replay.first_problem or 'none'})"
            )
            return EXIT_USAGE
        skipped = (
            f", {_count(replay.skipped_rows, 'invalid row')} skipped, "
            f"the first at {replay.first_problem}"
            if replay.skipped_rows
            else ""
        )
        replays.append(f"  {device.id}: {_count(valid, 'valid row')}{skipped}\n")
    sys.stdout.write(
        f"{path}: valid configuration of node {config.node_id} with "
        f"{_count(len(config.devices), 'device')}\n" + "".join(replays)
    )
    return EXIT_OK


def _count(number: int, noun: str) -> str:
    """Return ``number`` and ``noun``, in the plural unless ``number`` is 1."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _addon_config(args: argparse.Namespace) -> int:
    from .addon import AddonOptionError, service_from_environment, write_addon_config

    try:
        service = service_from_environment(os.environ)
        document, config = write_addon_config(args.options, args.out, service, args.state_dir)
    except AddonOptionError as err:
        _error(str(err))
        return EXIT_USAGE
    except OSError as err:
        _error(f"--out: cannot write {args.out}: {err.strerror or err}")
        return EXIT_FAILURE
    origin = "the MQTT service" if document.broker_from_service else "the add-on's options"
    sys.stdout.write(
        f"{args.out}: configuration of node {config.node_id} with "
        f"{_count(len(config.devices), 'device')}, broker {config.mqtt.host}:{config.mqtt.port} "
        f"from {origin}\n"
    )
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.wait_timeout > 0:
        _error(f"--wait-timeout must be positive, got {args.wait_timeout}")
        return EXIT_USAGE
    # Checked before the configuration, which creates state_dir.
    if args.results is not None:
        problem = _check_results_path(args.results)
        if problem is not None:
            _error(f"--results: {problem}")
            return EXIT_USAGE
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    if args.exit_when_done and not config.csv_devices:
        _error("--exit-when-done needs at least one device with a CSV source")
        return EXIT_USAGE

    from .agent import EdgeNode

    try:
        node = EdgeNode(config, results_path=args.results, done_timeout=args.wait_timeout)
    except OSError as err:
        _error(f"cannot prepare the node state in {config.security.state_dir}: {err}")
        return EXIT_FAILURE

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        _LOGGER.info("%s: received signal %s, stopping", config.node_id, signum)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    node.start()
    try:
        wait_for_stop(stop_requested, node.done, args.exit_when_done)
    finally:
        node.stop()
    errors = node.errors
    for error in errors:
        _LOGGER.error("%s: run incomplete: %s", config.node_id, error)
    return EXIT_FAILURE if errors else EXIT_OK


def wait_for_stop(
    stop_requested: threading.Event, done: threading.Event, exit_when_done: bool
) -> None:
    """Return once a stop is requested, or once the node is done if ``exit_when_done``.

    The main thread waits with a timeout, so that the signal handler runs
    within half a second. A node whose replays are done keeps serving the
    federation until a signal stops it, unless ``exit_when_done`` is set.
    """
    while not stop_requested.wait(0.5):
        if exit_when_done and done.is_set():
            return


def _check_results_path(path: Path) -> str | None:
    """Return why the results cannot be written to ``path``, or None if they can."""
    if path.is_dir():
        return f"{path} is a directory, expected a file name such as {path / 'results.json'}"
    if path.exists() and not path.is_file():
        # The results replace the file by rename, which would replace a device such as /dev/null.
        return f"{path} exists and is not a regular file"
    directory = path.parent
    if not directory.is_dir():
        return f"directory not found: {directory}"
    try:
        check_can_create_files(directory)
    except OSError as err:
        return f"cannot create files in {directory}: {err.strerror or err}"
    return None


if __name__ == "__main__":
    sys.exit(main())
