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

from .costs import measure_costs
from .data import DataMissingError
from .runner import DEFAULT_GRID, FULL_GRID, GridResults, run_grid

_LOGGER = logging.getLogger("fltrust_bench")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_RESULTS = REPO_ROOT / "build" / "benchmark-results.json"
REQUIRED = ("skab/valve1/0.csv", "ton_iot/Train_Test_IoT_GPS_Tracker.csv", "nab-realKnownCause")


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
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes for the grid (default: the number of CPUs, %(default)s)",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of seeds, overriding the grid's"
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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report; return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from .report import write_report

    out = args.out.resolve()
    results_path = args.results.resolve()
    if args.report_only:
        if not results_path.is_file():
            _LOGGER.error(
                "no results to report: %s not found; run without --report-only", results_path
            )
            return 2
        write_report(json.loads(results_path.read_text()), out)
        return 0

    data_dir = args.data.resolve()
    try:
        check_data(data_dir)
    except DataMissingError as err:
        _LOGGER.error("%s", err)
        return 2
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
    results: GridResults = run_grid(config, data_dir, max(1, args.workers))
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
