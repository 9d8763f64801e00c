"""The coordinator: runs one federation's round engine inside Home Assistant.

``FltrustCoordinator`` owns the ``Federation`` and everything around it: the
MQTT subscription and publishing, the round and deadline timers, storage,
the Home Assistant devices and the bus events. Entities only read the
``FederationData`` snapshots it publishes.

Every call into the engine runs in the executor, one at a time under
``_lock``, together with applying its outcome (publishing, events, new
snapshot), so outcomes are applied in the order the engine produced them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, override

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import CALLBACK_TYPE, Context, Event, HassJob, HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryError, HomeAssistantError
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.event import async_call_later, async_track_time_interval
from homeassistant.helpers.storage import Store
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator
from homeassistant.util import dt as dt_util

from .broker_access import BrokerAccess
from .const import (
    BACKUP_INTERVAL,
    BACKUP_SUFFIX,
    CONF_BROKER_ACCESS,
    CONF_BROKER_USERNAME,
    CONF_FEDERATION_KEY,
    CONF_KEY_GENERATIONS,
    CONF_MIN_NODES,
    CONF_QUARANTINE_THRESHOLD,
    CONF_REAUTH_THRESHOLD,
    CONF_ROUND_INTERVAL,
    CONF_ROUND_TIMEOUT,
    CONF_START_OVER,
    CONF_STATE_SAVED,
    CONF_TOPIC_PREFIX,
    DOMAIN,
    EVENT_QUARANTINED,
    EVENT_RELEASED,
    EVENT_TRUST_DROPPED,
    LOGGER,
    SAVE_DELAY,
    STORAGE_VERSION,
)
from .core.dynsec import DEFAULT_USERNAME_TEMPLATE
from .core.federation import (
    KIND_RETENTION_ROUNDS,
    Federation,
    FederationEvent,
    FederationSettings,
    Outcome,
    Publish,
)
from .core.protocol import MAX_KINDS, MAX_PAYLOAD_BYTES, parse_uplink_topic, uplink_subscription
from .core.security import (
    derive_coordinator_private_key,
    parse_key,
    public_key_hex,
)
from .core.trust import TrustConfig, TrustStatus
from .devices import FederationDevices
from .models import FederationData, NodeData, build_federation_data
from .rejections import RejectionLog

# Messages waiting for the engine. Beyond either limit new messages are dropped
# and counted, so a flood cannot exhaust memory.
MAX_PENDING_MESSAGES = 2000
MAX_PENDING_BYTES = 16 * 1024 * 1024
# Messages handled per executor job, so that round timers get the lock in between.
BATCH_SIZE = 200

BUS_EVENTS = {
    "trust_dropped": EVENT_TRUST_DROPPED,
    "quarantined": EVENT_QUARANTINED,
    "released": EVENT_RELEASED,
}


ISSUE_NODE_QUARANTINED = "node_quarantined"
ISSUE_STATE_UNUSABLE = "stored_state_unusable"


def quarantine_issue_id(entry_id: str, node_id: str) -> str:
    """Return the id of the repair issue of a quarantined node."""
    return f"{ISSUE_NODE_QUARANTINED}_{entry_id}_{node_id}"


def state_issue_id(entry_id: str) -> str:
    """Return the id of the repair issue of a federation whose stored state is unusable."""
    return f"{ISSUE_STATE_UNUSABLE}_{entry_id}"


class NodeNotQuarantinedError(Exception):
    """A release was requested for a node that is not quarantined."""


class NodeQuarantinedError(Exception):
    """A quarantined node cannot be forgotten: starting over would lift its quarantine."""


class NodeConnectedError(Exception):
    """A node that is still sending messages cannot be forgotten."""


@dataclass
class _JobResult:
    """The outcome of one engine call and the snapshot taken right after it."""

    outcome: Outcome
    data: FederationData


def settings_from_entry(entry: ConfigEntry) -> FederationSettings:
    """Return the engine settings stored in a config entry.

    Raises:
        ValueError: when the stored federation key is not 64 hexadecimal characters.
    """
    data = entry.data
    options = entry.options
    return FederationSettings(
        prefix=data[CONF_TOPIC_PREFIX],
        federation_key=parse_key(data[CONF_FEDERATION_KEY], "federation key"),
        round_interval=float(options[CONF_ROUND_INTERVAL]),
        round_timeout=float(options[CONF_ROUND_TIMEOUT]),
        min_nodes=int(options[CONF_MIN_NODES]),
        trust=TrustConfig(
            reauth_threshold=float(options[CONF_REAUTH_THRESHOLD]),
            quarantine_threshold=float(options[CONF_QUARANTINE_THRESHOLD]),
        ),
    )


class FltrustCoordinator(DataUpdateCoordinator[FederationData]):
    """Runs one federation: MQTT in and out, rounds, storage, devices and events."""

    config_entry: ConfigEntry[FltrustCoordinator]

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry[FltrustCoordinator]) -> None:
        """Prepare the coordinator. ``_async_setup`` loads the stored state later.

        Raises:
            ConfigEntryError: when the entry's federation key is invalid.
        """
        try:
            self.settings = settings_from_entry(entry)
        except ValueError as err:
            raise ConfigEntryError(
                translation_domain=DOMAIN, translation_key="invalid_federation_key"
            ) from err
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"{DOMAIN} {entry.title}",
            update_interval=None,
        )
        self.prefix = self.settings.prefix
        self.devices = FederationDevices(hass, entry)
        # Messages dropped because too many were waiting for the engine.
        self.dropped_messages = 0
        # Node and kinds whose place in the model was refused, logged once each.
        self._kinds_left_out: set[tuple[str, tuple[str, ...]]] = set()
        # Nodes last logged as disconnected, so that each change is logged once.
        self._disconnected_nodes: set[str] = set()
        self._federation: Federation | None = None
        self._lock = asyncio.Lock()
        self._store: Store[dict[str, Any]] = Store(
            hass, STORAGE_VERSION, f"{DOMAIN}.{entry.entry_id}"
        )
        self._backup_store: Store[dict[str, Any]] = Store(
            hass, STORAGE_VERSION, f"{DOMAIN}.{entry.entry_id}.{BACKUP_SUFFIX}"
        )
        # Monotonic time of the last copy to the backup file; None before the first.
        self._backup_saved: float | None = None
        self._rejections = RejectionLog(entry.entry_id)
        self._pending: deque[tuple[str, bytes, float]] = deque()
        self._pending_bytes = 0
        self._drain_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._unsubscribes: list[CALLBACK_TYPE] = []
        self._stop_listener: CALLBACK_TYPE | None = None
        self._deadline_timer: CALLBACK_TYPE | None = None
        self._save_timer: CALLBACK_TYPE | None = None
        self.broker_access: BrokerAccess | None = None
        if entry.options.get(CONF_BROKER_ACCESS, False):
            self.broker_access = BrokerAccess(
                hass,
                entry,
                self.settings.prefix,
                entry.options.get(CONF_BROKER_USERNAME, DEFAULT_USERNAME_TEMPLATE),
                self.async_update_listeners,
            )

    # Set-up and shutdown.

    @property
    def federation(self) -> Federation:
        """The round engine. Use it only in the executor while holding the lock."""
        if self._federation is None:
            raise RuntimeError("the coordinator has not loaded its state yet")
        return self._federation

    @override
    async def _async_setup(self) -> None:
        """Load the stored federation state and register the federation device.

        When the main file is missing or invalid but its backup is valid, the
        backup is used. Starting empty would silently lift quarantines and
        forget replay counters, so it happens only for a new entry, or after a
        person chose to start over in the repair issue raised here.

        Raises:
            ConfigEntryError: when the entry saved its state before, and neither
                the main file nor the backup contains a valid state.
        """
        entry = self.config_entry
        if entry.data.get(CONF_START_OVER):
            LOGGER.warning(
                "%s: starting over with an empty federation state, as requested in the repair "
                "issue; the stored state in %s is replaced",
                entry.entry_id,
                self._store.path,
            )
            self._federation = await self._async_restore(None)
            await self.async_save()
        else:
            self._federation = await self._async_load_state()
        ir.async_delete_issue(self.hass, DOMAIN, state_issue_id(entry.entry_id))
        self.devices.async_register_federation()

    async def _async_load_state(self) -> Federation:
        """Return the engine restored from the main file, or else from the backup.

        Home Assistant sets a file that is not valid JSON aside and loads nothing
        from it, so a missing file and a damaged one look the same here.

        Raises:
            ConfigEntryError: when no valid state is found for an entry that saved one.
        """
        entry_id = self.config_entry.entry_id
        stored = await self._store.async_load()
        error: Exception | None = None
        if stored is not None:
            try:
                federation = await self._async_restore(stored)
            except (AttributeError, KeyError, TypeError, ValueError) as err:
                error = err
            else:
                if stored.get("clean"):
                    # A crash before the next save must not leave the mark behind.
                    self._federation = federation
                    await self.async_save()
                return federation

        backup = await self._backup_store.async_load()
        problem = "missing or not valid JSON" if error is None else f"invalid ({error})"
        if backup is not None:
            # The backup may be older than the last messages accepted, so it must not
            # count as a clean stop: messages sent before this start are rejected.
            backup.pop("clean", None)
            try:
                federation = await self._async_restore(backup)
            except (AttributeError, KeyError, TypeError, ValueError) as err:
                problem += f", and its backup in {self._backup_store.path} is invalid ({err})"
            else:
                LOGGER.error(
                    "%s: stored federation state in %s is %s; restored it from the backup in "
                    "%s, which lacks what changed in the last minutes before it was lost",
                    entry_id,
                    self._store.path,
                    problem,
                    self._backup_store.path,
                )
                self._federation = federation
                await self.async_save()
                return federation
        elif error is not None or self.config_entry.data.get(CONF_STATE_SAVED):
            problem += ", and it has no backup"

        if error is None and backup is None and not self.config_entry.data.get(CONF_STATE_SAVED):
            # A new entry: nothing was ever saved.
            return await self._async_restore(None)
        LOGGER.error(
            "%s: stored federation state in %s is %s. The federation does not start, so that "
            "no quarantine is lifted; see the repair issue",
            entry_id,
            self._store.path,
            problem,
        )
        self._async_create_state_issue()
        raise ConfigEntryError(
            translation_domain=DOMAIN,
            translation_key="invalid_stored_state",
            translation_placeholders={"path": self._store.path},
        )

    @callback
    def _async_create_state_issue(self) -> None:
        """Raise the repair issue through which a person restores the state or starts over."""
        entry = self.config_entry
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            state_issue_id(entry.entry_id),
            is_fixable=True,
            is_persistent=False,
            severity=ir.IssueSeverity.CRITICAL,
            translation_key=ISSUE_STATE_UNUSABLE,
            translation_placeholders={"title": entry.title, "path": self._store.path},
            data={"entry_id": entry.entry_id},
        )

    async def _async_restore(self, stored: dict[str, Any] | None) -> Federation:
        return await self.hass.async_add_executor_job(self._job_restore, stored, self._now())

    def _job_restore(self, stored: dict[str, Any] | None, now: float) -> Federation:
        federation = Federation(self.settings, stored, now)
        if stored is None:
            # A new or restarted federation has no replay counters, so a recorded
            # message of an earlier one with the same key would pass them.
            federation.replay.not_before = now
        # The entry keeps its own copy of the key generations, so that a replaced
        # key never works again, whatever happened to the stored state.
        entry_generations = self.config_entry.data.get(CONF_KEY_GENERATIONS, {})
        for node_id, generation in entry_generations.items():
            current = federation.key_generations.get(node_id, 0)
            federation.key_generations[node_id] = max(current, int(generation))
        return federation

    @override
    async def _async_update_data(self) -> FederationData:
        """Return a fresh snapshot of the federation."""
        async with self._lock:
            data = await self.hass.async_add_executor_job(
                build_federation_data, self.federation, self._now()
            )
        self.devices.async_register(data.nodes)
        self._async_log_connectivity(data.nodes)
        return data

    async def async_start(self) -> None:
        """Subscribe to the nodes, publish the retained model and start the round timer."""
        entry_id = self.config_entry.entry_id
        self._unsubscribes.append(
            await mqtt.async_subscribe(
                self.hass,
                uplink_subscription(self.prefix),
                self._async_message_received,
                qos=1,
                encoding=None,
            )
        )
        self._unsubscribes.append(
            async_track_time_interval(
                self.hass,
                self._handle_round_timer,
                timedelta(seconds=self.settings.round_interval),
                name=f"{DOMAIN} rounds {entry_id}",
                cancel_on_shutdown=True,
            )
        )
        self._stop_listener = self.hass.bus.async_listen_once(
            EVENT_HOMEASSISTANT_STOP, self._async_on_stop
        )
        async with self._lock:
            publish = await self.hass.async_add_executor_job(
                self.federation.model_message, self._now()
            )
            await self._async_publish(publish)
        for node_id, node in self.data.nodes.items():
            if node.status == TrustStatus.QUARANTINED:
                self._async_create_quarantine_issue(node_id)
            else:
                self._async_delete_quarantine_issue(node_id)
        if self.broker_access is not None:
            await self.broker_access.async_start()
            # A node quarantined while broker access was off, or whose account could
            # not be disabled before a restart, must not keep its access.
            for node_id, node in self.data.nodes.items():
                if node.status == TrustStatus.QUARANTINED:
                    self._async_set_broker_access(node_id, enabled=False)
        LOGGER.debug(
            "%s: listening on %s, model version %s, round %s",
            entry_id,
            uplink_subscription(self.prefix),
            self.data.model_version,
            self.data.round,
        )

    @callback
    def _cancel_timers(self) -> None:
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes.clear()
        if self._deadline_timer is not None:
            self._deadline_timer()
            self._deadline_timer = None
        if self._save_timer is not None:
            self._save_timer()
            self._save_timer = None
        if self.broker_access is not None:
            self.broker_access.async_stop()
        if self._federation is not None and self.data is not None:
            # Their fix flows need a loaded entry; the next start creates them again.
            for node_id in self.data.nodes:
                self._async_delete_quarantine_issue(node_id)

    async def _async_on_stop(self, _event: Event) -> None:
        """Stop processing and save the state when Home Assistant stops."""
        self._stop_listener = None
        self._stopping = True
        self._cancel_timers()
        if self._federation is not None:
            self._log_open_round()
            await self.async_save(clean=True)

    @override
    async def async_shutdown(self) -> None:
        """Unsubscribe, cancel the timers and save the state when the entry unloads."""
        await super().async_shutdown()
        self._stopping = True
        self._cancel_timers()
        if self._stop_listener is not None:
            self._stop_listener()
            self._stop_listener = None
        self._pending.clear()
        self._pending_bytes = 0
        if self._federation is not None:
            self._log_open_round()
            await self.async_save(clean=True)

    def _log_open_round(self) -> None:
        """Log that the open round ends without a model, because its updates are not stored."""
        federation = self.federation
        if federation.round_open:
            LOGGER.info(
                "Round %s ends without a model because the coordinator stops; "
                "the %s update(s) it received are discarded, and the nodes join the next round",
                federation.round,
                len(federation.updates),
            )

    async def async_save(self, clean: bool = False, backup: bool = False) -> None:
        """Write the federation state to storage now.

        ``clean`` marks the last save before the coordinator stops taking
        messages, so that the next start need not distrust earlier timestamps.
        The backup file is written too when ``clean`` or ``backup`` is set, and
        otherwise at most every ``BACKUP_INTERVAL`` seconds.
        """
        if self._save_timer is not None:
            self._save_timer()
            self._save_timer = None
        async with self._lock:
            data = await self.hass.async_add_executor_job(self.federation.to_dict, clean)
        await self._store.async_save(data)
        now = time.monotonic()
        if (
            clean
            or backup
            or self._backup_saved is None
            or now - self._backup_saved >= BACKUP_INTERVAL
        ):
            await self._backup_store.async_save(data)
            self._backup_saved = now
        entry = self.config_entry
        if not entry.data.get(CONF_STATE_SAVED) or entry.data.get(CONF_START_OVER):
            # From now on a start that finds no state treats it as lost, not as new.
            self.hass.config_entries.async_update_entry(
                entry, data={**entry.data, CONF_STATE_SAVED: True, CONF_START_OVER: False}
            )

    @callback
    def _schedule_save(self) -> None:
        if self._save_timer is None and not self._stopping:
            self._save_timer = async_call_later(
                self.hass,
                SAVE_DELAY,
                HassJob(self._handle_save_timer, f"{DOMAIN} save", cancel_on_shutdown=True),
            )

    @callback
    def _handle_save_timer(self, _now: datetime) -> None:
        self._save_timer = None
        self.config_entry.async_create_task(self.hass, self.async_save(), f"{DOMAIN} save")

    # Keys.

    @property
    def public_key(self) -> str:
        """The coordinator's Ed25519 public key as hexadecimal, which nodes use to verify it."""
        return public_key_hex(derive_coordinator_private_key(self.settings.federation_key))

    async def async_node_key(self, node_id: str) -> tuple[str, int]:
        """Return the current HMAC key of a node as hexadecimal, and its generation."""
        async with self._lock:
            return await self.hass.async_add_executor_job(self._job_node_key, node_id)

    def _job_node_key(self, node_id: str) -> tuple[str, int]:
        federation = self.federation
        return federation.node_key(node_id).hex(), federation.key_generations.get(node_id, 0)

    async def async_replace_node_key(self, node_id: str) -> tuple[str, int]:
        """Give a node a new HMAC key and return it as hexadecimal, with its generation.

        The generation is saved at once in the state, its backup and the
        entry's data: after a restart that lost it, the replaced key would
        work again.

        Raises:
            ValueError: when ``node_id`` is invalid or has no key generation left.
            KeyError: when the federation never verified a message of the node.
        """
        async with self._lock:
            outcome = await self.hass.async_add_executor_job(
                self.federation.replace_node_key, node_id
            )
            key, generation = await self.hass.async_add_executor_job(self._job_node_key, node_id)
        for event in outcome.events:
            self._async_handle_event(event, None)
        entry = self.config_entry
        generations = {**entry.data.get(CONF_KEY_GENERATIONS, {}), node_id: generation}
        self.hass.config_entries.async_update_entry(
            entry, data={**entry.data, CONF_KEY_GENERATIONS: generations}
        )
        await self.async_save(backup=True)
        return key, generation

    # Messages from the nodes.

    @staticmethod
    def _now() -> float:
        return dt_util.utcnow().timestamp()

    @callback
    def _async_message_received(self, message: mqtt.ReceiveMessage) -> None:
        """Queue an uplink message for the engine."""
        if self._stopping:
            return

        parsed = parse_uplink_topic(self.prefix, message.topic)
        if parsed is None:
            # Commands the coordinator published itself, and foreign topics.
            return
        payload = message.payload
        if isinstance(payload, str):
            payload = payload.encode()
        if TYPE_CHECKING:
            # Subscribed with encoding=None, so this is paho's payload, which is bytes.
            assert isinstance(payload, bytes)
        if len(payload) > MAX_PAYLOAD_BYTES:
            # The engine rejects anything above the limit. Keeping one byte more than
            # the limit bounds the memory that a large message occupies while it waits.
            # NOTE: the rejection detail then reports the capped size, not the received one.
            payload = payload[: MAX_PAYLOAD_BYTES + 1]

        now = self._now()
        if (
            len(self._pending) >= MAX_PENDING_MESSAGES
            or self._pending_bytes + len(payload) > MAX_PENDING_BYTES
        ):
            self.dropped_messages += 1
            self._rejections.record_dropped(parsed[0], len(self._pending), self._pending_bytes, now)
            return

        self._pending.append((message.topic, payload, now))
        self._pending_bytes += len(payload)
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = self.config_entry.async_create_task(
                self.hass, self._async_drain(), f"{DOMAIN} messages"
            )

    async def _async_drain(self) -> None:
        """Feed the waiting messages to the engine in batches."""
        while self._pending and not self._stopping:
            batch = [self._pending.popleft() for _ in range(min(BATCH_SIZE, len(self._pending)))]
            self._pending_bytes -= sum(len(payload) for _, payload, _ in batch)
            async with self._lock:
                # mypy keeps the loop condition's narrowing of _stopping across the
                # wait for the lock, during which a shutdown can set it.
                if self._stopping:
                    return  # type: ignore[unreachable]
                result = await self.hass.async_add_executor_job(
                    self._job_handle_messages, batch, self._now()
                )
                await self._async_apply(result)

    def _job_handle_messages(self, batch: list[tuple[str, bytes, float]], now: float) -> _JobResult:
        """Apply a batch of messages and close the round if it became complete (executor)."""
        federation = self.federation
        outcome = Outcome()
        for topic, payload, received in batch:
            try:
                outcome.extend(federation.handle_message(topic, payload, received))
            except Exception:
                # The engine turns every invalid message into a rejection. An
                # exception here is a bug, and one bad message must not stop the
                # messages queued behind it.
                LOGGER.exception(
                    "%s: unexpected error handling a message on %s",
                    self.config_entry.entry_id,
                    topic,
                )
        if federation.ready_to_close(now):
            outcome.extend(federation.close_round(now))
        return _JobResult(outcome, build_federation_data(federation, now))

    # Rounds.

    @callback
    def _handle_round_timer(self, _now: datetime) -> None:
        self.config_entry.async_create_task(
            self.hass, self._async_round_tick(), f"{DOMAIN} round timer"
        )

    async def _async_round_tick(self) -> None:
        """Start the next round and refresh the entities, whose connected state depends on time."""
        async with self._lock:
            if self._stopping:
                return
            now = self._now()
            result = await self.hass.async_add_executor_job(self._job_round_tick, now)
            await self._async_apply(result)
        self._rejections.flush(now)

    def _job_round_tick(self, now: float) -> _JobResult:
        """Close a round that outlived its deadline timer and start the next one (executor)."""
        federation = self.federation
        outcome = Outcome()
        if federation.round_open:
            outcome.extend(federation.close_round(now))
        if federation.active_nodes(now):
            outcome.extend(federation.start_round(now))
        return _JobResult(outcome, build_federation_data(federation, now))

    @callback
    def _handle_deadline_timer(self, _now: datetime) -> None:
        self._deadline_timer = None
        self.config_entry.async_create_task(
            self.hass, self._async_close_if_ready(), f"{DOMAIN} round deadline"
        )

    async def _async_close_if_ready(self) -> None:
        async with self._lock:
            if self._stopping:
                return
            result = await self.hass.async_add_executor_job(self._job_close_if_ready, self._now())
            await self._async_apply(result)

    def _job_close_if_ready(self, now: float) -> _JobResult:
        federation = self.federation
        outcome = Outcome()
        if federation.ready_to_close(now):
            outcome.extend(federation.close_round(now))
        return _JobResult(outcome, build_federation_data(federation, now))

    # Release.

    async def async_release(self, node_id: str, context: Context | None = None) -> None:
        """Lift a node's quarantine.

        Raises:
            KeyError: when the federation does not know the node.
            NodeNotQuarantinedError: when the node is not quarantined.
        """
        async with self._lock:
            result = await self.hass.async_add_executor_job(self._job_release, node_id, self._now())
            await self._async_apply(result, context)

    def _job_release(self, node_id: str, now: float) -> _JobResult:
        federation = self.federation
        node = federation.nodes[node_id]
        if node.trust.status != TrustStatus.QUARANTINED:
            raise NodeNotQuarantinedError(node_id)
        previous = node.trust.score
        outcome = federation.release(node_id, now)
        for event in outcome.events:
            if event.kind == "released":
                event.data.update(
                    previous_trust=round(previous, 1),
                    round=federation.round,
                    status=node.trust.status.value,
                    reasons=["released by a user"],
                )
        return _JobResult(outcome, build_federation_data(federation, now))

    # Removing a node.

    async def async_forget_node(self, node_id: str) -> None:
        """Forget a node taken out of service, remove its watched devices and reload.

        The reload rebuilds the entities without the node; the caller removes
        the node's own device.

        With broker access on, the node's broker account is disabled first, so
        that a retired node's login stops working. The node stays when the
        broker does not confirm this.

        Raises:
            KeyError: when the federation does not know the node.
            NodeQuarantinedError: when the node is quarantined.
            NodeConnectedError: when the node was heard from recently.
            BrokerAccessError: when the broker did not disable the node's account.
        """
        node = self.data.nodes[node_id]
        if node.status == TrustStatus.QUARANTINED:
            raise NodeQuarantinedError(node_id)
        if node.is_connected(self._now()):
            raise NodeConnectedError(node_id)
        if self.broker_access is not None:
            await self.broker_access.async_retire(node_id)

        async with self._lock:
            outcome = await self.hass.async_add_executor_job(self.federation.forget_node, node_id)
            for publish in outcome.publishes:
                await self._async_publish(publish)
        self.devices.async_forget_node(node_id)
        await self.async_save()
        LOGGER.info("%s: forgot edge node %s", self.config_entry.entry_id, node_id)
        self.hass.config_entries.async_schedule_reload(self.config_entry.entry_id)

    async def async_forget_device(self, node_id: str, device_id: str) -> None:
        """Forget a device that its node no longer watches, and reload to drop its entities.

        The caller removes the device itself.

        Raises:
            KeyError: when the federation does not know the node or the device.
            ValueError: when the node's latest heartbeat still lists the device.
        """
        async with self._lock:
            await self.hass.async_add_executor_job(
                self.federation.forget_device, node_id, device_id
            )
        self.devices.async_forget_device(node_id, device_id)
        await self.async_save()
        LOGGER.info(
            "%s: forgot device %s of edge node %s", self.config_entry.entry_id, device_id, node_id
        )
        self.hass.config_entries.async_schedule_reload(self.config_entry.entry_id)

    # Applying outcomes.

    async def _async_publish(self, publish: Publish) -> None:
        try:
            await mqtt.async_publish(
                self.hass,
                publish.topic,
                publish.payload,
                publish.qos,
                publish.retain,
                encoding=None,
            )
        except HomeAssistantError as err:
            LOGGER.error(
                "%s: failed to publish to %s: %s", self.config_entry.entry_id, publish.topic, err
            )

    async def _async_apply(self, result: _JobResult, context: Context | None = None) -> None:
        """Publish an outcome, register new devices, fire events and hand out the snapshot."""
        for publish in result.outcome.publishes:
            await self._async_publish(publish)
        self.devices.async_register(result.data.nodes)
        round_started = False
        for event in result.outcome.events:
            round_started |= event.kind == "round_started"
            self._async_handle_event(event, context)
        self.async_set_updated_data(result.data)
        self._async_log_connectivity(result.data.nodes)
        self._schedule_save()
        if round_started and not self._stopping:
            if self._deadline_timer is not None:
                self._deadline_timer()
            self._deadline_timer = async_call_later(
                self.hass,
                self.settings.round_timeout,
                HassJob(
                    self._handle_deadline_timer, f"{DOMAIN} round deadline", cancel_on_shutdown=True
                ),
            )

    @callback
    def _async_log_connectivity(self, nodes: dict[str, NodeData]) -> None:
        """Log once when a node becomes disconnected and once when it is heard again."""
        entry_id = self.config_entry.entry_id
        now = self._now()
        for node_id, node in nodes.items():
            if node.is_connected(now):
                if node_id in self._disconnected_nodes:
                    self._disconnected_nodes.discard(node_id)
                    LOGGER.info("%s: edge node %s is connected again", entry_id, node_id)
            elif node_id not in self._disconnected_nodes:
                self._disconnected_nodes.add(node_id)
                LOGGER.info(
                    "%s: edge node %s sent no message for more than %.0f s, so it counts as "
                    "disconnected and the anomaly entities of its devices are unavailable",
                    entry_id,
                    node_id,
                    node.connected_timeout,
                )
        self._disconnected_nodes &= nodes.keys()

    @callback
    def _async_handle_event(self, event: FederationEvent, context: Context | None) -> None:
        """Log an engine event and fire the matching bus event."""
        entry_id = self.config_entry.entry_id
        data = event.data
        match event.kind:
            case "rejected":
                self._rejections.record(
                    data["node_id"], data["known_node"], data["reason"], data["detail"], self._now()
                )
            case "node_discovered":
                LOGGER.info("%s: discovered edge node %s", entry_id, data["node_id"])
            case "device_discovered":
                LOGGER.debug(
                    "%s: node %s watches new device %s",
                    entry_id,
                    data["node_id"],
                    data["device_id"],
                )
            case "trust_dropped":
                LOGGER.info(
                    "%s: trust of node %s dropped from %s to %s in round %s (%s)",
                    entry_id,
                    data["node_id"],
                    data["previous_trust"],
                    data["trust"],
                    data["round"],
                    ", ".join(data["reasons"]) or "no signal below 0.9",
                )
            case "quarantined":
                LOGGER.warning(
                    "%s: quarantined node %s with trust %s in round %s (%s); its updates are "
                    "ignored until someone calls %s.release",
                    entry_id,
                    data["node_id"],
                    data["trust"],
                    data["round"],
                    ", ".join(data["reasons"]) or "no signal below 0.9",
                    DOMAIN,
                )
                self._async_set_broker_access(data["node_id"], enabled=False)
                self._async_create_quarantine_issue(data["node_id"])
            case "released":
                LOGGER.info(
                    "%s: released node %s from quarantine with trust %s; it must re-authenticate",
                    entry_id,
                    data["node_id"],
                    data["trust"],
                )
                self._async_set_broker_access(data["node_id"], enabled=True)
                self._async_delete_quarantine_issue(data["node_id"])
            case "reauth_required":
                LOGGER.info(
                    "%s: node %s must re-authenticate, trust %s",
                    entry_id,
                    data["node_id"],
                    data["trust"],
                )
            case "kinds_left_out":
                # Once per node and set of kinds: an honest node sends them every round.
                logged = (data["node_id"], tuple(data["kinds"]))
                if logged not in self._kinds_left_out:
                    self._kinds_left_out.add(logged)
                    LOGGER.warning(
                        "%s: kinds %s of node %s are left out of round %s and later rounds: the "
                        "federation has the maximum of %s kinds. A kind that no round aggregates "
                        "for %s rounds frees its place",
                        entry_id,
                        ", ".join(data["kinds"]),
                        data["node_id"],
                        data["round"],
                        MAX_KINDS,
                        KIND_RETENTION_ROUNDS,
                    )
            case "key_replaced":
                LOGGER.warning(
                    "%s: replaced the key of node %s with generation %s; messages signed with "
                    "an earlier key are rejected from now on",
                    entry_id,
                    data["node_id"],
                    data["generation"],
                )
            case "authenticated":
                LOGGER.info("%s: node %s re-authenticated", entry_id, data["node_id"])
            case "round_started":
                LOGGER.debug("%s: round %s started", entry_id, data["round"])
            case "round_completed":
                LOGGER.debug(
                    "%s: round %s closed, model version %s, participants %s, dropped %s",
                    entry_id,
                    data["round"],
                    data["version"],
                    data["participants"],
                    data["dropped"],
                )
                for node_id, reason in data["dropped_reasons"].items():
                    LOGGER.info(
                        "%s: update of node %s left out of round %s: %s",
                        entry_id,
                        node_id,
                        data["round"],
                        reason,
                    )
        if (event_type := BUS_EVENTS.get(event.kind)) is not None:
            self.hass.bus.async_fire(event_type, self._bus_event_data(data), context=context)

    @callback
    def _async_set_broker_access(self, node_id: str, enabled: bool) -> None:
        """Cut or restore a node's broker access in the background, when that is enabled."""
        if self.broker_access is None or self._stopping:
            return
        self.config_entry.async_create_background_task(
            self.hass,
            self.broker_access.async_set_access(node_id, enabled),
            f"{DOMAIN} broker access {node_id}",
        )

    @callback
    def _async_create_quarantine_issue(self, node_id: str) -> None:
        """Create the repair issue through which a person checks and releases a quarantined node.

        The issue leaves the trust out, because it would go stale; its fix flow
        reads the current trust when it opens.
        """
        entry = self.config_entry
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            quarantine_issue_id(entry.entry_id, node_id),
            is_fixable=True,
            # Every start creates the issue again for each node still quarantined.
            is_persistent=False,
            severity=ir.IssueSeverity.ERROR,
            translation_key=ISSUE_NODE_QUARANTINED,
            translation_placeholders={
                "title": entry.title,
                "node_id": node_id,
            },
            data={"entry_id": entry.entry_id, "node_id": node_id},
        )

    @callback
    def _async_delete_quarantine_issue(self, node_id: str) -> None:
        ir.async_delete_issue(
            self.hass, DOMAIN, quarantine_issue_id(self.config_entry.entry_id, node_id)
        )

    def _bus_event_data(self, data: dict[str, Any]) -> dict[str, Any]:
        node_id = data["node_id"]
        return {
            "config_entry_id": self.config_entry.entry_id,
            "device_id": self.devices.node_device_ids.get(node_id),
            "node_id": node_id,
            "trust": data["trust"],
            "previous_trust": data["previous_trust"],
            "round": data["round"],
            "status": data["status"],
            "reasons": list(data["reasons"]),
        }

    # Diagnostics.

    async def async_export_state(self) -> dict[str, Any]:
        """Return the engine's storage form of the federation state."""
        async with self._lock:
            return await self.hass.async_add_executor_job(self.federation.to_dict)


# A config entry of this integration, with the coordinator as its runtime data.
# NOTE: an assignment rather than a ``type`` statement, because ruff parses the
# repository as Python 3.11 for the sake of the edge node.
FltrustConfigEntry = ConfigEntry[FltrustCoordinator]
