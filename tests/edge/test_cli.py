"""Tests of the fltrust-edge command line."""

import json
import subprocess
import sys

import pytest
from fltrust_core import security
from fltrust_edge.cli import main

from .conftest import FEDERATION_KEY, NODE_ID, base_config, coordinator_public_key, write_config


def test_keys_prints_security_snippet(capsys):
    code = main(["keys", "--federation-key", FEDERATION_KEY.hex(), "--node-id", NODE_ID])

    output = capsys.readouterr().out
    assert code == 0
    assert output.startswith("[security]\n")
    assert f'node_key = "{security.derive_node_key(FEDERATION_KEY, NODE_ID).hex()}"' in output
    assert f'coordinator_public_key = "{coordinator_public_key()}"' in output
    assert FEDERATION_KEY.hex() not in output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--federation-key", "abc", "--node-id", NODE_ID], "--federation-key must be"),
        (["--federation-key", "00" * 32, "--node-id", "Bad Id"], "--node-id: invalid id"),
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
    assert f"valid configuration of node {NODE_ID} with 1 devices" in capsys.readouterr().out


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
    data["detection"]["heartbeat_interval"] = 0.5
    path = write_config(tmp_path, data)
    results = tmp_path / "out" / "results.json"

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
