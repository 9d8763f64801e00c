"""Command line of the lab: ``python -m fltrust_lab demo [--headless] [--data DIR] ...``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import DEFAULT_SHARED_DATA
from .demo import DEFAULT_DEMO_ROOT, DEFAULT_SUMMARY_PATH, DemoOptions, run_demo
from .scenario import MIN_ROUNDS


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the lab."""
    parser = argparse.ArgumentParser(
        prog="fltrust_lab", description="Run fltrust's real processes together."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the smart-home and industrial-site demo")
    demo.add_argument(
        "--headless",
        action="store_true",
        help="exit when the run is done instead of keeping Home Assistant up",
    )
    demo.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_SHARED_DATA,
        help="folder with the shared TON_IoT and SKAB data (default: %(default)s). "
        "Without it the demo uses the shipped NAB files only",
    )
    demo.add_argument(
        "--rounds",
        type=int,
        default=12,
        help=f"federated rounds to run, at least {MIN_ROUNDS} (default: %(default)s)",
    )
    demo.add_argument(
        "--interval",
        type=int,
        default=12,
        help="seconds between rounds, at least 5 (default: %(default)s)",
    )
    demo.add_argument(
        "--port",
        type=int,
        default=None,
        help="Home Assistant HTTP port (default: 8123, or a free port with --headless)",
    )
    demo.add_argument(
        "--summary",
        type=Path,
        default=DEFAULT_SUMMARY_PATH,
        help="summary JSON file (default: %(default)s)",
    )
    demo.add_argument("--verbose", action="store_true", help="log the lab's own debug messages")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.rounds < MIN_ROUNDS:
        sys.stderr.write(
            f"fltrust_lab: error: --rounds must be at least {MIN_ROUNDS}, got {args.rounds}\n"
        )
        return 2
    if args.interval < 5:
        sys.stderr.write(
            f"fltrust_lab: error: --interval must be at least 5 seconds, got {args.interval}\n"
        )
        return 2
    options = DemoOptions(
        headless=args.headless,
        data_dir=args.data.resolve(),
        rounds=args.rounds,
        round_interval=args.interval,
        port=args.port,
        demo_root=DEFAULT_DEMO_ROOT,
        summary_path=args.summary,
    )
    return run_demo(options)


if __name__ == "__main__":
    sys.exit(main())
