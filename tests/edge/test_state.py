"""Tests of the persistent state and the uplink counter."""

import itertools
import json

import pytest
from fltrust_edge.state import COUNTER_BLOCK, StateStore, UplinkCounter


def test_counter_increases(tmp_path):
    counter = UplinkCounter(StateStore(tmp_path))

    values = [counter.next() for _ in range(100)]

    assert all(b > a for a, b in itertools.pairwise(values))


def test_counter_floored_at_clock(tmp_path):
    clock_ns = 1_700_000_000_000_000_000
    counter = UplinkCounter(StateStore(tmp_path), clock=lambda: clock_ns)

    assert counter.next() == clock_ns // 1000


def test_counter_monotonic_across_restart_with_clock_set_back(tmp_path):
    now = [1_700_000_000_000_000_000]
    first = UplinkCounter(StateStore(tmp_path), clock=lambda: now[0])
    before_restart = [first.next() for _ in range(10)]

    now[0] -= 3_600 * 10**9
    second = UplinkCounter(StateStore(tmp_path), clock=lambda: now[0])
    after_restart = second.next()

    assert after_restart > max(before_restart)


def test_counter_writes_state_once_per_block(tmp_path, monkeypatch):
    store = StateStore(tmp_path)
    writes = []
    original = store.save
    monkeypatch.setattr(store, "save", lambda: (writes.append(1), original()))
    now = [1_700_000_000_000_000_000]
    counter = UplinkCounter(store, clock=lambda: now[0])

    for _ in range(500):
        counter.next()
        now[0] += 10**6

    assert len(writes) == 1
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["counter_reserved"] >= counter.next() - COUNTER_BLOCK


def test_state_round_trip(tmp_path):
    store = StateStore(tmp_path / "nested")
    store.state.coordinator_counter = 42
    store.state.command_counter = 40
    store.state.quarantined = True
    store.state.epoch = "0a1b"
    store.state.update_rows = {"pump": 400}
    store.save()

    loaded = StateStore(tmp_path / "nested").state

    assert loaded.coordinator_counter == 42
    assert loaded.command_counter == 40
    assert loaded.quarantined is True
    assert loaded.epoch == "0a1b"
    assert loaded.update_rows == {"pump": 400}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epoch", '"NOT-HEX"'),
        ("epoch", "7"),
        ("update_rows", '{"pump": -1}'),
        ("update_rows", "[]"),
    ],
)
def test_invalid_epoch_or_update_rows_logged(tmp_path, caplog, field, value):
    (tmp_path / "state.json").write_text(
        f'{{"counter_reserved": 5, "quarantined": true, "{field}": {value}}}'
    )

    with caplog.at_level("WARNING"):
        state = StateStore(tmp_path).state

    assert state.epoch is None
    assert state.update_rows == {}
    assert state.quarantined is True
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert caplog.records[0].getMessage().startswith(f"Ignoring invalid {field} in state file ")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "cannot read it: Expecting property name"),
        ("[]", "expected a JSON object, got list"),
        ("null", "expected a JSON object, got NoneType"),
        ("42", "expected a JSON object, got int"),
    ],
)
def test_invalid_state_file_starts_empty(tmp_path, caplog, content, reason):
    (tmp_path / "state.json").write_text(content)

    with caplog.at_level("WARNING"):
        state = StateStore(tmp_path).state

    assert state.quarantined is False
    assert state.coordinator_counter is None
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    message = caplog.records[0].getMessage()
    assert message.startswith(f"Invalid state file {tmp_path / 'state.json'} ({reason}")
    assert "retained command quarantines it again" in message


def test_non_utf8_state_file_starts_empty(tmp_path, caplog):
    (tmp_path / "state.json").write_bytes(b'{"quarantined": f\xffalse}')

    with caplog.at_level("ERROR"):
        state = StateStore(tmp_path).state

    assert state.quarantined is False
    assert "cannot read it: 'utf-8' codec" in caplog.text


@pytest.mark.parametrize("flag", ['"yes"', "1", "0", "null", '"false"', "[]"])
def test_invalid_quarantine_flag_logged(tmp_path, caplog, flag):
    (tmp_path / "state.json").write_text(
        '{"counter_reserved": 5, "coordinator_counter": 7, "command_counter": 3, '
        f'"quarantined": {flag}}}'
    )

    with caplog.at_level("WARNING"):
        state = StateStore(tmp_path).state

    assert state.quarantined is False
    assert state.counter_reserved == 5
    assert state.coordinator_counter == 7
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert caplog.records[0].getMessage().startswith("Invalid quarantined flag in state file ")


def test_missing_quarantine_flag_logged(tmp_path, caplog):
    (tmp_path / "state.json").write_text('{"counter_reserved": 5}')

    with caplog.at_level("ERROR"):
        state = StateStore(tmp_path).state

    assert state.quarantined is False
    assert "Invalid quarantined flag" in caplog.text


@pytest.mark.parametrize("quarantined", [True, False])
def test_valid_quarantine_flag_kept(tmp_path, caplog, quarantined):
    document = {"counter_reserved": 5, "coordinator_counter": None, "command_counter": None}
    (tmp_path / "state.json").write_text(json.dumps({**document, "quarantined": quarantined}))

    with caplog.at_level("WARNING"):
        state = StateStore(tmp_path).state

    assert state.quarantined is quarantined
    assert caplog.records == []


@pytest.mark.parametrize("value", ["-1", "true", '"12"', "1.5", str(2**53 + 1), "1" * 400])
def test_invalid_counter_logged_and_ignored(tmp_path, caplog, value):
    (tmp_path / "state.json").write_text(
        f'{{"counter_reserved": 5, "coordinator_counter": {value}, "command_counter": 3, '
        '"quarantined": false}'
    )

    with caplog.at_level("WARNING"):
        state = StateStore(tmp_path).state

    assert state.coordinator_counter is None
    assert state.command_counter == 3
    assert state.quarantined is False
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    message = caplog.records[0].getMessage()
    assert message.startswith("Ignoring invalid coordinator_counter in state file ")
    assert len(message) < 300


def test_invalid_state_file_replaced_on_save(tmp_path):
    (tmp_path / "state.json").write_text("[]")
    store = StateStore(tmp_path)

    store.save()

    assert json.loads((tmp_path / "state.json").read_text())["quarantined"] is False


def test_model_round_trip(tmp_path):
    store = StateStore(tmp_path)

    assert store.load_model() is None
    store.save_model({"version": 3})
    assert store.load_model() == {"version": 3}
