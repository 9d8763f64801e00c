"""Command line of the poisoning-robustness benchmark: ``python -m fltrust_bench``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

# Only light modules are imported here. The grid, the cost measurement and the
# report pull in scikit-learn, Flower and matplotlib, which are slow to load, so
# main imports them after the input checks.
from .data import DataMissingError

_LOGGER = logging.getLogger("fltrust_bench")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_RESULTS = REPO_ROOT / "build" / "benchmark-results.json"
REQUIRED = ("skab/valve1/0.csv", "ton_iot/Train_Test_IoT_GPS_Tracker.csv", "nab-realKnownCause")
# Fields of the results document that the report reads, with their JSON types.
# "dynamics", "scarce" and "costs" may be missing, and every list field contains objects.
RESULTS_FIELDS: dict[str, type] = {
    "config": dict,
    "runs": list,
    "references": list,
    "seconds": dict,
}
OPTIONAL_RESULTS_FIELDS: dict[str, type] = {"dynamics": list, "scarce": list, "costs": list}
JSON_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


class ResultsError(ValueError):
    """A results file that cannot be read or does not have the benchmark's layout."""


def positive_count(text: str) -> int:
    """Parse a command line count, which must be an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = argparse.ArgumentParser(
        prog="fltrust_bench",
        description=(
            "Measure fltrust's robust aggregation and trust scoring against poisoning "
            "attacks, next to Flower's aggregation rules, on real data."
        ),
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder with skab/, ton_iot/ and nab-realKnownCause/ (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "docs",
        help="folder for benchmarks.md and the plots",
    )
    parser.add_argument(
        "--full", action="store_true", help="run the larger grid: 5 seeds, 12 rounds, 4 federations"
    )
    parser.add_argument(
        "--workers",
        type=positive_count,
        default=os.cpu_count() or 1,
        help="worker processes for the grid, at least 1 (default: the number of CPUs, %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        type=positive_count,
        default=None,
        help="number of seeds, at least 1, overriding the grid's",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=DEFAULT_RESULTS,
        help="JSON file for the raw results of every run (default: %(default)s)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite benchmarks.md and the plots from --results without running anything",
    )
    return parser.parse_args(argv)


def check_data(data_dir: Path) -> None:
    """Raise DataMissingError naming every missing input."""
    missing = [name for name in REQUIRED if not (data_dir / name).exists()]
    if missing:
        raise DataMissingError(
            f"data not found in {data_dir}: {', '.join(missing)} missing; pass --data with the "
            "folder that contains skab/, ton_iot/ and nab-realKnownCause/"
        )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def load_results(path: Path) -> dict[str, Any]:
    """Read the results document of an earlier run and check its top-level layout.

    Raises:
        ResultsError: when the file cannot be read, is not JSON, or a field that
            the report reads is missing or has the wrong type.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ResultsError(f"invalid results file {path}: not UTF-8 text ({err.reason})") from err
    except OSError as err:
        raise ResultsError(f"cannot read results file {path}: {err.strerror or err}") from err
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise ResultsError(f"invalid results file {path}: not valid JSON ({err})") from err
    except RecursionError as err:
        raise ResultsError(f"invalid results file {path}: JSON nested too deeply") from err
    if not isinstance(document, dict):
        raise ResultsError(
            f"invalid results file {path}: expected a JSON object, found {_json_type(document)}"
        )

    for name, expected in (RESULTS_FIELDS | OPTIONAL_RESULTS_FIELDS).items():
        if name not in document:
            if name in RESULTS_FIELDS:
                raise ResultsError(f"invalid results file {path}: field {name!r} is missing")
            continue
        value = document[name]
        if not isinstance(value, expected):
            raise ResultsError(
                f"invalid results file {path}: field {name!r} is {_json_type(value)}, "
                f"expected {JSON_TYPE_NAMES[expected]}"
            )
        if expected is list:
            for index, item in enumerate(value):
                if not isinstance(item, dict):
                    raise ResultsError(
                        f"invalid results file {path}: item {index} of field {name!r} is "
                        f"{_json_type(item)}, expected an object"
                    )
    return document


def report_only(results_path: Path, out: Path) -> int:
    """Write the report from an earlier run's results file and return the exit status."""
    if not results_path.is_file():
        _LOGGER.error("no results to report: %s not found; run without --report-only", results_path)
        return 2
    try:
        document = load_results(results_path)
    except ResultsError as err:
        _LOGGER.error("%s; run without --report-only to write it again", err)
        return 2

    from .report import write_report

    try:
        write_report(document, out)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        # load_results checks only the top-level layout, so a run or reference
        # with missing or mistyped fields fails here.
        # NOTE: a bug in report.py that raises one of these also ends up here.
        # The message names the exception to help distinguish the two.
        _LOGGER.error(
            "invalid results file %s: the report failed on its content (%s: %s); "
            "run without --report-only to write it again",
            results_path,
            type(err).__name__,
            err,
        )
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report; return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    out = args.out.resolve()
    results_path = args.results.resolve()
    if args.report_only:
        return report_only(results_path, out)

    data_dir = args.data.resolve()
    try:
        check_data(data_dir)
    except DataMissingError as err:
        _LOGGER.error("%s", err)
        return 2

    from .costs import measure_costs
    from .report import write_report
    from .runner import DEFAULT_GRID, FULL_GRID, GridResults, run_grid

    config = FULL_GRID if args.full else DEFAULT_GRID
    if args.seeds is not None:
        config = replace(config, seeds=tuple(range(args.seeds)))
    # Worker processes each use one core; more threads per process only contend.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _LOGGER.info(
        "benchmark: %s federations, %s attacks, fractions %s, %s seeds, %s workers, data %s",
        len(config.federations),
        len(config.attacks),
        config.fractions,
        len(config.seeds),
        args.workers,
        data_dir,
    )
    started = time.perf_counter()
    results: GridResults = run_grid(config, data_dir, args.workers)
    cost_started = time.perf_counter()
    results.costs = measure_costs(
        config.cost_nodes, config.cost_parameters, config.cost_repeats, config.bulyan_max_nodes
    )
    results.seconds["costs"] = time.perf_counter() - cost_started
    results.seconds["total"] = time.perf_counter() - started
    document = results.to_json()
    document["workers"] = args.workers
    document["cpus"] = os.cpu_count()
    document["full"] = args.full
    out.mkdir(parents=True, exist_ok=True)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(document))
    write_report(document, out)
    _LOGGER.info("benchmark done in %.0f s; report in %s", time.perf_counter() - started, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
