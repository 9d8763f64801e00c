"""The node's MQTT connection, run by paho-mqtt's network thread.

paho calls the callbacks below from its own thread. They only put events on
the node's queue (and resubscribe after a connect), so every decision runs in
the node's main loop and a slow handler never stalls the network thread.
paho reconnects by itself with the backoff set in ``start``, also when the
first connection attempt fails.
"""

from __future__ import annotations

import logging
import queue
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from .config import MqttConfig
from .throttle import ThrottledLogger

_LOGGER = logging.getLogger(__name__)

RECONNECT_MIN_DELAY = 1
RECONNECT_MAX_DELAY = 60
# QoS 1 messages that paho keeps while the broker is unreachable. Beyond this,
# publish fails instead of growing memory without bound.
MAX_QUEUED_MESSAGES = 1000


@dataclass(frozen=True)
class Connected:
    """A new or restored connection to the broker.

    ``connection`` numbers the link's connections from 1 in the order they were made.
    """

    connection: int


@dataclass(frozen=True)
class Disconnected:
    """Loss of the broker connection. ``reason`` is paho's reason text."""

    reason: str


@dataclass(frozen=True)
class Message:
    """A message on a subscribed topic. ``retained`` is set for retained deliveries.

    ``received`` is the ``time.monotonic()`` value at which the message arrived,
    which is when the link builds the event.
    """

    topic: str
    payload: bytes
    retained: bool
    received: float = field(default_factory=time.monotonic)


class MqttLink:
    """A paho-mqtt client that reports to an event queue and counts published bytes."""

    def __init__(self, config: MqttConfig, events: queue.Queue[Any], node_id: str) -> None:
        """Prepare a client. Nothing connects until ``start``."""
        self._config = config
        self._events = events
        self._node_id = node_id
        self._lock = threading.Lock()
        # Held while the connection number changes and while a message bound to
        # one connection is handed to paho.
        self._connection_lock = threading.Lock()
        self._connection: int | None = None
        self._connection_count = 0
        self._subscriptions: dict[str, int] = {}
        self._published_bytes = 0
        self._warnings = ThrottledLogger(_LOGGER)
        self.connected = False
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=mqtt.MQTTv311,
        )
        if config.username:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            client.tls_set()
        client.reconnect_delay_set(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY)
        client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        self._client = client

    def start(self) -> None:
        """Start connecting in paho's network thread, which retries until ``stop``."""
        self._client.connect_async(self._config.host, self._config.port, self._config.keepalive)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def subscribe(self, topics: Iterable[str], qos: int = 1) -> None:
        """Subscribe now if connected, and again after every reconnect."""
        with self._lock:
            new = [topic for topic in topics if topic not in self._subscriptions]
            for topic in new:
                self._subscriptions[topic] = qos
        if new and self.connected:
            self._client.subscribe([(topic, qos) for topic in new])

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        connection: int | None = None,
    ) -> bool:
        """Hand a message to paho and return whether it was sent or queued.

        QoS 0 messages are dropped while the broker is unreachable, and QoS 1
        messages are queued and sent after the reconnect. With ``connection``
        (QoS 0 only), the message is dropped unless that connection, as
        numbered by ``Connected``, is still up.
        """
        if connection is None:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        else:
            if qos != 0:
                raise ValueError("only QoS 0 messages can be bound to a connection")
            # paho-mqtt (read in 2.2) calls on_disconnect before it reconnects
            # and drops unsent packets when it reconnects, so a QoS 0 message
            # handed over here cannot go out on a later connection. It calls
            # on_connect and on_disconnect without holding any lock that
            # publish() takes for QoS 0, so holding this lock cannot deadlock.
            with self._connection_lock:
                if connection != self._connection:
                    _LOGGER.debug(
                        "%s: message on %s not sent: connection %s is closed",
                        self._node_id,
                        topic,
                        connection,
                    )
                    return False
                info = self._client.publish(topic, payload, qos=qos, retain=retain)
        accepted = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        )
        if accepted:
            with self._lock:
                self._published_bytes += len(payload)
        else:
            _LOGGER.debug(
                "%s: message on %s not sent: %s", self._node_id, topic, mqtt.error_string(info.rc)
            )
        return accepted

    def take_published_bytes(self) -> int:
        """Return the payload bytes published since the previous call."""
        with self._lock:
            published, self._published_bytes = self._published_bytes, 0
        return published

    # paho callbacks, run in the network thread.

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            _LOGGER.warning(
                "%s: broker %s:%s refused the connection: %s",
                self._node_id,
                self._config.host,
                self._config.port,
                reason_code,
            )
            return
        with self._connection_lock:
            self._connection_count += 1
            self._connection = self._connection_count
            connection = self._connection
        self.connected = True
        with self._lock:
            subscriptions = list(self._subscriptions.items())
        if subscriptions:
            client.subscribe(subscriptions)
        self._events.put(Connected(connection))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho-mqtt (read in 2.2) passes no error to on_connect_fail, but calls
        # it inside the except clause that caught the OSError of the attempt.
        error = sys.exception()
        reason = _describe_connect_error(error) if error is not None else "unknown reason"
        self._warnings.warning(
            f"connect_fail:{reason}",
            "%s: cannot reach MQTT broker %s:%s: %s; retrying",
            self._node_id,
            self._config.host,
            self._config.port,
            reason,
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        with self._connection_lock:
            self._connection = None
        was_connected = self.connected
        self.connected = False
        if was_connected:
            self._events.put(Disconnected(str(reason_code)))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._events.put(Message(message.topic, bytes(message.payload), bool(message.retain)))


def _describe_connect_error(error: BaseException) -> str:
    """Return the reason of a failed connection attempt, such as "Connection refused"."""
    if isinstance(error, socket.gaierror):
        return f"host name not resolved ({error.strerror or error})"
    if isinstance(error, TimeoutError):
        return "connection timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
