"""Tests of the benchmark's command line on bad input, which fails before any grid run.

These paths import neither Flower nor matplotlib, so they run in the test environments,
which have neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fltrust_bench.__main__ import main

from .conftest import REPO_ROOT

VALID_LAYOUT = {"config": {}, "runs": [], "references": [], "seconds": {}}


def error_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{bad", "not valid JSON (Expecting property name"),
        (b"", "not valid JSON (Expecting value: line 1 column 1"),
        (b"[" * 100_000, "JSON nested too deeply"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b"[]", "expected a JSON object, found an array"),
        (b"null", "expected a JSON object, found null"),
        (b"{}", "field 'config' is missing"),
        (json.dumps(VALID_LAYOUT | {"runs": {}}).encode(), "field 'runs' is an object, expected"),
        (json.dumps(VALID_LAYOUT | {"seconds": 3}).encode(), "field 'seconds' is a number"),
        (json.dumps(VALID_LAYOUT | {"costs": "x"}).encode(), "field 'costs' is a string"),
        (
            json.dumps(VALID_LAYOUT | {"runs": [{}, 1]}).encode(),
            "item 1 of field 'runs' is a number, expected an object",
        ),
    ],
    ids=[
        "broken-json",
        "empty-file",
        "deep-nesting",
        "not-utf8",
        "array",
        "null",
        "empty-object",
        "runs-object",
        "seconds-number",
        "costs-string",
        "run-number",
    ],
)
def test_report_only_invalid_results(tmp_path, caplog, content, expected):
    results = tmp_path / "results.json"
    results.write_bytes(content)
    out = tmp_path / "out"

    status = main(["--report-only", "--results", str(results), "--out", str(out)])

    assert status == 2
    messages = error_messages(caplog)
    assert len(messages) == 1
    assert f"invalid results file {results}: " in messages[0]
    assert expected in messages[0]
    assert messages[0].endswith("run without --report-only to write it again")
    assert not (out / "benchmarks.md").exists()


def test_report_only_invalid_run_content(tmp_path, caplog):
    # The report imports matplotlib, which only the benchmark's environment has.
    pytest.importorskip("matplotlib")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(VALID_LAYOUT | {"runs": [{}]}))

    status = main(["--report-only", "--results", str(results), "--out", str(tmp_path / "out")])

    assert status == 2
    messages = error_messages(caplog)
    assert len(messages) == 1
    assert f"invalid results file {results}: the report failed on its content" in messages[0]
    assert "KeyError: 'spec'" in messages[0]


def test_report_only_missing_results(tmp_path, caplog):
    results = tmp_path / "missing.json"

    status = main(["--report-only", "--results", str(results), "--out", str(tmp_path / "out")])

    assert status == 2
    assert error_messages(caplog) == [
        f"no results to report: {results} not found; run without --report-only"
    ]


@pytest.mark.parametrize(
    "arguments",
    [["--seeds", "0"], ["--seeds", "-2"], ["--workers", "0"], ["--workers", "-1"]],
    ids=["seeds-zero", "seeds-negative", "workers-zero", "workers-negative"],
)
def test_non_positive_count_rejected(tmp_path, capsys, arguments):
    with pytest.raises(SystemExit) as info:
        main([*arguments, "--data", str(tmp_path), "--results", str(tmp_path / "r.json")])

    assert info.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {arguments[0]}: must be at least 1, got {arguments[1]}" in error


def test_non_integer_count_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--seeds", "two", "--data", str(tmp_path)])

    assert info.value.code == 2
    assert "argument --seeds: invalid integer: 'two'" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["missing-data", "invalid-results"])
def test_bad_input_fails_before_heavy_imports(tmp_path, mode):
    results = tmp_path / "results.json"
    results.write_text("[]")
    arguments = ["--data", str(tmp_path), "--results", str(results), "--out", str(tmp_path / "o")]
    if mode == "invalid-results":
        arguments.append("--report-only")
    # A fresh interpreter, so that modules imported by other tests do not count.
    script = (
        "import sys\n"
        "from fltrust_bench.__main__ import main\n"
        f"status = main({arguments!r})\n"
        "heavy = ('fltrust_bench.runner', 'fltrust_bench.costs', 'fltrust_bench.report', "
        "'sklearn', 'flwr', 'matplotlib')\n"
        "print(status, sorted(name for name in heavy if name in sys.modules))\n"
    )
    path = os.pathsep.join(str(REPO_ROOT / folder) for folder in ("benchmarks", "tools"))
    environment = os.environ | {"PYTHONPATH": path}

    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "2 []"
