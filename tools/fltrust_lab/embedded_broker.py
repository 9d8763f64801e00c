"""An asyncio MQTT 3.1.1 broker for the lab on machines without Mosquitto.

Usage: ``python -m fltrust_lab.embedded_broker --port PORT``. From Python,
``EmbeddedBroker`` runs on an event loop and ``BrokerThread`` runs one in a
background thread for synchronous callers.

The broker speaks MQTT 3.1.1 (protocol level 4) and also accepts MQTT 3.1
(protocol name ``MQIsdp``, level 3) over plain TCP. It supports QoS 0, 1 and 2,
retained messages, ``+`` and ``#`` wildcards, persistent sessions (clean
session 0), last will messages and keepalive. A client that connects with
MQTT 5 receives CONNACK return code 1 (unacceptable protocol version), as MQTT
3.1.1 requires for a protocol level the server does not support.

The lab's clients use MQTT 3.1.1. paho-mqtt 2.x defaults to it, the edge node
sets it, and the lab creates Home Assistant's MQTT entry with the version in
``Broker.mqtt_protocol``, which is 3.1.1 for this broker.

NOTE: Home Assistant 2026.10 tries MQTT 5 each time it sets up an MQTT entry of
another version, to migrate the entry. This broker rejects that attempt and
logs a warning, and the entry stays on MQTT 3.1.1.

Sessions and retained messages live in memory only. There is no TLS, no
WebSocket listener, no access control list and no ``$SYS`` tree. A client that
breaks the protocol, sends a packet larger than ``max_packet_size`` or stays
silent for 1.5 times its keepalive is disconnected and the reason is logged.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import hmac
import logging
import secrets
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from . import LOOPBACK

_LOGGER = logging.getLogger("fltrust_lab.embedded_broker")

T = TypeVar("T")

DEFAULT_MAX_PACKET_SIZE = 1024 * 1024
# Mosquitto 2's defaults for max_inflight_messages and max_queued_messages.
DEFAULT_MAX_INFLIGHT = 20
DEFAULT_MAX_QUEUED = 1000
# Time a new TCP connection has to send its CONNECT packet.
DEFAULT_CONNECT_TIMEOUT = 10.0
# MQTT 3.1.1 requires the server to disconnect a client that sends no packet
# within one and a half times its keepalive [MQTT-3.1.2-24].
KEEPALIVE_FACTOR = 1.5
# Time a closing connection has to flush its output before it is aborted.
CLOSE_TIMEOUT = 5.0
# A full session queue logs the first dropped message and then every Nth.
DROP_LOG_INTERVAL = 100

MAX_PACKET_ID = 65535
MAX_REMAINING_LENGTH_BYTES = 4

# (protocol name, protocol level) pairs of the supported versions.
MQTT_311 = ("MQTT", 4)
MQTT_31 = ("MQIsdp", 3)


class PacketType(enum.IntEnum):
    """MQTT control packet types (the high nibble of the first header byte)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class ConnackCode(enum.IntEnum):
    """CONNACK return codes of MQTT 3.1.1."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


# Header flags that MQTT 3.1.1 fixes for these packet types. Every other
# type except PUBLISH must have all four flags 0.
_REQUIRED_FLAGS = {
    PacketType.PUBREL: 0b0010,
    PacketType.SUBSCRIBE: 0b0010,
    PacketType.UNSUBSCRIBE: 0b0010,
}
# Packets that only a server sends.
_SERVER_PACKETS = frozenset(
    {PacketType.CONNACK, PacketType.SUBACK, PacketType.UNSUBACK, PacketType.PINGRESP}
)


class ProtocolError(Exception):
    """A packet that breaks MQTT 3.1.1. The broker closes the connection that sent it."""


class _KeepaliveExpired(Exception):
    """No packet arrived within 1.5 times the client's keepalive."""


# Topics


def validate_topic_name(topic: str) -> None:
    """Raise ProtocolError unless ``topic`` is a valid topic name to publish to."""
    if not topic:
        raise ProtocolError("empty topic name")
    if "+" in topic or "#" in topic:
        raise ProtocolError(f"topic name {topic!r} contains a wildcard")


def validate_topic_filter(topic_filter: str) -> None:
    """Raise ProtocolError unless ``topic_filter`` is a valid subscription filter.

    ``#`` must be a whole level and the last one, and ``+`` must be a whole level.
    """
    if not topic_filter:
        raise ProtocolError("empty topic filter")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ProtocolError(f"invalid topic filter {topic_filter!r}: misplaced '#'")
        if "+" in level and level != "+":
            raise ProtocolError(f"invalid topic filter {topic_filter!r}: '+' is not a whole level")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Return whether ``topic`` matches the valid filter ``topic_filter``.

    A filter that starts with a wildcard does not match topics that start with
    ``$``, as MQTT 3.1.1 requires. ``a/#`` also matches ``a`` itself.
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


# Packet encoding and decoding


class _FieldReader:
    """Reads the fields of one packet body and raises ProtocolError when it is too short."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    @property
    def at_end(self) -> bool:
        return self._offset == len(self._data)

    def _take(self, size: int, field: str) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise ProtocolError(f"packet ends inside its {field}")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def uint8(self, field: str) -> int:
        return self._take(1, field)[0]

    def uint16(self, field: str) -> int:
        return int.from_bytes(self._take(2, field), "big")

    def binary(self, field: str) -> bytes:
        return self._take(self.uint16(field), field)

    def string(self, field: str) -> str:
        """Read a UTF-8 string, which MQTT 3.1.1 forbids to contain U+0000."""
        raw = self.binary(field)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ProtocolError(f"{field} is not valid UTF-8: {err}") from err
        if "\x00" in text:
            raise ProtocolError(f"{field} contains U+0000")
        return text

    def rest(self) -> bytes:
        chunk = self._data[self._offset :]
        self._offset = len(self._data)
        return chunk


def _check_fixed_header(
    packet_type: PacketType, flags: int, body: bytes, body_size: int | None
) -> None:
    """Raise ProtocolError unless the header flags and the body length are the required ones."""
    expected = _REQUIRED_FLAGS.get(packet_type, 0)
    if flags != expected:
        raise ProtocolError(
            f"{packet_type.name} has header flags {flags:#06b}, expected {expected:#06b}"
        )
    if body_size is not None and len(body) != body_size:
        raise ProtocolError(f"{packet_type.name} has body length {len(body)}, expected {body_size}")


def _read_packet_id(fields: _FieldReader) -> int:
    packet_id = fields.uint16("packet id")
    if packet_id == 0:
        raise ProtocolError("packet id 0")
    return packet_id


def encode_remaining_length(length: int) -> bytes:
    """Encode a packet's remaining length as MQTT's variable byte integer."""
    encoded = bytearray()
    while True:
        byte = length % 128
        length //= 128
        if length:
            byte |= 0x80
        encoded.append(byte)
        if not length:
            return bytes(encoded)


def _packet(packet_type: PacketType, body: bytes = b"", flags: int = 0) -> bytes:
    return bytes([packet_type << 4 | flags]) + encode_remaining_length(len(body)) + body


def _encode_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(2, "big") + raw


def _packet_id_packet(packet_type: PacketType, packet_id: int) -> bytes:
    flags = _REQUIRED_FLAGS.get(packet_type, 0)
    return _packet(packet_type, packet_id.to_bytes(2, "big"), flags)


def encode_publish(
    topic: str, payload: bytes, qos: int, retain: bool, dup: bool = False, packet_id: int = 0
) -> bytes:
    """Encode a PUBLISH packet. ``packet_id`` is used only when ``qos`` is 1 or 2."""
    body = _encode_string(topic)
    if qos:
        body += packet_id.to_bytes(2, "big")
    flags = (dup << 3) | (qos << 1) | retain
    return _packet(PacketType.PUBLISH, body + payload, flags)


async def read_packet(reader: asyncio.StreamReader, max_packet_size: int) -> tuple[int, int, bytes]:
    """Read one packet and return its type, its header flags and its body.

    Raises:
        ProtocolError: when the remaining length is malformed or the packet is
            larger than ``max_packet_size`` bytes. The body is not read then.
        asyncio.IncompleteReadError: when the connection ends inside a packet.
    """
    first = (await reader.readexactly(1))[0]
    remaining_length = 0
    for index in range(MAX_REMAINING_LENGTH_BYTES):
        byte = (await reader.readexactly(1))[0]
        remaining_length |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            header_size = 2 + index
            break
    else:
        raise ProtocolError(
            f"malformed remaining length: more than {MAX_REMAINING_LENGTH_BYTES} bytes"
        )
    packet_size = header_size + remaining_length
    if packet_size > max_packet_size:
        raise ProtocolError(
            f"packet of {packet_size} bytes exceeds the maximum packet size "
            f"of {max_packet_size} bytes"
        )
    body = await reader.readexactly(remaining_length)
    return first >> 4, first & 0x0F, body


@dataclass(frozen=True)
class Message:
    """An application message as the broker routes and retains it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class ConnectRequest:
    """The fields of a CONNECT packet that the broker uses."""

    protocol: tuple[str, int]
    client_id: str
    clean_session: bool
    keepalive: int
    will: Message | None
    username: str | None
    password: bytes | None


class UnsupportedProtocolError(Exception):
    """A CONNECT of a protocol version that the broker does not speak."""

    def __init__(self, name: str, level: int) -> None:
        super().__init__(f"protocol {name!r} level {level}")
        self.name = name
        self.level = level


def parse_connect(body: bytes) -> ConnectRequest:
    """Parse the body of a CONNECT packet.

    Raises:
        UnsupportedProtocolError: for any protocol name and level pair other than
            MQTT 3.1.1 and MQTT 3.1. The rest of the packet is not parsed then,
            because MQTT 5 adds fields.
        ProtocolError: when the packet is malformed.
    """
    fields = _FieldReader(body)
    protocol = (fields.string("protocol name"), fields.uint8("protocol level"))
    if protocol not in (MQTT_311, MQTT_31):
        raise UnsupportedProtocolError(*protocol)

    flags = fields.uint8("connect flags")
    if flags & 0x01:
        raise ProtocolError("reserved bit of the connect flags is set")
    has_will = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    has_password = bool(flags & 0x40)
    has_username = bool(flags & 0x80)
    if not has_will and (will_qos or will_retain):
        raise ProtocolError("will QoS or will retain set without the will flag")
    if will_qos == 3:
        raise ProtocolError("will QoS 3 is invalid")
    if has_password and not has_username:
        raise ProtocolError("password flag set without the user name flag")

    keepalive = fields.uint16("keepalive")
    client_id = fields.string("client identifier")
    will = None
    if has_will:
        will_topic = fields.string("will topic")
        validate_topic_name(will_topic)
        will = Message(will_topic, fields.binary("will message"), will_qos, will_retain)
    username = fields.string("user name") if has_username else None
    password = fields.binary("password") if has_password else None
    if not fields.at_end:
        raise ProtocolError("CONNECT packet has bytes after its last field")
    return ConnectRequest(
        protocol, client_id, bool(flags & 0x02), keepalive, will, username, password
    )


# Sessions


@dataclass
class _Delivery:
    """A message queued or in flight to one session.

    ``awaiting`` is the acknowledgement the broker waits for once the message
    is in flight: PUBACK for QoS 1, PUBREC and then PUBCOMP for QoS 2.
    """

    message: Message
    qos: int
    retain: bool
    packet_id: int = 0
    awaiting: PacketType | None = None


class Session:
    """The state of one client id: subscriptions, queued and in-flight messages.

    A clean session ends with its connection. A persistent one (clean session
    0) stays in memory until a client connects with the same id and clean
    session 1, or the broker stops. While it is offline it queues QoS 1 and 2
    messages and drops QoS 0 ones.
    """

    def __init__(self, client_id: str, clean_session: bool, max_queued: int) -> None:
        """Create an empty session."""
        self.client_id = client_id
        self.clean_session = clean_session
        self.max_queued = max_queued
        self.subscriptions: dict[str, int] = {}
        self.queue: deque[_Delivery] = deque()
        # Insertion order is send order, which a resend after a reconnect keeps.
        self.inflight: dict[int, _Delivery] = {}
        # Packet ids of received QoS 2 messages whose PUBREL has not arrived yet.
        self.awaiting_pubrel: set[int] = set()
        self.connection: _Connection | None = None
        self.dropped = 0
        self._next_packet_id = 1

    def subscription_qos(self, topic: str) -> int | None:
        """Return the highest QoS granted to a filter matching ``topic``, or None."""
        granted = [
            qos for pattern, qos in self.subscriptions.items() if topic_matches(pattern, topic)
        ]
        return max(granted) if granted else None

    def enqueue(self, message: Message, qos: int, retain: bool) -> None:
        """Queue ``message`` for delivery at ``qos`` with the RETAIN flag ``retain``."""
        if self.connection is None and qos == 0:
            return
        if len(self.queue) >= self.max_queued:
            self.dropped += 1
            if self.dropped % DROP_LOG_INTERVAL == 1:
                _LOGGER.warning(
                    "client %s: queue full with %s messages, dropped a message on %s "
                    "(%s dropped so far)",
                    self.client_id,
                    len(self.queue),
                    message.topic,
                    self.dropped,
                )
            return
        self.queue.append(_Delivery(message, qos, retain))
        if self.connection is not None:
            self.connection.wake()

    def allocate_packet_id(self) -> int:
        """Return a packet id that no in-flight message of this session uses."""
        while True:
            packet_id = self._next_packet_id
            self._next_packet_id = packet_id % MAX_PACKET_ID + 1
            if packet_id not in self.inflight:
                return packet_id


# Connections


class _Connection:
    """One client's TCP connection, from its CONNECT to its close.

    The reading task handles incoming packets and writes their
    acknowledgements. A second task sends the session's queued messages, so
    a slow reader fills only its own queue.
    """

    def __init__(
        self, broker: EmbeddedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.broker = broker
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.client_id: str | None = None
        self.session: Session | None = None
        self.will: Message | None = None
        self.keepalive = 0
        self.taken_over = False
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        """Client id and address for log messages."""
        if self.client_id is None:
            return f"client at {self.peer}"
        return f"client {self.client_id} ({self.peer})"

    def wake(self) -> None:
        """Tell the sending task that the session has messages to send."""
        self._wake.set()

    def write(self, data: bytes) -> None:
        """Write ``data`` unless the connection is closing."""
        if not self.writer.is_closing():
            self.writer.write(data)

    def take_over(self) -> None:
        """Close this connection because a new connection uses its client id.

        The sending task is cancelled before the new connection starts its
        own, so the two never take messages from the same session at once.
        """
        self.taken_over = True
        if self._sender is not None:
            self._sender.cancel()
        self.writer.transport.abort()

    async def run(self) -> None:
        """Serve the connection until the client disconnects or breaks the protocol."""
        publish_will = True
        try:
            if not await self._accept_connect():
                return
            self._sender = asyncio.create_task(self._send_queued())
            await self._read_packets()
            publish_will = False
        except ProtocolError as err:
            _LOGGER.warning("closing the connection of %s: %s", self.label, err)
        except _KeepaliveExpired:
            _LOGGER.info(
                "closing the connection of %s: no packet within %.1f s (keepalive %s s)",
                self.label,
                self.keepalive * KEEPALIVE_FACTOR,
                self.keepalive,
            )
        except asyncio.IncompleteReadError:
            if self.session is None:
                # Port probes such as process.port_is_open connect and close at once.
                _LOGGER.debug("%s closed the connection before CONNECT", self.label)
            elif not self.taken_over:
                _LOGGER.info("%s closed the connection without DISCONNECT", self.label)
        except OSError as err:
            _LOGGER.info("connection of %s failed: %s", self.label, err)
        except Exception:
            # A bug in the broker must cost one connection, never the listener.
            _LOGGER.exception("unexpected error on the connection of %s, closing it", self.label)
        finally:
            if self._sender is not None:
                self._sender.cancel()
            self.broker.detach(self, publish_will=publish_will and not self.taken_over)
            await self._close()

    async def _close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.writer.wait_closed()
        except (TimeoutError, OSError):
            self.writer.transport.abort()

    async def _read(self, timeout: float | None) -> tuple[int, int, bytes]:
        async with asyncio.timeout(timeout):
            return await read_packet(self.reader, self.broker.max_packet_size)

    async def _accept_connect(self) -> bool:
        """Read the CONNECT packet, send the CONNACK and return whether the client was accepted."""
        try:
            packet_type, flags, body = await self._read(self.broker.connect_timeout)
        except TimeoutError:
            _LOGGER.info(
                "closing the connection of %s: no CONNECT within %.0f s",
                self.label,
                self.broker.connect_timeout,
            )
            return False
        if packet_type != PacketType.CONNECT:
            raise ProtocolError(f"first packet has type {packet_type}, expected CONNECT")
        if flags:
            raise ProtocolError("CONNECT has header flags set")
        try:
            request = parse_connect(body)
        except UnsupportedProtocolError as err:
            if err.name in (MQTT_311[0], MQTT_31[0]):
                _LOGGER.warning(
                    "rejecting %s: MQTT protocol level %s is not supported, "
                    "only 3.1.1 (level 4) and 3.1 (level 3)",
                    self.label,
                    err.level,
                )
                self._write_connack(False, ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION)
            else:
                _LOGGER.warning(
                    "closing the connection of %s: unknown protocol name %r", self.label, err.name
                )
            return False

        client_id = request.client_id
        if not client_id:
            if not request.clean_session:
                _LOGGER.warning(
                    "rejecting %s: an empty client id requires clean session 1", self.label
                )
                self._write_connack(False, ConnackCode.IDENTIFIER_REJECTED)
                return False
            client_id = f"auto-{secrets.token_hex(8)}"
        self.client_id = client_id

        code = self.broker.check_credentials(request.username, request.password)
        if code != ConnackCode.ACCEPTED:
            _LOGGER.warning(
                "rejecting %s: %s (user name %r)",
                self.label,
                code.name.lower().replace("_", " "),
                request.username,
            )
            self._write_connack(False, code)
            return False

        self.keepalive = request.keepalive
        self.will = request.will
        self.session, session_present = self.broker.attach(self, client_id, request.clean_session)
        # MQTT 3.1 reserves the byte that carries the session present flag in 3.1.1.
        self._write_connack(session_present and request.protocol == MQTT_311, ConnackCode.ACCEPTED)
        _LOGGER.info(
            "%s connected: MQTT %s, clean session %s, keepalive %s s%s",
            self.label,
            "3.1.1" if request.protocol == MQTT_311 else "3.1",
            int(request.clean_session),
            request.keepalive,
            ", session resumed" if session_present else "",
        )
        self._resend_inflight()
        return True

    def _write_connack(self, session_present: bool, code: ConnackCode) -> None:
        self.write(_packet(PacketType.CONNACK, bytes([int(session_present), code])))

    def _resend_inflight(self) -> None:
        """Resend the unacknowledged PUBLISH and PUBREL packets of a resumed session."""
        assert self.session is not None
        for delivery in self.session.inflight.values():
            if delivery.awaiting == PacketType.PUBCOMP:
                self.write(_packet_id_packet(PacketType.PUBREL, delivery.packet_id))
            else:
                self._write_publish(delivery, dup=True)
        if self.session.queue:
            self.wake()

    def _write_publish(self, delivery: _Delivery, dup: bool = False) -> None:
        message = delivery.message
        self.write(
            encode_publish(
                message.topic,
                message.payload,
                delivery.qos,
                delivery.retain,
                dup,
                delivery.packet_id,
            )
        )

    async def _send_queued(self) -> None:
        """Send the session's queued messages until cancelled.

        A write error aborts the transport, which ends the reading task too.
        """
        try:
            await self._send_queued_until_error()
        except OSError as err:
            _LOGGER.info("sending to %s failed: %s", self.label, err)
            self.writer.transport.abort()
        except Exception:
            _LOGGER.exception("unexpected error while sending to %s, closing it", self.label)
            self.writer.transport.abort()

    async def _send_queued_until_error(self) -> None:
        """Send queued messages while fewer than ``max_inflight`` await acknowledgement."""
        session = self.session
        assert session is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while session.queue and len(session.inflight) < self.broker.max_inflight:
                delivery = session.queue.popleft()
                if delivery.qos:
                    delivery.packet_id = session.allocate_packet_id()
                    delivery.awaiting = (
                        PacketType.PUBACK if delivery.qos == 1 else PacketType.PUBREC
                    )
                    session.inflight[delivery.packet_id] = delivery
                self._write_publish(delivery)
                await self.writer.drain()

    async def _read_packets(self) -> None:
        """Handle packets until DISCONNECT.

        Raises:
            _KeepaliveExpired: when the client stays silent too long.
        """
        timeout = self.keepalive * KEEPALIVE_FACTOR if self.keepalive else None
        while True:
            try:
                packet_type, flags, body = await self._read(timeout)
            except TimeoutError as err:
                raise _KeepaliveExpired from err
            if packet_type == PacketType.DISCONNECT:
                _check_fixed_header(PacketType.DISCONNECT, flags, body, 0)
                _LOGGER.info("%s disconnected", self.label)
                return
            self._handle(packet_type, flags, body)
            # Waiting for the output buffer stops reading from a client that
            # sends requests without reading the responses.
            await self.writer.drain()

    def _handle(self, packet_type: int, flags: int, body: bytes) -> None:
        session = self.session
        assert session is not None
        if packet_type == PacketType.PUBLISH:
            self._handle_publish(session, flags, body)
        elif packet_type == PacketType.PUBACK:
            _check_fixed_header(PacketType.PUBACK, flags, body, 2)
            self._acknowledge(session, PacketType.PUBACK, int.from_bytes(body, "big"))
        elif packet_type == PacketType.PUBREC:
            _check_fixed_header(PacketType.PUBREC, flags, body, 2)
            self._acknowledge(session, PacketType.PUBREC, int.from_bytes(body, "big"))
        elif packet_type == PacketType.PUBCOMP:
            _check_fixed_header(PacketType.PUBCOMP, flags, body, 2)
            self._acknowledge(session, PacketType.PUBCOMP, int.from_bytes(body, "big"))
        elif packet_type == PacketType.PUBREL:
            _check_fixed_header(PacketType.PUBREL, flags, body, 2)
            packet_id = int.from_bytes(body, "big")
            session.awaiting_pubrel.discard(packet_id)
            self.write(_packet_id_packet(PacketType.PUBCOMP, packet_id))
        elif packet_type == PacketType.SUBSCRIBE:
            _check_fixed_header(PacketType.SUBSCRIBE, flags, body, None)
            self._handle_subscribe(session, body)
        elif packet_type == PacketType.UNSUBSCRIBE:
            _check_fixed_header(PacketType.UNSUBSCRIBE, flags, body, None)
            self._handle_unsubscribe(session, body)
        elif packet_type == PacketType.PINGREQ:
            _check_fixed_header(PacketType.PINGREQ, flags, body, 0)
            self.write(_packet(PacketType.PINGRESP))
        elif packet_type == PacketType.CONNECT:
            raise ProtocolError("second CONNECT on one connection")
        elif packet_type in _SERVER_PACKETS:
            raise ProtocolError(f"{PacketType(packet_type).name} may only be sent by a server")
        else:
            raise ProtocolError(f"reserved packet type {packet_type}")

    def _handle_publish(self, session: Session, flags: int, body: bytes) -> None:
        dup = bool(flags & 0x08)
        qos = (flags >> 1) & 0x03
        retain = bool(flags & 0x01)
        if qos == 3:
            raise ProtocolError("PUBLISH with QoS 3")
        if dup and qos == 0:
            raise ProtocolError("PUBLISH with QoS 0 has the DUP flag set")
        fields = _FieldReader(body)
        topic = fields.string("topic name")
        validate_topic_name(topic)
        packet_id = _read_packet_id(fields) if qos else 0
        message = Message(topic, fields.rest(), qos, retain)

        if qos == 0:
            self.broker.publish(message)
        elif qos == 1:
            self.broker.publish(message)
            self.write(_packet_id_packet(PacketType.PUBACK, packet_id))
        else:
            # Deliver on the first PUBLISH and remember its id until PUBREL, so a
            # resent PUBLISH with the same id is not delivered twice.
            if packet_id not in session.awaiting_pubrel:
                self.broker.publish(message)
                session.awaiting_pubrel.add(packet_id)
            self.write(_packet_id_packet(PacketType.PUBREC, packet_id))

    def _acknowledge(self, session: Session, packet_type: PacketType, packet_id: int) -> None:
        delivery = session.inflight.get(packet_id)
        if delivery is None or delivery.awaiting != packet_type:
            _LOGGER.debug(
                "%s sent %s for packet id %s, which awaits no such acknowledgement",
                self.label,
                packet_type.name,
                packet_id,
            )
            return
        if packet_type == PacketType.PUBREC:
            delivery.awaiting = PacketType.PUBCOMP
            self.write(_packet_id_packet(PacketType.PUBREL, packet_id))
            return
        del session.inflight[packet_id]
        self.wake()

    def _handle_subscribe(self, session: Session, body: bytes) -> None:
        fields = _FieldReader(body)
        packet_id = _read_packet_id(fields)
        requests: dict[str, int] = {}
        while not fields.at_end:
            topic_filter = fields.string("topic filter")
            options = fields.uint8("requested QoS")
            if options > 2:
                raise ProtocolError(
                    f"invalid requested QoS byte {options:#04x} for {topic_filter!r}"
                )
            validate_topic_filter(topic_filter)
            requests[topic_filter] = options
        if not requests:
            raise ProtocolError("SUBSCRIBE without a topic filter")

        # Every requested QoS is granted, because the broker supports all three.
        session.subscriptions.update(requests)
        self.write(
            _packet(PacketType.SUBACK, packet_id.to_bytes(2, "big") + bytes(requests.values()))
        )
        _LOGGER.debug("%s subscribed to %s", self.label, requests)
        self.broker.send_retained(session, requests)

    def _handle_unsubscribe(self, session: Session, body: bytes) -> None:
        fields = _FieldReader(body)
        packet_id = _read_packet_id(fields)
        filters = []
        while not fields.at_end:
            topic_filter = fields.string("topic filter")
            validate_topic_filter(topic_filter)
            filters.append(topic_filter)
        if not filters:
            raise ProtocolError("UNSUBSCRIBE without a topic filter")
        for topic_filter in filters:
            session.subscriptions.pop(topic_filter, None)
        self.write(_packet_id_packet(PacketType.UNSUBACK, packet_id))
        _LOGGER.debug("%s unsubscribed from %s", self.label, filters)


# The broker


class EmbeddedBroker:
    """An MQTT 3.1.1 broker that listens on one TCP address.

    ``passwords`` maps user names to passwords. When it is given, clients must
    present one of its pairs, otherwise any client is accepted. ``port`` 0
    picks a free port, which ``port`` returns after ``start``.
    """

    def __init__(
        self,
        host: str = LOOPBACK,
        port: int = 0,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        passwords: Mapping[str, str] | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        max_queued: int = DEFAULT_MAX_QUEUED,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        """Store the settings. Nothing listens until ``start``.

        Raises:
            ValueError: when a limit is out of range.
        """
        if max_packet_size < 2:
            raise ValueError(f"max_packet_size must be at least 2 bytes, got {max_packet_size}")
        if not 1 <= max_inflight < MAX_PACKET_ID:
            raise ValueError(
                f"max_inflight must be from 1 to {MAX_PACKET_ID - 1}, got {max_inflight}"
            )
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {max_queued}")
        self.host = host
        self._requested_port = port
        self.max_packet_size = max_packet_size
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.connect_timeout = connect_timeout
        self._passwords = dict(passwords) if passwords is not None else None
        self._server: asyncio.Server | None = None
        self._sessions: dict[str, Session] = {}
        self._retained: dict[str, Message] = {}
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._stopping = False

    @property
    def port(self) -> int:
        """The TCP port the broker listens on.

        Raises:
            RuntimeError: before ``start``.
        """
        if self._server is None:
            raise RuntimeError("the broker is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def retained_topics(self) -> list[str]:
        """Topics that have a retained message."""
        return list(self._retained)

    @property
    def session_ids(self) -> list[str]:
        """Client ids of the sessions in memory, connected or not."""
        return list(self._sessions)

    async def start(self) -> None:
        """Start listening.

        Raises:
            OSError: when the address cannot be bound, for example because the
                port is in use.
        """
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self._requested_port
        )
        _LOGGER.info(
            "embedded MQTT broker listening on %s:%s (maximum packet size %s bytes)",
            self.host,
            self.port,
            self.max_packet_size,
        )

    async def stop(self) -> None:
        """Close the listener and every connection. Wills are not published then."""
        if self._server is None:
            return
        self._stopping = True
        port = self.port
        self._server.close()
        # Aborting drops unsent output, so no connection waits for a client to read.
        for connection in self._connections.values():
            connection.writer.transport.abort()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        _LOGGER.info("embedded MQTT broker on %s:%s stopped", self.host, port)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        connection = _Connection(self, reader, writer)
        self._connections[task] = connection
        try:
            await connection.run()
        finally:
            del self._connections[task]

    def check_credentials(self, username: str | None, password: bytes | None) -> ConnackCode:
        """Return the CONNACK code for a client's user name and password."""
        if self._passwords is None:
            return ConnackCode.ACCEPTED
        if username is None:
            return ConnackCode.NOT_AUTHORIZED
        expected = self._passwords.get(username)
        if expected is None or password is None:
            return ConnackCode.BAD_USERNAME_OR_PASSWORD
        if not hmac.compare_digest(expected.encode("utf-8"), password):
            return ConnackCode.BAD_USERNAME_OR_PASSWORD
        return ConnackCode.ACCEPTED

    def attach(
        self, connection: _Connection, client_id: str, clean_session: bool
    ) -> tuple[Session, bool]:
        """Give ``connection`` the session of ``client_id`` and return it and whether it existed.

        A connection that still uses the client id is closed first, as MQTT
        3.1.1 requires. Its will is not published, because the client has just
        connected again. Clean session 1 discards a stored session and clean
        session 0 resumes it.
        """
        session = self._sessions.get(client_id)
        if session is not None and session.connection is not None:
            _LOGGER.info(
                "client %s connected again from %s, closing its connection from %s",
                client_id,
                connection.peer,
                session.connection.peer,
            )
            session.connection.take_over()
            session.connection = None
        if session is not None and (clean_session or session.clean_session):
            session = None
        session_present = session is not None
        if session is None:
            session = Session(client_id, clean_session, self.max_queued)
            self._sessions[client_id] = session
        session.connection = connection
        return session, session_present

    def detach(self, connection: _Connection, publish_will: bool) -> None:
        """Release the session of a closed connection and publish its will if asked to."""
        session = connection.session
        if session is None or session.connection is not connection:
            return
        session.connection = None
        if session.clean_session and self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]
        if publish_will and connection.will is not None and not self._stopping:
            _LOGGER.info("publishing the will of %s on %s", connection.label, connection.will.topic)
            self.publish(connection.will)

    def publish(self, message: Message) -> None:
        """Retain ``message`` if its RETAIN flag is set and forward it to the matching sessions.

        A retained message with an empty payload deletes the topic's retained
        message and is forwarded like any other message.
        """
        if message.retain:
            if message.payload:
                self._retained[message.topic] = message
            else:
                self._retained.pop(message.topic, None)
        for session in self._sessions.values():
            granted = session.subscription_qos(message.topic)
            if granted is not None:
                # Forwarded messages carry RETAIN 0 [MQTT-3.3.1-9].
                session.enqueue(message, min(granted, message.qos), retain=False)

    def send_retained(self, session: Session, filters: Mapping[str, int]) -> None:
        """Queue the retained messages that match ``filters``, each once, with RETAIN 1.

        Only the filters of the current SUBSCRIBE count. A message that matches
        several of them goes out at the highest granted QoS.
        """
        for topic, message in self._retained.items():
            granted = [qos for pattern, qos in filters.items() if topic_matches(pattern, topic)]
            if granted:
                session.enqueue(message, min(max(granted), message.qos), retain=True)


class BrokerThread:
    """An ``EmbeddedBroker`` on its own event loop in a daemon thread, for synchronous code."""

    def __init__(self, broker: EmbeddedBroker, name: str = "embedded-mqtt-broker") -> None:
        """Wrap ``broker``. ``start`` starts the thread and the broker."""
        self.broker = broker
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the thread and wait until the broker listens.

        Raises:
            OSError: when the broker cannot bind its address.
            TimeoutError: when it does not listen within ``timeout`` seconds.
        """
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"embedded broker did not start within {timeout:.0f} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise self._error

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker and wait for the thread to end."""
        if self._loop is not None and self._stop_event is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout)

    def call(self, function: Callable[..., T], *args: object, timeout: float = 10.0) -> T:
        """Run ``function(*args)`` on the broker's event loop and return its result.

        Raises:
            RuntimeError: when the broker thread is not running.
        """
        if self._loop is None or not self._thread.is_alive():
            raise RuntimeError("the broker thread is not running")

        async def call_on_loop() -> T:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(call_on_loop(), self._loop).result(timeout)

    def __enter__(self) -> BrokerThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await self.broker.start()
        except Exception as err:
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        await self._stop_event.wait()
        await self.broker.stop()


# Command line


def read_password_file(path: Path) -> dict[str, str]:
    """Read ``username:password`` lines. Blank lines and lines starting with ``#`` are skipped.

    Raises:
        ValueError: on a line without a colon or with an empty user name.
    """
    passwords = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        username, colon, password = line.partition(":")
        if not colon or not username:
            raise ValueError(f"{path}:{number}: expected username:password")
        passwords[username] = password
    return passwords


async def serve(broker: EmbeddedBroker) -> None:
    """Run ``broker`` until SIGTERM or SIGINT."""
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.stop()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the broker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host", default=LOOPBACK, help="address to listen on (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument(
        "--max-packet-size",
        type=int,
        default=DEFAULT_MAX_PACKET_SIZE,
        help="largest packet accepted, in bytes, header included (default: %(default)s)",
    )
    parser.add_argument(
        "--password-file",
        type=Path,
        help="file of username:password lines. Without it any client may connect",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="logging level (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    passwords = None
    if args.password_file is not None:
        try:
            passwords = read_password_file(args.password_file)
        except (OSError, ValueError) as err:
            _LOGGER.error("cannot read the password file: %s", err)
            return 2
    try:
        broker = EmbeddedBroker(
            args.host, args.port, max_packet_size=args.max_packet_size, passwords=passwords
        )
    except ValueError as err:
        _LOGGER.error("invalid setting: %s", err)
        return 2
    try:
        asyncio.run(serve(broker))
    except OSError as err:
        _LOGGER.error("cannot listen on %s:%s: %s", args.host, args.port, err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
