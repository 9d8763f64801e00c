"""Verification of the coordinator's messages: every check a downlink message must pass.

A message is accepted only when all of these hold:

1. The envelope decodes, is at most ``protocol.MAX_PAYLOAD_BYTES`` and has the
   supported protocol version.
2. Its type matches the topic it arrived on and its sender is the coordinator.
3. Its Ed25519 signature verifies with the coordinator's public key.
4. Freshness: a live message must carry a timestamp within
   ``security.DEFAULT_MAX_SKEW`` seconds of the node's clock and a counter above
   the last accepted one. A retained message (the broker's stored copy, delivered
   on every subscribe) may be old, so instead it must be newer than what the node
   already applied: a model needs a higher version and a command a higher counter.
5. Its body validates (``protocol.parse_*``); a command must name this node.

A round or model from another federation epoch than the last one accepted
means the coordinator started over, with round and version numbers from 1
again. A retained one must then have a counter above the last accepted
coordinator message, so that a recorded message of an earlier epoch cannot
take the node back.

Failures raise ``MessageRejected`` with a reason from ``security.RejectReason``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fltrust_core import protocol
from fltrust_core.model import GlobalModel
from fltrust_core.protocol import Command, Envelope, RoundAnnouncement
from fltrust_core.security import (
    DEFAULT_MAX_SKEW,
    MessageRejected,
    RejectReason,
    ReplayGuard,
    load_public_key,
    verify_ed25519,
)

from .state import StateStore


class DownlinkVerifier:
    """Opens round, model and command messages, raising MessageRejected on any failed check."""

    def __init__(
        self,
        coordinator_public_key: str,
        node_id: str,
        store: StateStore,
        clock: Callable[[], float] = time.time,
        max_skew: float = DEFAULT_MAX_SKEW,
    ) -> None:
        """Load the key and the last accepted coordinator counter from ``store``."""
        self._public_key = load_public_key(coordinator_public_key)
        self._node_id = node_id
        self._store = store
        self._clock = clock
        self.guard = ReplayGuard(max_skew=max_skew)
        saved = store.state.coordinator_counter
        if saved is not None:
            self.guard.accept(protocol.COORDINATOR_SENDER, saved)

    def _open(self, expected_type: str, payload: bytes, retained: bool) -> Envelope:
        envelope = protocol.decode_envelope(payload)
        if envelope.type != expected_type:
            raise MessageRejected(
                RejectReason.TOPIC_MISMATCH,
                f"message of type {envelope.type!r} on the {expected_type} topic",
            )
        if envelope.sender != protocol.COORDINATOR_SENDER:
            raise MessageRejected(
                RejectReason.TOPIC_MISMATCH,
                f"message from {envelope.sender!r}, expected the coordinator",
            )
        verify_ed25519(self._public_key, envelope.raw)
        if not retained:
            self.guard.check(
                protocol.COORDINATOR_SENDER, envelope.counter, envelope.timestamp, self._clock()
            )
        return envelope

    @property
    def epoch(self) -> str | None:
        """The federation epoch of the last accepted round or model, None before any."""
        return self._store.state.epoch

    def _check_epoch(self, epoch: str, envelope: Envelope, retained: bool) -> bool:
        """Return whether a verified round or model comes from a new federation epoch."""
        known = self._store.state.epoch
        if not epoch or known is None or epoch == known:
            return False
        last = self._store.state.coordinator_counter
        if retained and last is not None and envelope.counter <= last:
            raise MessageRejected(
                RejectReason.REPLAYED,
                f"retained message of federation epoch {epoch} is not newer than the last "
                f"accepted coordinator message, of epoch {known}",
            )
        return True

    def _record_epoch(self, epoch: str) -> None:
        if epoch and epoch != self._store.state.epoch:
            self._store.state.epoch = epoch
            self._store.save()

    def _accept(self, envelope: Envelope, retained: bool) -> None:
        if retained:
            return
        self.guard.accept(protocol.COORDINATOR_SENDER, envelope.counter)
        self._store.state.coordinator_counter = envelope.counter
        self._store.save()

    def open_round(
        self, payload: bytes, retained: bool = False
    ) -> tuple[RoundAnnouncement, Envelope]:
        """Verify and parse a round announcement.

        The coordinator retains its last announcement. A retained copy is
        checked like a live message, and the caller judges from its own clock
        whether that round is still open. The envelope is returned because its
        timestamp and the round's deadline are both in the coordinator's clock.
        """
        envelope = self._open("round", payload, retained=False)
        announcement = protocol.parse_round(envelope.body)
        self._accept(envelope, retained=False)
        self._record_epoch(announcement.epoch)
        return announcement, envelope

    def open_model(
        self, payload: bytes, retained: bool, current_version: int
    ) -> tuple[GlobalModel, Envelope]:
        """Verify and parse a global model.

        A retained model must have a version above ``current_version``, unless
        it starts a new federation epoch. A live model of an older or equal
        version is returned all the same, and the caller ignores it unless
        ``epoch`` changed.
        """
        envelope = self._open("model", payload, retained)
        model = protocol.parse_model(envelope.body)
        new_epoch = self._check_epoch(model.epoch, envelope, retained)
        if retained and not new_epoch and model.version <= current_version:
            raise MessageRejected(
                RejectReason.REPLAYED,
                f"retained model version {model.version} is not above the adopted "
                f"{current_version}",
            )
        self._accept(envelope, retained)
        self._record_epoch(model.epoch)
        return model, envelope

    def open_command(self, payload: bytes, retained: bool) -> tuple[Command, Envelope]:
        """Verify and parse a command addressed to this node.

        A retained command must have a counter above the last applied command.
        """
        envelope = self._open("command", payload, retained)
        command = protocol.parse_command(envelope.body)
        if command.node_id != self._node_id:
            raise MessageRejected(
                RejectReason.TOPIC_MISMATCH,
                f"command for node {command.node_id!r} on the topic of {self._node_id!r}",
            )
        last_command = self._store.state.command_counter
        if retained and last_command is not None and envelope.counter <= last_command:
            raise MessageRejected(
                RejectReason.REPLAYED,
                f"retained command counter {envelope.counter} is not above the last applied "
                f"{last_command}",
            )
        self._accept(envelope, retained)
        self._store.state.command_counter = envelope.counter
        self._store.save()
        return command, envelope
