"""The edge node runtime: readings in, signed reports and model updates out.

Threads:

- paho-mqtt's network thread and one thread per CSV replay only put events
  on ``EdgeNode._events``.
- The main loop (``EdgeNode._run``) takes events one at a time, so only this
  thread touches node state. It also publishes the heartbeat on time.
- A single worker thread trains updates and calibrates detectors, and sends
  its results back through the same queue.

Protocol behaviour:

- Every uplink message is signed with the node key (HMAC-SHA256) and carries a
  counter that increases across restarts (``state.UplinkCounter``).
- Downlink messages must pass ``downlink.DownlinkVerifier``. Rejected ones are
  logged with their reason and otherwise ignored.
- A round announcement makes the node train one update per device kind from
  the adopted global model, unless the node is quarantined or the round's
  deadline passed. The time left is measured in the coordinator's clock, so
  clock offset between node and coordinator does not matter.
- A newer global model is adopted and the thresholds are recalibrated locally.
- A heartbeat, which announces the node's devices, goes out right after every
  connection to the broker and then every ``heartbeat_interval`` seconds.
- Device states go out when a device's anomaly state changes and after every
  heartbeat. A state goes out only on a connection on which a heartbeat went
  out before it, because the coordinator rejects states of devices that no
  heartbeat announced.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fltrust_core import protocol
from fltrust_core.detectors import model_fits
from fltrust_core.model import FederationParams, GlobalModel
from fltrust_core.preprocessing import feature_names
from fltrust_core.security import MessageRejected, RejectReason, hmac_tag

from . import __version__
from .config import DeviceConfig, NodeConfig
from .downlink import DownlinkVerifier
from .evaluation import DeviceEvaluation, build_results, write_results
from .link import Connected, Disconnected, Message, MqttLink
from .monitor import DeviceMonitor
from .network import PeerMonitor
from .simulation import CompromiseSimulation
from .sources import CsvReplay, MqttSensor, Sample
from .state import StateStore, UplinkCounter
from .throttle import ThrottledLogger
from .training import (
    Calibration,
    Detector,
    RoundResult,
    calibrate,
    has_enough_samples,
    min_train_samples,
    train_round,
)

_LOGGER = logging.getLogger(__name__)
SOFTWARE = f"fltrust-edge/{__version__}"
# Scores are clipped to this magnitude so that they always serialize as JSON numbers.
MAX_REPORTED_SCORE = 1e9


# Rounds in a row whose global model leaves out this node's update before it warns.
UNCOUNTED_ROUNDS_WARNING = 3
# Number of joined rounds whose numbers are kept. Older ones are only counted,
# so that a node that runs for years does not grow the list.
RECENT_ROUNDS = 1000


@dataclass(frozen=True)
class ReplayEnded:
    """A CSV replay emitted its last row, or an error ended it early."""

    device_id: str
    rows: int
    error: str | None = None


@dataclass(frozen=True)
class JobDone:
    """Result of a finished worker job: a RoundResult or a Calibration."""

    result: RoundResult | Calibration


@dataclass(frozen=True)
class JobFailed:
    """Failure of a worker job. The node logs the error and goes on."""

    description: str
    error: BaseException


class EdgeNode:
    """An fltrust edge node: watches devices, detects anomalies, joins federated rounds.

    ``start`` returns at once. ``done`` is set when the CSV replays ended, the
    results were written and one more global model arrived, or
    ``done_timeout`` seconds passed after the replays ended.
    """

    def __init__(
        self,
        config: NodeConfig,
        results_path: Path | None = None,
        done_timeout: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Load the persistent state and prepare every component. Nothing runs until ``start``."""
        self.config = config
        self.node_id = config.node_id
        self.results_path = results_path
        self.done_timeout = done_timeout
        self._clock = clock
        self._events: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self.done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fltrust-train")
        self._rejections = ThrottledLogger(_LOGGER)

        self._store = StateStore(config.security.state_dir)
        self._counter = UplinkCounter(self._store)
        self._node_key = config.security.node_key
        self._verifier = DownlinkVerifier(
            config.security.coordinator_public_key, self.node_id, self._store, clock
        )
        self._link = MqttLink(config.mqtt, self._events, self.node_id)
        self._peers = PeerMonitor(config.detection.known_peers)
        self._simulation = (
            CompromiseSimulation(config.simulation, self.node_id)
            if config.simulation is not None
            else None
        )

        self._monitors = {
            device.id: DeviceMonitor(
                device, config.detection, keep_test_rows=device in config.csv_devices
            )
            for device in config.devices
        }
        self._replays = [CsvReplay(device) for device in config.csv_devices]
        self._sensors: dict[str, list[MqttSensor]] = {}
        for device in config.devices:
            if device not in config.csv_devices:
                sensor = MqttSensor(device)
                for topic in sensor.topics:
                    self._sensors.setdefault(topic, []).append(sensor)

        self._detectors: dict[str, Detector] = {}
        self._detector_version: dict[str, int] = {}
        self._global_model: GlobalModel | None = None
        self._params = FederationParams()
        self.quarantined = self._store.state.quarantined
        self.rounds_joined = 0
        self.recent_rounds: deque[int] = deque(maxlen=RECENT_ROUNDS)
        self._replay_errors: dict[str, str] = {}
        self._results_error: str | None = None
        self._training_round: int | None = None
        self._last_round = 0
        self._replays_running = len(self._replays)
        self._version_at_replay_end: int | None = None
        self._done_deadline: float | None = None
        self._interval_samples = 0
        self._interval_anomalies = 0
        self._last_heartbeat = time.monotonic()
        self._next_heartbeat = self._last_heartbeat + config.detection.heartbeat_interval
        # Monotonic time of the last connect, until a message of the coordinator arrives.
        self._waiting_since: float | None = None
        # Rounds in a row whose global model does not count this node's update.
        self._uncounted_rounds = 0
        # Numbers of the link's connection from the last Connected event and of
        # the connection on which the last heartbeat went out. None means none.
        self._connection: int | None = None
        self._announced_connection: int | None = None
        self._warned_short_buffers: set[str] = set()
        # (kind, the model's feature count, this node's) already warned about.
        self._warned_unfit: set[tuple[str, int, int]] = set()
        self._load_saved_model()
        if self._restore_buffers():
            self._schedule_calibration("calibration of the restored training buffers")

    def _buffer_settings(self, device: DeviceConfig) -> str:
        """Return the settings a live device's features depend on, to compare with saved ones."""
        detection = self.config.detection
        return repr(
            (
                device.features,
                device.source,
                detection.smoothing_window,
                detection.long_window,
                detection.extra_features,
            )
        )

    def _restore_buffers(self) -> bool:
        """Load the saved training buffers of live devices; return whether any was loaded."""
        # TODO: a device that fills a new buffer sends updates unlike the node's
        # history, and the coordinator quarantines the node. Telling the coordinator
        # that the data changed would need a way to stop attackers from claiming it.
        restored = False
        for device_id, monitor in self._monitors.items():
            if monitor.keep_test_rows:
                # A CSV device fills its buffer again from the same rows.
                continue
            device = monitor.device
            n_features = len(feature_names(device.features, self.config.detection.extra_features))
            rows = self._store.load_buffer(device_id, self._buffer_settings(device), n_features)
            if rows is None or rows.shape[0] == 0:
                continue
            monitor.restore_training(rows)
            restored = True
            _LOGGER.info(
                "%s: restored %s training rows of %s from %s",
                self.node_id,
                monitor.n_train,
                device_id,
                self._store.state_dir,
            )
        return restored

    def _save_buffer(self, monitor: DeviceMonitor) -> None:
        device_id = monitor.device.id
        try:
            self._store.save_buffer(
                device_id, monitor.training_data(), self._buffer_settings(monitor.device)
            )
        except OSError as err:
            _LOGGER.warning(
                "%s: could not save the training buffer of %s: %s", self.node_id, device_id, err
            )

    # Public API.

    @property
    def model_version(self) -> int:
        """Version of the adopted global model, 0 before the first one."""
        return 0 if self._global_model is None else self._global_model.version

    @property
    def connected(self) -> bool:
        """Whether the MQTT link is up."""
        return self._link.connected

    @property
    def errors(self) -> list[str]:
        """Errors that leave the run incomplete: replays ended early, results not written.

        A failed write of the results file counts until a later write succeeds.
        """
        errors = [
            f"replay of {device_id} ended early: {error}"
            for device_id, error in self._replay_errors.items()
        ]
        if self._results_error is not None:
            errors.append(self._results_error)
        return errors

    def detector(self, kind: str) -> Detector | None:
        """Return the detector that scores readings of ``kind``, if any."""
        return self._detectors.get(kind)

    def start(self) -> None:
        """Connect and start the replays and the main loop without blocking."""
        prefix = self.config.mqtt.prefix
        self._peers.add_broker(self.config.mqtt.host, self.config.mqtt.port)
        self._link.subscribe(
            [
                protocol.round_topic(prefix),
                protocol.model_topic(prefix),
                protocol.command_topic(prefix, self.node_id),
                *self._sensors,
            ]
        )
        _LOGGER.info(
            "%s: starting with %s devices, connecting to %s:%s",
            self.node_id,
            len(self._monitors),
            self.config.mqtt.host,
            self.config.mqtt.port,
        )
        if self.quarantined:
            _LOGGER.warning(
                "%s: starting quarantined, as recorded in %s, so the node skips rounds until "
                "the coordinator releases it",
                self.node_id,
                self._store.state_dir,
            )
        self._link.start()
        self._spawn(self._run, "fltrust-main")
        for replay in self._replays:
            self._spawn(
                lambda replay=replay: self._replay(replay), f"fltrust-csv-{replay.device_id}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every thread and disconnect. Calling it again does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._worker.shutdown(wait=True, cancel_futures=True)
        self._link.stop()
        self._store.save()
        for monitor in self._monitors.values():
            if not monitor.keep_test_rows and 0 < monitor.n_train < monitor.train_rows:
                self._save_buffer(monitor)
        _LOGGER.info("%s: stopped", self.node_id)

    # Threads.

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _replay(self, replay: CsvReplay) -> None:
        error = None
        try:
            replay.run(self._events.put, self._stop)
        except (OSError, ValueError) as err:
            # The main loop logs the error with the number of rows replayed.
            error = str(err)
        if not self._stop.is_set():
            self._events.put(ReplayEnded(replay.device_id, replay.emitted, error))

    def _run(self) -> None:
        interval = self.config.detection.heartbeat_interval
        while not self._stop.is_set():
            timeout = max(0.0, min(self._next_heartbeat - time.monotonic(), 0.5))
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                event = None
            if event is not None:
                try:
                    self._dispatch(event)
                except Exception:
                    # The main loop must survive any bug in one handler.
                    _LOGGER.exception("%s: failed to handle %s", self.node_id, type(event).__name__)
            now = time.monotonic()
            if now >= self._next_heartbeat:
                self._publish_heartbeat()
                self._next_heartbeat = _next_heartbeat(self._next_heartbeat, now, interval)
            self._check_coordinator_heard(now, interval)
            if self._done_deadline is not None and now >= self._done_deadline:
                _LOGGER.info(
                    "%s: no newer global model within %.0f s after the replay ended",
                    self.node_id,
                    self.done_timeout,
                )
                self._finish()

    def _check_coordinator_heard(self, now: float, interval: float) -> None:
        """Warn once when nothing came from the coordinator for three heartbeats after connecting.

        The coordinator retains its model from the start and its last round
        announcement, so a node that reads the right topics receives them at once.
        """
        if self._waiting_since is None or now - self._waiting_since < 3 * interval:
            return
        self._waiting_since = None
        _LOGGER.warning(
            "%s: no round announcement or model from the coordinator on %s/coordinator/ in "
            "%.0f s since connecting. Check that topic_prefix is the federation's and that the "
            "broker account may read that topic",
            self.node_id,
            self.config.mqtt.prefix,
            3 * interval,
        )

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, Sample):
            self._on_sample(event)
        elif isinstance(event, Message):
            self._on_message(event)
        elif isinstance(event, JobDone):
            self._on_job_done(event.result)
        elif isinstance(event, JobFailed):
            _LOGGER.error("%s: %s failed: %s", self.node_id, event.description, event.error)
        elif isinstance(event, ReplayEnded):
            self._on_replay_ended(event)
        elif isinstance(event, Connected):
            _LOGGER.info(
                "%s: connected to %s:%s", self.node_id, self.config.mqtt.host, self.config.mqtt.port
            )
            self._connection = event.connection
            if self._waiting_since is None and self.model_version == 0 and self._last_round == 0:
                self._waiting_since = time.monotonic()
            self._publish_heartbeat()
            self._next_heartbeat = time.monotonic() + self.config.detection.heartbeat_interval
        elif isinstance(event, Disconnected):
            _LOGGER.warning(
                "%s: disconnected from the broker (%s), reconnecting", self.node_id, event.reason
            )
            self._connection = None
            self._announced_connection = None

    def _submit(self, description: str, job: Callable[[], RoundResult | Calibration]) -> None:
        def report(future: Future[RoundResult | Calibration]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                self._events.put(JobFailed(description, error))
            else:
                self._events.put(JobDone(future.result()))

        try:
            self._worker.submit(job).add_done_callback(report)
        except RuntimeError:
            # The executor refuses new jobs once stop() shut it down.
            _LOGGER.debug("%s: not starting %s while stopping", self.node_id, description)

    # Readings.

    def _on_sample(self, sample: Sample) -> None:
        monitor = self._monitors[sample.device_id]
        values = np.asarray(sample.values, dtype=float)
        if self._simulation is not None:
            values = self._simulation.distort(values)
        kind = monitor.device.kind
        reading = monitor.process(values, sample.label, self._detectors.get(kind))
        self._interval_samples += 1
        if reading.anomaly and reading.scored:
            self._interval_anomalies += 1
        if reading.buffer_filled:
            _LOGGER.info(
                "%s: training buffer of %s is full (%s rows)",
                self.node_id,
                sample.device_id,
                monitor.n_train,
            )
            if not monitor.keep_test_rows:
                self._save_buffer(monitor)
            self._schedule_calibration(f"calibration of {kind} after {sample.device_id} filled")
        if reading.state_changed:
            self._publish_state(monitor)

    def _training_data(self, params: FederationParams) -> dict[str, np.ndarray]:
        """Return each kind's training features, for kinds with enough of them."""
        by_kind: dict[str, list[np.ndarray]] = {}
        for monitor in self._monitors.values():
            if monitor.n_train:
                by_kind.setdefault(monitor.device.kind, []).append(monitor.training_data())
        data = {kind: np.vstack(parts) for kind, parts in by_kind.items()}
        return {kind: X for kind, X in data.items() if has_enough_samples(X.shape[0], params)}

    def _schedule_calibration(self, description: str) -> bool:
        """Start calibrating every kind with enough training rows; return whether any has them."""
        model = self._global_model
        params = model.params if model is not None else self._params
        data = self._training_data(params)
        if not data:
            return False
        if model is not None:
            self._warn_unfit_kinds(model)
        fpr = self.config.detection.target_fpr
        personalize = self.config.detection.personalize
        self._submit(description, lambda: calibrate(data, model, params, fpr, personalize))
        return True

    def _on_replay_ended(self, event: ReplayEnded) -> None:
        self._monitors[event.device_id].replay_ended = True
        self._replays_running -= 1
        if event.error is None:
            _LOGGER.info(
                "%s: replay of %s ended after %s rows", self.node_id, event.device_id, event.rows
            )
        else:
            message = (
                f"replay of {event.device_id} stopped after {event.rows} rows, "
                f"and the rest of the file was not replayed: {event.error}"
            )
            _LOGGER.error("%s: %s", self.node_id, message)
            self._replay_errors[event.device_id] = event.error
        if self._replays_running > 0:
            return
        _LOGGER.info("%s: all replays ended", self.node_id)
        self._write_results()
        self._version_at_replay_end = self.model_version
        self._done_deadline = time.monotonic() + self.done_timeout

    # Downlink messages.

    def _on_message(self, message: Message) -> None:
        prefix = self.config.mqtt.prefix
        topic = message.topic
        if topic in self._sensors:
            for sensor in self._sensors[topic]:
                sample = sensor.handle(topic, message.payload, self._clock())
                if sample is not None:
                    self._on_sample(sample)
            return
        coordinator_topics = (
            protocol.round_topic(prefix),
            protocol.model_topic(prefix),
            protocol.command_topic(prefix, self.node_id),
        )
        if topic in coordinator_topics[:2]:
            self._waiting_since = None
        if topic in coordinator_topics and not message.payload:
            # An empty message deletes the broker's retained copy. The coordinator
            # sends these when its federation is removed or drops this node's record.
            _LOGGER.info(
                "%s: the coordinator cleared its retained message on %s; if its federation "
                "was removed, stop this node",
                self.node_id,
                topic,
            )
            return
        try:
            if topic == protocol.round_topic(prefix):
                self._on_round(message)
            elif topic == protocol.model_topic(prefix):
                self._on_model(message)
            elif topic == protocol.command_topic(prefix, self.node_id):
                self._on_command(message)
        except MessageRejected as err:
            self._log_rejection(topic, message.retained, err)

    def _log_rejection(self, topic: str, retained: bool, err: MessageRejected) -> None:
        if retained and err.reason == RejectReason.REPLAYED:
            # The broker sends its retained copy on every subscribe, so a copy
            # of what the node already applied is routine.
            _LOGGER.debug("%s: ignored retained message on %s: %s", self.node_id, topic, err)
            return
        self._rejections.warning(
            f"{topic}:{err.reason}",
            "%s: rejected message on %s: %s",
            self.node_id,
            topic,
            err,
        )

    def _on_round(self, message: Message) -> None:
        epoch = self._verifier.epoch
        announcement, envelope = self._verifier.open_round(message.payload, message.retained)
        if epoch is not None and self._verifier.epoch != epoch:
            self._start_epoch(epoch)
        round_number = announcement.round
        if self._simulation is not None:
            self._simulation.observe_round(round_number)
        if round_number <= self._last_round:
            _LOGGER.debug("%s: round %s already handled", self.node_id, round_number)
            return
        self._last_round = round_number
        self._params = announcement.params
        joined_previous = bool(self.recent_rounds) and self.recent_rounds[-1] == round_number - 1
        model_round = self._global_model.round if self._global_model is not None else 0
        if not message.retained and joined_previous and model_round < round_number - 1:
            # The previous round closed without any model, so it did not count this node.
            self._count_round(round_number - 1, counted=False)

        if self.quarantined:
            _LOGGER.info("%s: quarantined, skipping round %s", self.node_id, round_number)
            return
        time_left = _round_time_left(announcement, envelope, message.received)
        if message.retained:
            # The coordinator retains its last announcement, so a copy delivered
            # on connect may be long out of date, and its timestamp is as old as
            # the round. Only the node's own clock can tell.
            time_left = min(time_left, announcement.deadline - self._clock())
        if time_left <= 0:
            # The retained copy of the last round arrives on every connect, mostly
            # after its deadline, so only a live announcement that came late is a problem.
            _LOGGER.log(
                logging.INFO if message.retained else logging.WARNING,
                "%s: round %s arrived %.1f s after its deadline, skipping it",
                self.node_id,
                round_number,
                -time_left,
            )
            return

        data = self._training_data(announcement.params)
        self._warn_short_buffers(round_number, announcement.params, data)
        data = self._without_refilling_kinds(round_number, data)
        if not data:
            _LOGGER.info(
                "%s: round %s skipped: no device kind has enough training rows yet",
                self.node_id,
                round_number,
            )
            return

        model = self._global_model
        params = announcement.params
        fpr = self.config.detection.target_fpr
        self._training_round = round_number
        _LOGGER.debug(
            "%s: training round %s on kinds %s", self.node_id, round_number, ", ".join(data)
        )
        self._submit(
            f"training for round {round_number}",
            lambda: train_round(round_number, params, data, model, fpr),
        )

    def _without_refilling_kinds(
        self, round_number: int, data: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Leave out kinds that do not fit the global model, or that still refill.

        The coordinator rejects an update whose features do not fit the
        kind's global model, and charges the node. A node that restarts
        fills its training buffers again. An update from
        part of the rows differs from the node's earlier updates for that
        reason alone, and the coordinator charges the node for such a change.
        A kind whose buffers cannot grow any more (full, or at the end of
        their replays) takes part with the rows it has.
        """
        ready = {}
        model = self._global_model
        for kind, X in data.items():
            kind_model = None if model is None else model.kinds.get(kind)
            if (
                model is not None
                and kind_model is not None
                and not model_fits(kind_model, model.params, X.shape[1])
            ):
                # The coordinator rejects such an update and charges the node.
                _LOGGER.info(
                    "%s: round %s: kind %s skipped, because its features do not fit "
                    "the global model's",
                    self.node_id,
                    round_number,
                    kind,
                )
                continue
            last = self._store.state.update_rows.get(kind, 0)
            monitors = [m for m in self._monitors.values() if m.device.kind == kind]
            capacity = sum(m.n_train if m.replay_ended else m.train_rows for m in monitors)
            if X.shape[0] >= min(last, capacity):
                ready[kind] = X
                continue
            _LOGGER.info(
                "%s: round %s: kind %s has %s training rows again, fewer than the %s of its "
                "last update, so the node skips it until its buffers refill",
                self.node_id,
                round_number,
                kind,
                X.shape[0],
                last,
            )
        return ready

    def _warn_short_buffers(
        self, round_number: int, params: FederationParams, data: dict[str, np.ndarray]
    ) -> None:
        """Warn once per device whose kind has too few training rows to train for a round."""
        minimum = min_train_samples(params)
        for device_id, monitor in self._monitors.items():
            kind = monitor.device.kind
            if kind in data or device_id in self._warned_short_buffers:
                continue
            self._warned_short_buffers.add(device_id)
            _LOGGER.warning(
                "%s: round %s: kind %s has %s training rows, fewer than the %s needed to "
                "train, so device %s (%s rows, train_rows = %s) does not take part",
                self.node_id,
                round_number,
                kind,
                sum(m.n_train for m in self._monitors.values() if m.device.kind == kind),
                minimum,
                device_id,
                monitor.n_train,
                monitor.train_rows,
            )

    def _on_model(self, message: Message) -> None:
        epoch = self._verifier.epoch
        model, envelope = self._verifier.open_model(
            message.payload, message.retained, self.model_version
        )
        if epoch is not None and self._verifier.epoch != epoch:
            self._start_epoch(epoch)
        if model.version <= self.model_version:
            _LOGGER.debug(
                "%s: ignored global model version %s, already at %s",
                self.node_id,
                model.version,
                self.model_version,
            )
            return
        self._adopt_model(model)
        self._store.save_model(envelope.body)
        if not message.retained and model.round in self.recent_rounds:
            self._count_round(model.round, counted=self.node_id in model.contributors)

    def _start_epoch(self, previous: str) -> None:
        """Forget the rounds and the model of the coordinator's previous federation epoch.

        A coordinator that starts over, after its stored state was lost,
        numbers rounds and model versions from 1 again. Nodes that kept the old
        numbers would skip its rounds and ignore its models, and their repeated
        updates would cost them trust. The new federation has no record of a
        quarantine of this node either, so a local quarantine ends too.
        """
        _LOGGER.warning(
            "%s: the coordinator started a new federation (epoch %s, was %s), as it does "
            "after its stored state was lost: forgetting round %s and global model version %s, "
            "and joining as a new node",
            self.node_id,
            self._verifier.epoch,
            previous,
            self._last_round,
            self.model_version,
        )
        self._last_round = 0
        self._global_model = None
        self._store.delete_model()
        self.recent_rounds.clear()
        self._uncounted_rounds = 0
        self._detector_version.clear()
        if self._version_at_replay_end is not None:
            self._version_at_replay_end = 0
        if self.quarantined:
            _LOGGER.warning(
                "%s: released from quarantine, because the new federation holds none",
                self.node_id,
            )
            self._set_quarantined(False)
        self._schedule_calibration("calibration with the local model of a new federation")

    def _count_round(self, round_number: int, counted: bool) -> None:
        """Warn when three rounds in a row that this node joined did not count its update."""
        if counted:
            if self._uncounted_rounds >= UNCOUNTED_ROUNDS_WARNING:
                _LOGGER.info(
                    "%s: the global model of round %s counts this node's update again",
                    self.node_id,
                    round_number,
                )
            self._uncounted_rounds = 0
            return
        self._uncounted_rounds += 1
        if self._uncounted_rounds == UNCOUNTED_ROUNDS_WARNING:
            _LOGGER.warning(
                "%s: the last %s rounds this node joined did not count its updates: their "
                "global models leave it out, or they closed without one. Either the "
                "coordinator rejects its messages (Home Assistant's log names this node and the "
                "reason, such as bad_signature for a wrong node key or revoked_key for a "
                "replaced one), too few nodes sent updates, or it leaves the updates out, as it "
                "does for data unlike the other nodes' of the kind",
                self.node_id,
                UNCOUNTED_ROUNDS_WARNING,
            )

    def _adopt_model(self, model: GlobalModel) -> None:
        self._global_model = model
        self._params = model.params
        _LOGGER.info(
            "%s: adopted global model version %s from round %s (kinds: %s)",
            self.node_id,
            model.version,
            model.round,
            ", ".join(sorted(model.kinds)) or "none",
        )
        scheduled = self._schedule_calibration(f"calibration for model version {model.version}")
        replay_done_earlier = self._version_at_replay_end is not None
        if not scheduled and replay_done_earlier and model.version > self._version_at_replay_end:
            # Without training rows there is nothing to recalibrate, so the run is complete.
            self._finish()

    def _warn_unfit_kinds(self, model: GlobalModel) -> None:
        """Warn once per kind and feature counts when the model's shapes do not fit this node."""
        for kind, kind_model in sorted(model.kinds.items()):
            counts = {
                m.n_features
                for m in self._monitors.values()
                if m.device.kind == kind and m.n_features is not None
            }
            for n_features in sorted(counts):
                key = (kind, kind_model.n_features, n_features)
                if model_fits(kind_model, model.params, n_features) or key in self._warned_unfit:
                    continue
                self._warned_unfit.add(key)
                _LOGGER.warning(
                    "%s: the global model's kind %s has %s features, but this node's devices "
                    "of that kind have %s, so the node trains and scores the kind with a model "
                    "of its own. Configure the kind with the same features (extra_features, "
                    "windows) on every node",
                    self.node_id,
                    kind,
                    kind_model.n_features,
                    n_features,
                )

    def _load_saved_model(self) -> None:
        body = self._store.load_model()
        if body is None:
            return
        try:
            model = protocol.parse_model(body)
        except MessageRejected as err:
            _LOGGER.warning("%s: ignoring invalid saved model: %s", self.node_id, err)
            return
        self._global_model = model
        self._params = model.params
        _LOGGER.info("%s: loaded saved global model version %s", self.node_id, model.version)

    def _on_command(self, message: Message) -> None:
        command, _ = self._verifier.open_command(message.payload, message.retained)
        if command.action == "quarantine":
            if not self.quarantined:
                _LOGGER.warning(
                    "%s: quarantined by the coordinator, no more updates until released",
                    self.node_id,
                )
            self._set_quarantined(True)
        elif command.action == "release":
            if self.quarantined:
                _LOGGER.info("%s: released from quarantine", self.node_id)
            self._set_quarantined(False)
        elif command.action == "reauthenticate":
            try:
                nonce = protocol.parse_auth({"nonce": command.nonce})
            except MessageRejected as err:
                self._log_rejection(message.topic, message.retained, err)
                return
            if self.quarantined:
                # The coordinator challenges only nodes it does not hold in
                # quarantine. Its challenge after a release replaces the retained
                # release command, so a node offline then receives only the challenge.
                _LOGGER.info(
                    "%s: released from quarantine (the coordinator sent a challenge)",
                    self.node_id,
                )
                self._set_quarantined(False)
            self._send(
                "auth",
                protocol.node_topic(self.config.mqtt.prefix, self.node_id, "auth"),
                {"nonce": nonce},
                qos=1,
            )
            _LOGGER.info("%s: answered a reauthentication request", self.node_id)

    def _set_quarantined(self, quarantined: bool) -> None:
        self.quarantined = quarantined
        self._store.state.quarantined = quarantined
        self._store.save()

    # Worker results.

    def _on_job_done(self, result: RoundResult | Calibration) -> None:
        if isinstance(result, RoundResult):
            self._on_round_trained(result)
        else:
            self._on_calibrated(result)

    def _on_round_trained(self, result: RoundResult) -> None:
        if self._training_round == result.round:
            self._training_round = None
        for kind, detector in result.local_detectors.items():
            if self._detector_version.get(kind, 0) == 0:
                self._detectors[kind] = detector
                self._detector_version[kind] = 0
        if result.round > self._last_round:
            # Trained for a round of the coordinator's previous epoch. The new
            # federation has not reached that number yet, so it would reject the update.
            _LOGGER.info(
                "%s: update for round %s of the previous federation not sent",
                self.node_id,
                result.round,
            )
            return
        if self.quarantined:
            _LOGGER.info(
                "%s: quarantined while training round %s, update not sent",
                self.node_id,
                result.round,
            )
            return
        updates = result.updates
        if self._simulation is not None:
            updates = self._simulation.poison(updates)
        update = protocol.ModelUpdate(
            round=result.round, base_version=result.base_version, kinds=updates
        )
        topic = protocol.node_topic(self.config.mqtt.prefix, self.node_id, "update")
        if not self._send("update", topic, protocol.update_body(update), qos=1):
            _LOGGER.warning("%s: update for round %s could not be sent", self.node_id, result.round)
            return
        self.rounds_joined += 1
        self.recent_rounds.append(result.round)
        rows = {protocol.base_kind(key): model.n_samples for key, model in result.updates.items()}
        if any(self._store.state.update_rows.get(k) != n for k, n in rows.items()):
            self._store.state.update_rows.update(rows)
            self._store.save()
        _LOGGER.info(
            "%s: joined round %s: sent an update from base version %s for %s",
            self.node_id,
            result.round,
            result.base_version,
            ", ".join(f"{kind} ({model.n_samples} samples)" for kind, model in updates.items()),
        )

    def _on_calibrated(self, calibration: Calibration) -> None:
        if calibration.model_version < self.model_version:
            return
        self._detectors.update(calibration.detectors)
        for kind in calibration.detectors:
            is_global = kind in calibration.global_kinds
            self._detector_version[kind] = calibration.model_version if is_global else 0
        _LOGGER.debug(
            "%s: thresholds calibrated for model version %s: %s",
            self.node_id,
            calibration.model_version,
            ", ".join(f"{k}={d.threshold_:.3f}" for k, d in calibration.detectors.items()),
        )
        if self._version_at_replay_end is None:
            return
        if calibration.model_version > self._version_at_replay_end:
            self._finish()
        else:
            self._write_results()

    # Uplink messages.

    def _send(
        self,
        message_type: str,
        topic: str,
        body: dict[str, Any],
        qos: int = 0,
        connection: int | None = None,
    ) -> bool:
        envelope = protocol.build_envelope(
            message_type, self.node_id, self._counter.next(), body, now=self._clock()
        )
        envelope["sig"] = hmac_tag(self._node_key, envelope)
        payload = protocol.encode(envelope)
        return self._link.publish(topic, payload, qos=qos, connection=connection)

    def _publish_state(self, monitor: DeviceMonitor) -> None:
        if self._announced_connection is None:
            # The heartbeat after the next connection carries every device's state.
            return
        state = protocol.DeviceState(
            device_id=monitor.device.id,
            anomaly=monitor.anomaly,
            score=_reportable(monitor.score),
            threshold=_reportable(monitor.threshold),
        )
        topic = protocol.state_topic(self.config.mqtt.prefix, self.node_id, monitor.device.id)
        self._send(
            "state", topic, protocol.state_body(state), connection=self._announced_connection
        )

    def _publish_heartbeat(self) -> None:
        now = time.monotonic()
        interval = max(now - self._last_heartbeat, 1e-3)
        self._last_heartbeat = now
        known, unknown = self._peers.count()
        if self._simulation is not None:
            unknown += self._simulation.extra_unknown_peers()
        heartbeat = protocol.Heartbeat(
            devices=tuple(
                protocol.DeviceInfo(d.id, d.kind, d.name, d.features) for d in self.config.devices
            ),
            interval=interval,
            samples=self._interval_samples,
            anomalies=self._interval_anomalies,
            peers_known=known,
            peers_unknown=unknown,
            traffic_bytes=self._link.take_published_bytes(),
            model_version=self.model_version,
            software=SOFTWARE,
        )
        self._interval_samples = 0
        self._interval_anomalies = 0
        topic = protocol.node_topic(self.config.mqtt.prefix, self.node_id, "heartbeat")
        body = protocol.heartbeat_body(heartbeat)
        sent = self._send("heartbeat", topic, body, connection=self._connection)
        self._announced_connection = self._connection if sent else None
        for monitor in self._monitors.values():
            self._publish_state(monitor)

    # Results.

    def evaluate(self) -> dict[str, Any]:
        """Return the results document for the CSV devices (see ``evaluation``)."""
        devices = []
        for device in self.config.csv_devices:
            monitor = self._monitors[device.id]
            features, labels = monitor.test_data()
            detector = self._detectors.get(device.kind)
            scores = None
            if detector is not None and monitor.n_test:
                scores = detector.anomaly_score(features)
            version = self._detector_version.get(device.kind)
            model_source = None
            if version is not None:
                model_source = "global" if version > 0 else "local"
            devices.append(
                DeviceEvaluation(
                    device_id=device.id,
                    kind=device.kind,
                    labels=labels,
                    scores=scores,
                    threshold=None if detector is None else detector.threshold_,
                    model=model_source,
                    n_rows=monitor.n_test,
                    n_train_rows=monitor.n_train,
                    replay_error=self._replay_errors.get(device.id),
                )
            )
        return build_results(
            self.node_id, self.rounds_joined, list(self.recent_rounds), self.model_version, devices
        )

    def _write_results(self) -> None:
        if self.results_path is None:
            return
        try:
            write_results(self.results_path, self.evaluate())
        except OSError as err:
            self._results_error = (
                f"cannot write results to {self.results_path}: {err.strerror or err}"
            )
            _LOGGER.error("%s: %s", self.node_id, self._results_error)
            return
        self._results_error = None
        _LOGGER.info(
            "%s: wrote results for model version %s to %s",
            self.node_id,
            self.model_version,
            self.results_path,
        )

    def _finish(self) -> None:
        self._done_deadline = None
        self._write_results()
        self.done.set()


def _next_heartbeat(due: float, now: float, interval: float) -> float:
    """Return when the heartbeat after one that was ``due`` and sent at ``now`` is due.

    It keeps the cadence, but after a pause longer than ``interval`` (a suspended
    process, a busy host) it skips the missed heartbeats. Sending them at once
    would report intervals of milliseconds, and the coordinator would read the
    traffic since the last one as a burst.
    """
    following = due + interval
    return following if following > now else now + interval


def _round_time_left(
    announcement: protocol.RoundAnnouncement, envelope: protocol.Envelope, received: float
) -> float:
    """Return the seconds left until the round's deadline, negative once it passed.

    The deadline and the envelope timestamp are both in the coordinator's clock,
    so their difference does not depend on the offset between the node's clock and
    the coordinator's. That difference counts down from ``received``, the
    ``time.monotonic()`` value at which the message arrived.
    """
    # NOTE: the time the message spent in transit or queued at the broker is not
    # subtracted, because the node cannot tell it apart from clock offset. The
    # verifier's freshness check, which rejects a timestamp more than
    # DEFAULT_MAX_SKEW seconds from the node's clock, limits that error.
    time_left_at_send = announcement.deadline - envelope.timestamp
    return time_left_at_send - (time.monotonic() - received)


def _reportable(value: float) -> float:
    if not math.isfinite(value):
        return MAX_REPORTED_SCORE if value > 0 else -MAX_REPORTED_SCORE
    return float(np.clip(value, -MAX_REPORTED_SCORE, MAX_REPORTED_SCORE))
