"""A paho-mqtt client that records every message below a topic filter.

The end-to-end tests use it to see the signed updates and global models that
pass through the broker, and to publish forged or replayed messages.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class CapturedMessage:
    """One received message and the wall-clock time it arrived."""

    topic: str
    payload: bytes
    retain: bool
    received_at: float

    def json(self) -> Any:
        """Return the payload decoded as JSON.

        Raises:
            ValueError: when the payload is not JSON.
        """
        return json.loads(self.payload)


class MqttCapture:
    """Subscribe to ``topic_filter`` and keep every message in arrival order."""

    def __init__(self, host: str, port: int, topic_filter: str, client_id: str) -> None:
        """Create the client. ``start`` connects and subscribes."""
        self.host = host
        self.port = port
        self.topic_filter = topic_filter
        self._messages: list[CapturedMessage] = []
        self._condition = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: Any, properties: object
    ) -> None:
        if reason.is_failure:
            _LOGGER.error(
                "capture client failed to connect to %s:%s: %s", self.host, self.port, reason
            )
            return
        client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reasons: object, properties: object
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        captured = CapturedMessage(
            message.topic, bytes(message.payload), bool(message.retain), time.time()
        )
        with self._condition:
            self._messages.append(captured)
            self._condition.notify_all()

    def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe and wait until the broker acknowledged the subscription.

        Raises:
            TimeoutError: when the subscription is not acknowledged in time.
        """
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(
                f"subscription to {self.topic_filter} on {self.host}:{self.port} "
                f"not acknowledged within {timeout:.0f} s"
            )

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def messages(
        self, predicate: Callable[[CapturedMessage], bool] | None = None
    ) -> list[CapturedMessage]:
        """Return a copy of the messages so far, optionally only those matching ``predicate``."""
        with self._condition:
            return [m for m in self._messages if predicate is None or predicate(m)]

    def wait_for(
        self, predicate: Callable[[list[CapturedMessage]], bool], timeout: float
    ) -> list[CapturedMessage]:
        """Wait until ``predicate`` holds for the messages so far and return them.

        Raises:
            TimeoutError: when the predicate is still false after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self._messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"condition on {self.topic_filter} messages not met within {timeout:.0f} s"
                    )
                self._condition.wait(min(remaining, 1.0))
            return list(self._messages)

    def publish(
        self, topic: str, payload: bytes | str, retain: bool = False, timeout: float = 10.0
    ) -> None:
        """Publish one message with QoS 1 and wait until the broker acknowledged it."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout)

    def save(self, path: Path) -> None:
        """Write the captured messages to ``path`` as JSON lines, payloads as text."""
        with path.open("w") as file:
            for message in self.messages():
                record = {
                    "topic": message.topic,
                    "retain": message.retain,
                    "received_at": message.received_at,
                    "payload": message.payload.decode(errors="replace"),
                }
                file.write(json.dumps(record) + "\n")
