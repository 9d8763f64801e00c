"""Tests of the fltrust-edge command line."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fltrust_core import security
from fltrust_edge.cli import main, wait_for_stop

from .conftest import FEDERATION_KEY, NODE_ID, base_config, coordinator_public_key, write_config


def test_keys_prints_security_snippet(capsys):
    code = main(["keys", "--federation-key", FEDERATION_KEY.hex(), "--node-id", NODE_ID])

    output = capsys.readouterr().out
    assert code == 0
    assert output.startswith("[security]\n")
    assert f'node_key = "{security.derive_node_key(FEDERATION_KEY, NODE_ID).hex()}"' in output
    assert f'coordinator_public_key = "{coordinator_public_key()}"' in output
    assert FEDERATION_KEY.hex() not in output


def test_keys_of_later_generation(capsys):
    code = main(
        [
            "keys",
            "--federation-key",
            FEDERATION_KEY.hex(),
            "--node-id",
            NODE_ID,
            "--key-generation",
            "2",
        ]
    )

    output = capsys.readouterr().out
    assert code == 0
    assert f'node_key = "{security.derive_node_key(FEDERATION_KEY, NODE_ID, 2).hex()}"' in output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--federation-key", "abc", "--node-id", NODE_ID], "--federation-key must be"),
        (["--federation-key", "00" * 32, "--node-id", "Bad Id"], "--node-id: invalid id"),
        (
            ["--federation-key", "00" * 32, "--node-id", NODE_ID, "--key-generation", "-1"],
            "--key-generation: invalid key generation -1",
        ),
    ],
)
def test_keys_rejects_bad_input(capsys, arguments, message):
    code = main(["keys", *arguments])

    error = capsys.readouterr().err
    assert code == 2
    assert message in error
    assert error.count("\n") == 1


def test_check_config_valid(tmp_path, capsys):
    path = write_config(tmp_path, base_config(tmp_path))

    code = main(["check-config", str(path)])

    assert code == 0
    output = capsys.readouterr().out
    assert f"valid configuration of node {NODE_ID} with 1 device\n" in output
    assert "  sensor-1: 800 valid rows\n" in output


def test_check_config_counts_invalid_rows(tmp_path, capsys):
    csv_path = tmp_path / "mixed.csv"
    rows = [f"2024-01-01 00:{minute:02d}:00,{20 + minute / 10},0" for minute in range(50)]
    rows[3] = "2024-01-01 00:03:00,abc,0"
    csv_path.write_text("timestamp,value,label\n" + "\n".join(rows) + "\n")
    path = write_config(tmp_path, base_config(tmp_path, csv_path=csv_path))

    code = main(["check-config", str(path)])

    assert code == 0
    assert "  sensor-1: 49 valid rows, 1 invalid row skipped, the first at row 3" in (
        capsys.readouterr().out
    )


def test_check_config_without_valid_rows(tmp_path, capsys):
    csv_path = tmp_path / "text.csv"
    rows = [f"2024-01-01 00:{minute:02d}:00,abc,0" for minute in range(50)]
    csv_path.write_text("timestamp,value,label\n" + "\n".join(rows) + "\n")
    path = write_config(tmp_path, base_config(tmp_path, csv_path=csv_path))

    code = main(["check-config", str(path)])

    error = capsys.readouterr().err
    assert code == 2
    assert f"device sensor-1: no valid row to replay in {csv_path} (50 invalid" in error


def test_check_config_invalid(tmp_path, capsys):
    data = base_config(tmp_path)
    data["devices"][0]["source"]["path"] = "/nonexistent/x.csv"
    path = write_config(tmp_path, data)

    code = main(["check-config", str(path)])

    error = capsys.readouterr().err
    assert code == 2
    assert error == (
        "fltrust-edge: error: devices[0].source.path: file not found: /nonexistent/x.csv\n"
    )


def test_run_with_bad_config_exits_2(tmp_path, capsys):
    data = base_config(tmp_path)
    data["security"]["node_key"] = "xyz"
    path = write_config(tmp_path, data)

    code = main(["run", "--config", str(path)])

    assert code == 2
    assert "security.node_key: must be 64 hexadecimal characters" in capsys.readouterr().err


def write_windows(tmp_path, key="realKnownCause/machine.csv"):
    windows = tmp_path / "windows.json"
    windows.write_text(json.dumps({key: []}))
    return windows


def label_by_windows(data, windows, key):
    source = data["devices"][0]["source"]
    del source["label_column"]
    source["label_windows"] = str(windows)
    source["label_windows_key"] = key


BAD_INPUTS = {
    "non-UTF-8 file": (None, "invalid UTF-8 at byte"),
    "deeply nested TOML": ("a = " + "[" * 100_000, "arrays or tables nest too deeply"),
    "wrong label_windows_key": (
        lambda tmp_path, d: label_by_windows(d, write_windows(tmp_path), "machine.csv"),
        "devices[0].source.label_windows_key: label windows file",
    ),
    "state_dir in /proc": (
        lambda tmp_path, d: d["security"].update(state_dir="/proc/fltrust"),
        "security.state_dir: cannot create directory /proc/fltrust",
    ),
    "train_rows too large": (
        lambda tmp_path, d: d["detection"].update(train_rows=100_000_000),
        "detection.train_rows: must be <= 100000",
    ),
    "known_peers element": (
        lambda tmp_path, d: d["detection"].update(known_peers=["10.0.0.0/8", 5]),
        "detection.known_peers[1]: expected a string",
    ),
    "unknown home directory": (
        lambda tmp_path, d: d["security"].update(state_dir="~no-such-user-fltrust/x"),
        "security.state_dir: cannot expand",
    ),
    "empty host": (lambda tmp_path, d: d["mqtt"].update(host=""), "mqtt.host: must not be empty"),
    "host label too long": (
        lambda tmp_path, d: d["mqtt"].update(host="a" * 64 + ".lan"),
        "mqtt.host: invalid host name",
    ),
    "client_id too long": (
        lambda tmp_path, d: d["mqtt"].update(client_id="c" * 70_000),
        "mqtt.client_id: 70000 bytes",
    ),
}


def write_bad_input(tmp_path, case):
    edit, _ = BAD_INPUTS[case]
    path = tmp_path / "node.toml"
    if edit is None:
        path.write_bytes(b'node_id = "n\xf6de"\n')
    elif isinstance(edit, str):
        path.write_text(edit)
    else:
        data = base_config(tmp_path)
        edit(tmp_path, data)
        path = write_config(tmp_path, data)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_bad_input_prints_one_error_line(tmp_path, capsys, command, case):
    if "/proc" in case and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc")
    path = write_bad_input(tmp_path, case)
    arguments = [command, str(path)]
    if command == "run":
        # Should the configuration load, the node stops once its replay ended.
        arguments = [command, "--config", str(path), "--exit-when-done", "--wait-timeout", "1"]

    code = main(arguments)

    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("fltrust-edge: error: ")
    assert captured.err.count("\n") == 1
    assert BAD_INPUTS[case][1] in captured.err
    assert captured.out == ""


def test_non_utf8_error_names_file(tmp_path, capsys):
    path = write_bad_input(tmp_path, "non-UTF-8 file")

    code = main(["check-config", str(path)])

    assert code == 2
    assert capsys.readouterr().err == (
        f"fltrust-edge: error: {path}: invalid UTF-8 at byte 12, and TOML files must be UTF-8\n"
    )


def test_console_script_bad_input_has_no_traceback(tmp_path):
    path = write_bad_input(tmp_path, "non-UTF-8 file")

    completed = subprocess.run(
        [sys.executable, "-m", "fltrust_edge.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 2
    assert completed.stderr.startswith(f"fltrust-edge: error: {path}: invalid UTF-8")
    assert completed.stderr.count("\n") == 1


def test_run_exit_when_done_needs_csv(tmp_path, capsys):
    data = base_config(tmp_path)
    data["devices"][0]["source"] = {
        "type": "mqtt",
        "topics": [{"topic": "a/b", "feature": "temperature"}],
    }
    path = write_config(tmp_path, data)

    code = main(["run", "--config", str(path), "--exit-when-done"])

    assert code == 2
    assert "--exit-when-done needs at least one device with a CSV source" in capsys.readouterr().err


def test_console_script_runs_replay_to_completion(tmp_path, broker):
    data = base_config(tmp_path)
    data["mqtt"]["port"] = broker.port
    data["detection"]["heartbeat_interval"] = 1.0
    path = write_config(tmp_path, data)
    results = tmp_path / "results.json"

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "fltrust_edge.cli",
            "run",
            "--config",
            str(path),
            "--results",
            str(results),
            "--exit-when-done",
            "--wait-timeout",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    document = json.loads(results.read_text())
    assert document["node_id"] == NODE_ID
    assert document["devices"]["sensor-1"]["n_rows"] == 600
    assert "all replays ended" in completed.stderr
    assert data["security"]["node_key"] not in completed.stderr


def make_fifo(tmp_path):
    # A FIFO in tmp_path is the non-regular file here. A device such as
    # /dev/null would be replaced by any run that lacks the check.
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        (lambda tmp_path: tmp_path / "out", "{path} is a directory, expected a file name such as"),
        (lambda tmp_path: tmp_path / "missing" / "r.json", "directory not found: {parent}"),
        (make_fifo, "{path} exists and is not a regular file"),
    ],
    ids=["directory", "missing directory", "FIFO"],
)
def test_run_rejects_bad_results_path(tmp_path, capsys, target, problem):
    path = write_config(tmp_path, base_config(tmp_path))
    (tmp_path / "out").mkdir()
    results = target(tmp_path)
    before = sorted(entry.name for entry in tmp_path.iterdir())

    code = main(["run", "--config", str(path), "--results", str(results), "--exit-when-done"])

    captured = capsys.readouterr()
    assert code == 2
    expected = problem.format(path=results, parent=results.parent)
    assert captured.err.startswith(f"fltrust-edge: error: --results: {expected}")
    assert captured.err.count("\n") == 1
    assert sorted(entry.name for entry in tmp_path.iterdir()) == before
    assert not Path(f"{results}.tmp").exists()


def test_run_exits_1_when_results_not_written(tmp_path, capsys, monkeypatch, caplog):
    def fail(path, results):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("fltrust_edge.agent.write_results", fail)
    monkeypatch.setattr("signal.signal", lambda signum, handler: None)
    path = write_config(tmp_path, base_config(tmp_path))
    results = tmp_path / "results.json"
    arguments = ["run", "--config", str(path), "--results", str(results)]

    with caplog.at_level("ERROR"):
        code = main([*arguments, "--exit-when-done", "--wait-timeout", "0.5"])

    assert code == 1
    assert f"run incomplete: cannot write results to {results}: Permission denied" in caplog.text


class CountingEvent(threading.Event):
    """An event that counts the calls to ``wait``."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def test_done_node_waits_without_spinning():
    stop_requested = CountingEvent()
    done = threading.Event()
    done.set()
    waiter = threading.Thread(target=wait_for_stop, args=(stop_requested, done, False))

    waiter.start()
    waiter.join(1.2)
    still_waiting = waiter.is_alive()
    stop_requested.set()
    waiter.join(2)

    assert still_waiting, "a node that is done stopped without --exit-when-done"
    assert not waiter.is_alive()
    # One wait per half second is expected; a busy loop calls it thousands of times.
    assert stop_requested.waits <= 5


def test_done_node_exits_when_asked():
    stop_requested = threading.Event()
    done = threading.Event()
    done.set()

    wait_for_stop(stop_requested, done, True)

    assert not stop_requested.is_set()
