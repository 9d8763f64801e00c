"""State that must survive a restart of the node, kept as JSON files in ``state_dir``.

- ``state.json``: the uplink counter reservation, the last accepted coordinator
  counter, the counter of the last applied command, the quarantine flag, the
  federation epoch of the coordinator's last round or model, and the training
  rows of the last update of each kind. Without the counters a restarted node
  would accept a recorded message again.
- ``model.json``: the body of the last adopted global model, so that a restarted
  node scores with it before the coordinator sends a new one.
- ``buffers/DEVICE.npz``: the training buffer of each live device, with the
  feature settings it was computed with, so that a restarted node trains on
  the same readings as before instead of new ones that its history would not
  match. CSV devices fill theirs again from the file.

Files are written to a temporary name, flushed to disk and renamed, so a power
cut leaves either the old or the new file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from fltrust_core.protocol import EPOCH_PATTERN

_LOGGER = logging.getLogger(__name__)

STATE_FILE = "state.json"
MODEL_FILE = "model.json"
BUFFER_FOLDER = "buffers"
# Largest magnitude of a saved feature. Readings are limited to 1e15, and their
# moving averages, trends and deviations stay within a few times that.
MAX_BUFFER_VALUE = 1e16
# Counter values reserved per write of state.json. Counters follow the clock in
# microseconds, so one block lasts a minute and state.json is written about
# once a minute rather than once per message (which would wear out SD cards).
COUNTER_BLOCK = 60_000_000
# Largest counter accepted from state.json: 2**53 is the largest integer that
# readers which parse JSON numbers as doubles keep exact. Counters that follow
# the clock in microseconds stay below it until the year 2255.
MAX_COUNTER = 2**53


@dataclass
class PersistentState:
    """The contents of ``state.json``."""

    counter_reserved: int = 0
    coordinator_counter: int | None = None
    command_counter: int | None = None
    quarantined: bool = False
    epoch: str | None = None
    # Kind -> training rows of the last update sent for it.
    update_rows: dict[str, int] = field(default_factory=dict)


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file, then rename it to ``path``.

    Readers never see a partial file. On failure the temporary file is removed
    and the error raised.
    """
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that readers never see a partial file."""
    text = json.dumps(data, separators=(",", ":"))
    write_atomic(path, lambda file: file.write(text.encode("utf-8")))


class StateStore:
    """Loads and saves the node's persistent state in one directory."""

    def __init__(self, state_dir: Path) -> None:
        """Create ``state_dir`` if needed and load the saved state."""
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.state = self._load()

    def _load(self) -> PersistentState:
        """Read ``state.json``, starting fresh only when the file does not exist.

        An unreadable file or an invalid quarantine flag starts the node
        unquarantined: the coordinator retains its last command to each node,
        so a node it keeps in quarantine receives the quarantine again when it
        connects, and the coordinator drops its updates meanwhile. Every invalid
        value is logged as an error.
        """
        path = self.state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return PersistentState()
        except (OSError, ValueError) as err:
            return _state_after_loss(path, f"cannot read it: {err}")
        if not isinstance(data, dict):
            return _state_after_loss(path, f"expected a JSON object, got {type(data).__name__}")
        return _parse_state(path, data)

    def save(self) -> None:
        """Write ``state`` to ``state.json``."""
        with self._lock:
            write_json_atomic(self.state_dir / STATE_FILE, asdict(self.state))

    def load_model(self) -> dict[str, Any] | None:
        """Return the saved global model body, or None when there is none or it is unreadable."""
        path = self.state_dir / MODEL_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            _LOGGER.warning("Ignoring unreadable saved model %s: %s", path, err)
            return None
        return data if isinstance(data, dict) else None

    def save_model(self, body: dict[str, Any]) -> None:
        """Write a global model body to ``model.json``."""
        write_json_atomic(self.state_dir / MODEL_FILE, body)

    def save_buffer(self, device_id: str, rows: np.ndarray, settings: str) -> None:
        """Write a device's training rows, with the feature settings that produced them."""
        folder = self.state_dir / BUFFER_FOLDER
        folder.mkdir(exist_ok=True)
        write_atomic(
            folder / f"{device_id}.npz",
            lambda file: np.savez(
                file, rows=np.asarray(rows, dtype=float), settings=np.array(settings)
            ),
        )

    def load_buffer(self, device_id: str, settings: str, n_features: int) -> np.ndarray | None:
        """Return a device's saved training rows of shape (n_rows, n_features).

        None when there are none, when the file is unreadable or contains anything
        else (logged), or when other feature settings produced them, since
        their features would not match the new ones.
        """
        path = self.state_dir / BUFFER_FOLDER / f"{device_id}.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                rows = data["rows"]
                saved_settings = str(data["settings"])
        except FileNotFoundError:
            return None
        # A damaged file raises more than OSError, such as BadZipFile or EOFError.
        except Exception as err:
            _LOGGER.warning(
                "Ignoring unreadable training buffer %s (%s), so the device fills a new one",
                path,
                type(err).__name__,
            )
            return None
        if saved_settings != settings:
            _LOGGER.info(
                "Ignoring training buffer %s: it was computed with other feature settings", path
            )
            return None
        valid = (
            isinstance(rows, np.ndarray)
            and rows.dtype.kind in "fi"
            and rows.ndim == 2
            and rows.shape[1] == n_features
            and bool(np.isfinite(rows).all())
            and bool((np.abs(rows) <= MAX_BUFFER_VALUE).all())
        )
        if not valid:
            _LOGGER.warning(
                "Ignoring training buffer %s: expected finite real numbers in %s columns, "
                "so the device fills a new one",
                path,
                n_features,
            )
            return None
        return np.array(rows, dtype=float)

    def delete_model(self) -> None:
        """Remove ``model.json``, if there is one."""
        (self.state_dir / MODEL_FILE).unlink(missing_ok=True)


def _state_after_loss(path: Path, reason: str) -> PersistentState:
    _LOGGER.error(
        "Invalid state file %s (%s). Starting from an empty state: if the coordinator "
        "holds this node in quarantine, its retained command quarantines it again on "
        "connect. Recorded coordinator messages may be accepted again once.",
        path,
        reason,
    )
    return PersistentState()


def _parse_state(path: Path, data: dict[str, Any]) -> PersistentState:
    state = PersistentState()
    for key in ("counter_reserved", "coordinator_counter", "command_counter"):
        value = data.get(key)
        if value is None and key != "counter_reserved":
            continue
        valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNTER
        if valid:
            setattr(state, key, value)
        else:
            # A lost counter_reserved is safe, because the uplink counter is
            # floored at the clock. A lost downlink counter lets a recorded
            # coordinator message be accepted again once.
            _LOGGER.error(
                "Ignoring invalid %s in state file %s: expected an integer from 0 to %s, got %.40r",
                key,
                path,
                MAX_COUNTER,
                value,
            )
    quarantined = data.get("quarantined")
    if isinstance(quarantined, bool):
        state.quarantined = quarantined
    else:
        _LOGGER.error(
            "Invalid quarantined flag in state file %s: expected true or false, got %.40r. "
            "Starting unquarantined: if the coordinator holds this node in quarantine, its "
            "retained command quarantines it again on connect",
            path,
            quarantined,
        )
    update_rows = data.get("update_rows", {})
    if isinstance(update_rows, dict) and all(
        isinstance(kind, str) and isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0
        for kind, rows in update_rows.items()
    ):
        state.update_rows = dict(update_rows)
    else:
        # Without it a restarted node may send an update from a buffer that is
        # still refilling, and the coordinator may charge it for the change.
        _LOGGER.error(
            "Ignoring invalid update_rows in state file %s: expected kinds mapped to "
            "row counts, got %.40r",
            path,
            update_rows,
        )
    epoch = data.get("epoch")
    if isinstance(epoch, str) and EPOCH_PATTERN.fullmatch(epoch):
        state.epoch = epoch
    elif epoch is not None:
        # Without it the node adopts the epoch of the next round or model it receives.
        _LOGGER.error(
            "Ignoring invalid epoch in state file %s: expected hexadecimal digits, got %.40r",
            path,
            epoch,
        )
    return state


class UplinkCounter:
    """Message counter that strictly increases, also across restarts.

    Each value is at least the current time in microseconds since the epoch,
    and above every value handed out before. Before handing out a value beyond
    the reserved range, the counter saves a new reservation of
    ``COUNTER_BLOCK`` values, so a restart continues above anything that a
    previous run may have sent, even when the clock was set back.
    """

    def __init__(self, store: StateStore, clock: Callable[[], int] = time.time_ns) -> None:
        """Continue from the reservation saved in ``store``. ``clock`` returns nanoseconds."""
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._last = store.state.counter_reserved

    def next(self) -> int:
        """Return the next counter value."""
        with self._lock:
            value = max(self._last + 1, self._clock() // 1000)
            if value > self._store.state.counter_reserved:
                self._store.state.counter_reserved = value + COUNTER_BLOCK
                self._store.save()
            self._last = value
            return value
