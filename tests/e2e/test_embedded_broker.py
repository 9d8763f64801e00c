"""The embedded MQTT broker against real paho-mqtt clients, raw sockets and an edge node.

Most tests run the broker in a background thread of the test process, so they
can read its log records. The last ones start it as a child process through
``start_broker``, the way the demo does.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fltrust_core.security import generate_federation_key
from fltrust_lab import EDGE_BIN, LOOPBACK
from fltrust_lab.broker import BrokerError, start_broker
from fltrust_lab.datasets import write_nab_slice
from fltrust_lab.embedded_broker import (
    DEFAULT_MAX_PACKET_SIZE,
    BrokerThread,
    EmbeddedBroker,
    ProtocolError,
    read_password_file,
    topic_matches,
    validate_topic_filter,
)
from fltrust_lab.mqtt_capture import MqttCapture
from fltrust_lab.nodes import DeviceSpec, EdgeNodeProcess, NodeSpec, node_config

from .conftest import allow_loopback_sockets

BROKER_LOGGER = "fltrust_lab.embedded_broker"
TIMEOUT = 5.0


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass. Return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def broker_thread() -> Iterator[BrokerThread]:
    """An embedded broker with default settings on a free loopback port."""
    allow_loopback_sockets()
    thread = BrokerThread(EmbeddedBroker(LOOPBACK, 0))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
def broker_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Log records of the broker at INFO and above."""
    caplog.set_level(logging.INFO, logger=BROKER_LOGGER)
    return caplog


def broker_messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == BROKER_LOGGER and record.levelno >= level
    ]


# paho clients


class Client:
    """A paho-mqtt 3.1.1 client that records received messages and disconnects."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        clean_session: bool = True,
        protocol: int = mqtt.MQTTv311,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        kwargs = {} if protocol == mqtt.MQTTv5 else {"clean_session": clean_session}
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.port = port
        self.messages: list[mqtt.MQTTMessage] = []
        self.connect_results: list[tuple[object, object]] = []
        self.disconnects: list[object] = []
        self._condition = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        with self._condition:
            self.connect_results.append((flags, reason))
            self._condition.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        with self._condition:
            self.disconnects.append(reason)
            self._condition.notify_all()

    def _on_message(self, client, userdata, message) -> None:
        with self._condition:
            self.messages.append(message)
            self._condition.notify_all()

    def connect(self, keepalive: int = 60) -> tuple[object, object]:
        """Connect, wait for the CONNACK and return paho's connect flags and reason code."""
        self.client.connect(LOOPBACK, self.port, keepalive)
        self.client.loop_start()
        with self._condition:
            assert self._condition.wait_for(lambda: self.connect_results, TIMEOUT), "no CONNACK"
            return self.connect_results[-1]

    def subscribe(self, *filters: tuple[str, int]) -> list[int]:
        """Subscribe and return the granted QoS values from the SUBACK."""
        granted: list[int] = []
        done = threading.Event()

        def on_subscribe(client, userdata, mid, reasons, properties) -> None:
            granted.extend(reason.value for reason in reasons)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe(list(filters))
        assert done.wait(TIMEOUT), f"no SUBACK for {filters}"
        return granted

    def unsubscribe(self, topic_filter: str) -> None:
        done = threading.Event()
        self.client.on_unsubscribe = lambda *args: done.set()
        self.client.unsubscribe(topic_filter)
        assert done.wait(TIMEOUT), f"no UNSUBACK for {topic_filter}"

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"publish on {topic} not acknowledged"

    def wait_for_messages(self, count: int, timeout: float = TIMEOUT) -> list[mqtt.MQTTMessage]:
        with self._condition:
            self._condition.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def received(self) -> list[tuple[str, bytes, int, bool]]:
        """Return topic, payload, QoS and RETAIN flag of each received message."""
        with self._condition:
            return [(m.topic, bytes(m.payload), m.qos, bool(m.retain)) for m in self.messages]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(broker_thread: BrokerThread) -> Iterator[Callable[..., Client]]:
    """Factory of paho clients of the broker, all stopped after the test."""
    created: list[Client] = []

    def make(client_id: str, **kwargs: object) -> Client:
        client = Client(broker_thread.broker.port, client_id, **kwargs)
        created.append(client)
        return client

    yield make
    for client in created:
        client.stop()


def connected(make: Callable[..., Client], client_id: str, **kwargs: object) -> Client:
    client = make(client_id, **kwargs)
    _, reason = client.connect()
    assert not reason.is_failure, f"{client_id} was refused: {reason}"
    return client


# Raw MQTT packets, written out by hand so they do not share the broker's encoder.


def mqtt_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def packet(first_byte: int, body: bytes) -> bytes:
    assert len(body) < 128, "the test helper encodes one-byte remaining lengths only"
    return bytes([first_byte, len(body)]) + body


def connect_packet(
    client_id: str,
    keepalive: int = 60,
    will: tuple[str, bytes] | None = None,
    protocol: tuple[str, int] = ("MQTT", 4),
    flags: int = 0x02,
) -> bytes:
    body = mqtt_string(protocol[0]) + bytes([protocol[1]])
    if will is not None:
        flags |= 0x04
    body += bytes([flags]) + keepalive.to_bytes(2, "big") + mqtt_string(client_id)
    if will is not None:
        body += mqtt_string(will[0]) + mqtt_string(will[1])
    return packet(0x10, body)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def is_closed_by_peer(sock: socket.socket, timeout: float = TIMEOUT) -> bool:
    """Return whether the peer closes ``sock`` within ``timeout``, skipping any bytes it sends."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1024):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def raw_connect(port: int, client_id: str, **kwargs: object) -> socket.socket:
    """Open a socket, send CONNECT and check that the CONNACK accepts it."""
    sock = socket.create_connection((LOOPBACK, port), timeout=TIMEOUT)
    sock.sendall(connect_packet(client_id, **kwargs))
    assert read_exactly(sock, 4) == b"\x20\x02\x00\x00"
    return sock


# Topic matching


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+/c", "a/b/c", True),
        ("+/+", "/x", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("#", "$SYS/uptime", False),
        ("+/uptime", "$SYS/uptime", False),
        ("$SYS/#", "$SYS/uptime", True),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize("topic_filter", ["", "a/#/b", "a#", "a/b+", "+a", "##"])
def test_invalid_topic_filter(topic_filter: str) -> None:
    with pytest.raises(ProtocolError):
        validate_topic_filter(topic_filter)


# Publish and subscribe


def test_qos0_and_qos1_delivery(clients: Callable[..., Client]) -> None:
    at_qos1 = connected(clients, "sub-qos1")
    at_qos0 = connected(clients, "sub-qos0")
    publisher = connected(clients, "pub")
    assert at_qos1.subscribe(("q/t", 1)) == [1]
    assert at_qos0.subscribe(("q/t", 0)) == [0]

    publisher.publish("q/t", b"zero", qos=0)
    publisher.publish("q/t", b"one", qos=1)
    at_qos1.wait_for_messages(2)
    at_qos0.wait_for_messages(2)

    assert at_qos1.received() == [("q/t", b"zero", 0, False), ("q/t", b"one", 1, False)]
    assert at_qos0.received() == [("q/t", b"zero", 0, False), ("q/t", b"one", 0, False)]


def test_qos2_delivered_once(clients: Callable[..., Client]) -> None:
    subscriber = connected(clients, "sub-qos2")
    publisher = connected(clients, "pub-qos2")
    assert subscriber.subscribe(("q2/t", 2)) == [2]

    for index in range(5):
        publisher.publish("q2/t", f"m{index}".encode(), qos=2)
    subscriber.wait_for_messages(5)
    time.sleep(0.3)

    assert subscriber.received() == [("q2/t", f"m{i}".encode(), 2, False) for i in range(5)]


def test_wildcard_subscriptions(clients: Callable[..., Client]) -> None:
    plus = connected(clients, "sub-plus")
    hash_sub = connected(clients, "sub-hash")
    everything = connected(clients, "sub-all")
    dollar = connected(clients, "sub-dollar")
    publisher = connected(clients, "pub-wild")
    plus.subscribe(("lab/+/update", 1))
    hash_sub.subscribe(("lab/#", 1))
    everything.subscribe(("#", 1))
    dollar.subscribe(("$lab/#", 1))

    for topic in ("lab/n1/update", "lab/n1/heartbeat", "lab", "$lab/x", "other/n1/update"):
        publisher.publish(topic, topic.encode(), qos=1)
    everything.wait_for_messages(4)
    dollar.wait_for_messages(1)
    time.sleep(0.3)

    assert [t for t, *_ in plus.received()] == ["lab/n1/update"]
    assert [t for t, *_ in hash_sub.received()] == ["lab/n1/update", "lab/n1/heartbeat", "lab"]
    # A filter starting with a wildcard does not match a topic starting with $.
    assert [t for t, *_ in everything.received()] == [
        "lab/n1/update",
        "lab/n1/heartbeat",
        "lab",
        "other/n1/update",
    ]
    assert [t for t, *_ in dollar.received()] == ["$lab/x"]


def test_overlapping_filters_deliver_once(clients: Callable[..., Client]) -> None:
    subscriber = connected(clients, "sub-overlap")
    publisher = connected(clients, "pub-overlap")
    subscriber.subscribe(("o/#", 0), ("o/+", 1))

    publisher.publish("o/t", b"x", qos=1)
    subscriber.wait_for_messages(1)
    time.sleep(0.3)

    assert subscriber.received() == [("o/t", b"x", 1, False)]


def test_unsubscribe_stops_delivery(clients: Callable[..., Client]) -> None:
    subscriber = connected(clients, "sub-unsub")
    publisher = connected(clients, "pub-unsub")
    subscriber.subscribe(("u/t", 1))
    publisher.publish("u/t", b"before", qos=1)
    subscriber.wait_for_messages(1)

    subscriber.unsubscribe("u/t")
    publisher.publish("u/t", b"after", qos=1)
    time.sleep(0.3)

    assert subscriber.received() == [("u/t", b"before", 1, False)]


# Retained messages


def test_retained_only_for_own_filter(clients: Callable[..., Client]) -> None:
    publisher = connected(clients, "pub-retained")
    bystander = connected(clients, "bystander")
    bystander.subscribe(("other/#", 1))
    publisher.publish("lab/coordinator/model", b"model", qos=1, retain=True)
    publisher.publish("other/coordinator/model", b"elsewhere", qos=1, retain=True)
    bystander.wait_for_messages(1)

    subscriber = connected(clients, "sub-retained")
    subscriber.subscribe(("lab/#", 1))
    subscriber.wait_for_messages(1)
    publisher.publish("lab/node/n1/update", b"update", qos=1)
    subscriber.wait_for_messages(2)
    time.sleep(0.3)

    assert subscriber.received() == [
        ("lab/coordinator/model", b"model", 1, True),
        ("lab/node/n1/update", b"update", 1, False),
    ]
    # The bystander got the message live, so its RETAIN flag is 0.
    assert bystander.received() == [("other/coordinator/model", b"elsewhere", 1, False)]


def test_retained_replace_and_delete(
    clients: Callable[..., Client], broker_thread: BrokerThread
) -> None:
    publisher = connected(clients, "pub-replace")
    publisher.publish("r/a", b"first", qos=1, retain=True)
    publisher.publish("r/a", b"second", qos=0, retain=True)
    publisher.publish("r/b", b"to delete", qos=1, retain=True)
    publisher.publish("r/b", b"", qos=1, retain=True)

    subscriber = connected(clients, "sub-replace")
    subscriber.subscribe(("r/#", 1))
    subscriber.wait_for_messages(1)
    time.sleep(0.3)

    # Retained messages go out at the QoS they were published with, at most the granted one.
    assert subscriber.received() == [("r/a", b"second", 0, True)]
    assert broker_thread.call(lambda: broker_thread.broker.retained_topics) == ["r/a"]


def test_retained_resent_on_resubscribe(clients: Callable[..., Client]) -> None:
    publisher = connected(clients, "pub-resub")
    publisher.publish("rs/t", b"kept", qos=1, retain=True)
    subscriber = connected(clients, "sub-resub")

    subscriber.subscribe(("rs/t", 1))
    subscriber.wait_for_messages(1)
    subscriber.subscribe(("rs/t", 1))
    subscriber.wait_for_messages(2)

    assert subscriber.received() == [("rs/t", b"kept", 1, True)] * 2


# Will, sessions and takeover


def test_will_on_abnormal_disconnect(
    clients: Callable[..., Client], broker_thread: BrokerThread
) -> None:
    watcher = connected(clients, "will-watcher")
    watcher.subscribe(("status/#", 1))
    port = broker_thread.broker.port

    clean = raw_connect(port, "polite", will=("status/polite", b"gone"))
    clean.sendall(b"\xe0\x00")
    assert is_closed_by_peer(clean)
    clean.close()
    dying = raw_connect(port, "dying", will=("status/dying", b"gone"))
    dying.close()
    watcher.wait_for_messages(1)
    time.sleep(0.3)

    assert watcher.received() == [("status/dying", b"gone", 0, False)]


def test_session_takeover(
    clients: Callable[..., Client], broker_thread: BrokerThread, broker_log
) -> None:
    watcher = connected(clients, "takeover-watcher")
    watcher.subscribe(("status/#", 1))
    old = raw_connect(broker_thread.broker.port, "same-id", will=("status/same-id", b"gone"))

    new = connected(clients, "same-id")
    new.subscribe(("t/takeover", 1))
    watcher.publish("t/takeover", b"to the new connection", qos=1)
    new.wait_for_messages(1)
    time.sleep(0.3)

    assert is_closed_by_peer(old)
    old.close()
    assert new.received() == [("t/takeover", b"to the new connection", 1, False)]
    # The old connection's will is not published, because the client is still there.
    assert watcher.received() == []
    assert any("connected again" in m for m in broker_messages(broker_log))


def test_persistent_session_resumed(clients: Callable[..., Client]) -> None:
    publisher = connected(clients, "pub-persistent")
    first = connected(clients, "persistent", clean_session=False)
    first.subscribe(("p/t", 1))
    first.stop()
    publisher.publish("p/t", b"while offline", qos=1)
    publisher.publish("p/t", b"qos 0 while offline", qos=0)

    resumed = clients("persistent", clean_session=False)
    flags, reason = resumed.connect()
    resumed.wait_for_messages(1)
    time.sleep(0.3)

    assert not reason.is_failure
    assert flags.session_present
    # Offline sessions keep QoS 1 and 2 messages only.
    assert resumed.received() == [("p/t", b"while offline", 1, False)]

    resumed.stop()
    cleaned = clients("persistent", clean_session=True)
    flags, _ = cleaned.connect()
    publisher.publish("p/t", b"after clean start", qos=1)
    time.sleep(0.3)

    assert not flags.session_present
    assert cleaned.received() == []


def test_clean_session_discarded_on_disconnect(
    clients: Callable[..., Client], broker_thread: BrokerThread
) -> None:
    client = connected(clients, "short-lived")
    client.stop()

    assert wait_until(
        lambda: "short-lived" not in broker_thread.call(lambda: broker_thread.broker.session_ids)
    )


# Connection handling


def test_mqtt5_connect_rejected(
    clients: Callable[..., Client], broker_thread: BrokerThread
) -> None:
    v5 = clients("mqtt5-client", protocol=mqtt.MQTTv5)
    _, reason = v5.connect()

    assert reason.is_failure
    assert str(reason) == "Unsupported protocol version"

    sock = socket.create_connection((LOOPBACK, broker_thread.broker.port), timeout=TIMEOUT)
    with sock:
        sock.sendall(connect_packet("raw-v5", protocol=("MQTT", 5)) + b"\x00")
        assert read_exactly(sock, 4) == b"\x20\x02\x00\x01"
        assert is_closed_by_peer(sock)


def test_mqtt31_client_accepted(clients: Callable[..., Client]) -> None:
    client = clients("mqtt31-client", protocol=mqtt.MQTTv31)
    _, reason = client.connect()
    client.subscribe(("v31/t", 1))
    client.publish("v31/t", b"old protocol", qos=1)
    client.wait_for_messages(1)

    assert not reason.is_failure
    assert client.received() == [("v31/t", b"old protocol", 1, False)]


def test_empty_client_id(broker_thread: BrokerThread) -> None:
    port = broker_thread.broker.port
    with socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as accepted:
        accepted.sendall(connect_packet("", flags=0x02))
        assert read_exactly(accepted, 4) == b"\x20\x02\x00\x00"
    with socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as rejected:
        rejected.sendall(connect_packet("", flags=0x00))
        assert read_exactly(rejected, 4) == b"\x20\x02\x00\x02"
        assert is_closed_by_peer(rejected)


def test_ping(broker_thread: BrokerThread) -> None:
    with raw_connect(broker_thread.broker.port, "pinger") as sock:
        sock.sendall(b"\xc0\x00")
        assert read_exactly(sock, 2) == b"\xd0\x00"


def test_keepalive_timeout(
    clients: Callable[..., Client], broker_thread: BrokerThread, broker_log
) -> None:
    watcher = connected(clients, "keepalive-watcher")
    watcher.subscribe(("status/#", 1))
    port = broker_thread.broker.port

    pinging = raw_connect(port, "pinging", keepalive=1)
    silent = raw_connect(port, "silent", keepalive=1, will=("status/silent", b"timed out"))
    started = time.monotonic()
    silent.settimeout(0.25)
    closed_after = None
    # Ping every 0.25 s for 3 s, twice the silent client's timeout.
    while time.monotonic() - started < 3.0:
        pinging.sendall(b"\xc0\x00")
        assert read_exactly(pinging, 2) == b"\xd0\x00"
        if closed_after is None:
            try:
                if silent.recv(1) == b"":
                    closed_after = time.monotonic() - started
            except TimeoutError:
                pass
        else:
            time.sleep(0.25)
    watcher.wait_for_messages(1)
    silent.close()

    assert closed_after is not None, "the silent client was not disconnected within 3 s"
    # 1.5 times the keepalive of 1 s, with slack for a loaded machine.
    assert 1.4 <= closed_after < 2.5
    assert watcher.received() == [("status/silent", b"timed out", 0, False)]
    assert any("keepalive 1 s" in m for m in broker_messages(broker_log))
    with pinging:
        pinging.sendall(b"\xe0\x00")


VALID_CONNECT = connect_packet("malformed-test")


# Byte sequences that break MQTT 3.1.1, each with a part of the warning it causes.
MALFORMED = [
    (b"\x00\x00", "first packet has type 0"),
    (b"\x30\x00", "first packet has type 3"),
    (connect_packet("x", flags=0x03), "reserved bit"),
    (connect_packet("x", flags=0x42), "password flag"),
    (packet(0x10, connect_packet("x")[2:] + b"\x00"), "bytes after its last field"),
    (packet(0x10, mqtt_string("MQTT") + b"\x04\x02"), "ends inside its keepalive"),
    (VALID_CONNECT + b"\x30\xff\xff\xff\xff\x01", "malformed remaining length"),
    (VALID_CONNECT + VALID_CONNECT, "second CONNECT"),
    (VALID_CONNECT + b"\xf0\x00", "reserved packet type 15"),
    (VALID_CONNECT + b"\x20\x02\x00\x00", "CONNACK may only be sent by a server"),
    (VALID_CONNECT + packet(0x80, b"\x00\x01" + mqtt_string("a") + b"\x00"), "header flags"),
    (VALID_CONNECT + packet(0x82, b"\x00\x01"), "without a topic filter"),
    (VALID_CONNECT + packet(0x82, b"\x00\x01" + mqtt_string("a/#/b") + b"\x00"), "misplaced"),
    (VALID_CONNECT + packet(0x82, b"\x00\x01" + mqtt_string("a") + b"\x03"), "requested QoS"),
    (VALID_CONNECT + packet(0x30, mqtt_string(b"\xff\xfe")), "not valid UTF-8"),
    (VALID_CONNECT + packet(0x30, mqtt_string("a\x00b")), "U+0000"),
    (VALID_CONNECT + packet(0x30, mqtt_string("a/#")), "wildcard"),
    (VALID_CONNECT + packet(0x36, mqtt_string("a") + b"\x00\x01"), "QoS 3"),
    (VALID_CONNECT + packet(0x38, mqtt_string("a")), "DUP flag"),
    (VALID_CONNECT + packet(0x32, mqtt_string("a") + b"\x00\x00"), "packet id 0"),
    (VALID_CONNECT + packet(0x40, b"\x00\x01\x00"), "PUBACK has body length 3, expected 2"),
    (VALID_CONNECT + b"\xe0\x01\x00", "DISCONNECT has body length 1, expected 0"),
    (VALID_CONNECT + b"\x30\xff\xff\xff\x7f", "exceeds the maximum packet size"),
    (connect_packet("x", protocol=("HTTP", 4)), "unknown protocol name"),
    (connect_packet("x", will=("status/#", b"gone")), "contains a wildcard"),
]


@pytest.mark.parametrize(
    ("data", "reason"), [pytest.param(data, reason, id=reason) for data, reason in MALFORMED]
)
def test_malformed_packet_closes_connection(
    broker_thread: BrokerThread, broker_log, data: bytes, reason: str
) -> None:
    port = broker_thread.broker.port
    with socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        assert is_closed_by_peer(sock)

    warnings = broker_messages(broker_log, logging.WARNING)
    assert any(reason in message for message in warnings), warnings
    # The broker still serves new clients.
    with raw_connect(port, "after-malformed") as sock:
        sock.sendall(b"\xc0\x00")
        assert read_exactly(sock, 2) == b"\xd0\x00"
        sock.sendall(b"\xe0\x00")


def test_oversized_packet_closes_connection(broker_log) -> None:
    allow_loopback_sockets()
    with BrokerThread(EmbeddedBroker(LOOPBACK, 0, max_packet_size=1024)) as thread:
        port = thread.broker.port
        client = Client(port, "big-sender")
        try:
            client.connect()
            client.subscribe(("big/#", 1))
            client.publish("big/small", b"x" * 900, qos=1)
            client.wait_for_messages(1)
            client.client.publish("big/large", b"x" * 2000, qos=1)
            assert wait_until(lambda: bool(client.disconnects))
        finally:
            client.stop()

    assert DEFAULT_MAX_PACKET_SIZE == 1024 * 1024
    assert client.received() == [("big/small", b"x" * 900, 1, False)]
    warnings = broker_messages(broker_log, logging.WARNING)
    assert any("exceeds the maximum packet size of 1024 bytes" in m for m in warnings), warnings


def test_credentials_checked(broker_log, tmp_path: Path) -> None:
    password_file = tmp_path / "passwords"
    password_file.write_text("# lab accounts\nnode-1:s3cret:with-colon\n\n")
    passwords = read_password_file(password_file)
    assert passwords == {"node-1": "s3cret:with-colon"}

    allow_loopback_sockets()
    with BrokerThread(EmbeddedBroker(LOOPBACK, 0, passwords=passwords)) as thread:
        port = thread.broker.port
        cases = {
            "right": ("node-1", "s3cret:with-colon"),
            "wrong": ("node-1", "guess"),
            "unknown": ("node-2", "s3cret:with-colon"),
            "anonymous": (None, None),
        }
        results = {}
        for name, (username, password) in cases.items():
            client = Client(port, f"auth-{name}", username=username, password=password)
            try:
                results[name] = client.connect()[1]
            finally:
                client.stop()

    assert not results["right"].is_failure
    assert str(results["wrong"]) == "Bad user name or password"
    assert str(results["unknown"]) == "Bad user name or password"
    assert str(results["anonymous"]) == "Not authorized"
    assert not any("s3cret" in m for m in broker_messages(broker_log, logging.DEBUG))


def test_invalid_password_file(tmp_path: Path) -> None:
    password_file = tmp_path / "passwords"
    password_file.write_text("no colon here\n")

    with pytest.raises(ValueError, match="passwords:1: expected username:password"):
        read_password_file(password_file)


def test_stop_with_connected_clients(broker_log) -> None:
    allow_loopback_sockets()
    thread = BrokerThread(EmbeddedBroker(LOOPBACK, 0))
    thread.start()
    port = thread.broker.port
    sockets = [raw_connect(port, f"held-{i}", will=("status/held", b"gone")) for i in range(3)]
    try:
        thread.stop()
        closed = [is_closed_by_peer(sock) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()

    assert closed == [True, True, True]
    assert any("stopped" in m for m in broker_messages(broker_log))
    assert not any("publishing the will" in m for m in broker_messages(broker_log))


# The broker as a child process, as the demo starts it


def test_broker_env_selects_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    allow_loopback_sockets()
    monkeypatch.setenv("FLTRUST_BROKER", "embedded")
    broker = start_broker(tmp_path / "broker")
    try:
        assert broker.kind == "embedded"
        assert broker.mqtt_protocol == "3.1.1"
        capture = MqttCapture(broker.host, broker.port, "env/#", client_id="env-capture")
        capture.start()
        try:
            capture.publish("env/t", b"through the child process")
            messages = capture.wait_for(lambda m: len(m) >= 1, timeout=TIMEOUT)
        finally:
            capture.stop()
    finally:
        broker.stop()

    assert [(m.topic, m.payload) for m in messages] == [("env/t", b"through the child process")]
    assert not broker.is_running()
    assert "listening" in broker.process.log_path.read_text()


def test_broker_env_invalid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLTRUST_BROKER", "rabbitmq")

    with pytest.raises(BrokerError, match="invalid FLTRUST_BROKER value 'rabbitmq'"):
        start_broker(tmp_path / "broker")


@pytest.mark.skipif(not EDGE_BIN.exists(), reason=f"{EDGE_BIN} not found. Run script/setup")
def test_edge_node_with_embedded_broker(tmp_path: Path) -> None:
    allow_loopback_sockets()
    broker = start_broker(tmp_path / "broker", kind="embedded")
    prefix = "fltrust/embedded"
    capture = MqttCapture(broker.host, broker.port, f"{prefix}/#", client_id="edge-capture")
    node: EdgeNodeProcess | None = None
    try:
        capture.start()
        data = write_nab_slice("machine", tmp_path / "machine.csv", 0, 500)
        spec = NodeSpec(
            "embedded-node",
            (DeviceSpec("machine", "temperature", "Machine", ("temperature",), data, 50.0),),
        )
        node_dir = tmp_path / "node"
        config = node_config(
            spec,
            broker_host=LOOPBACK,
            broker_port=broker.port,
            prefix=prefix,
            federation_key=generate_federation_key(),
            state_dir=node_dir / "state",
            heartbeat_interval=1.0,
        )
        node = EdgeNodeProcess(spec, "embedded", node_dir, config)
        node.start()
        heartbeat = f"{prefix}/node/embedded-node/heartbeat"
        capture.wait_for(lambda ms: any(m.topic == heartbeat for m in ms), timeout=60)
        assert node.is_running(), node.process.log_tail()
        status = node.stop()
    finally:
        if node is not None:
            node.stop()
        capture.stop()
        broker.stop()

    assert status == 0, node.process.log_tail()
    node_log = node.process.log_path.read_text()
    assert "refused the connection" not in node_log
    assert "cannot reach MQTT broker" not in node_log
    broker_log = broker.process.log_path.read_text()
    assert "client fltrust-edge-embedded-node" in broker_log
    assert "WARNING" not in broker_log, broker_log
