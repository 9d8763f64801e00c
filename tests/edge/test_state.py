"""Tests of the persistent state and the uplink counter."""

import itertools
import json

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
    store.save()

    loaded = StateStore(tmp_path / "nested").state

    assert loaded.coordinator_counter == 42
    assert loaded.command_counter == 40
    assert loaded.quarantined is True


def test_state_ignores_corrupt_file(tmp_path, caplog):
    (tmp_path / "state.json").write_text("{not json")

    with caplog.at_level("WARNING"):
        state = StateStore(tmp_path).state

    assert state.coordinator_counter is None
    assert state.quarantined is False
    assert "unreadable state file" in caplog.text


def test_model_round_trip(tmp_path):
    store = StateStore(tmp_path)

    assert store.load_model() is None
    store.save_model({"version": 3})
    assert store.load_model() == {"version": 3}
