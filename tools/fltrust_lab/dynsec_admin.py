"""Administer a Mosquitto broker's dynamic-security accounts, as ``mosquitto_ctrl`` does.

The lab uses it to give edge nodes their own broker accounts and to read
whether an account is disabled. Each call sends one command with a fresh
``correlationData`` and waits for the plugin's response to it.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
from typing import Any

import paho.mqtt.client as mqtt
from fltrust_core.dynsec import CONTROL_TOPIC, RESPONSE_TOPIC
from paho.mqtt.enums import CallbackAPIVersion

from .broker import Broker, BrokerAccount, BrokerError

TIMEOUT = 10.0


class DynsecAdmin:
    """A connection with the broker's administrator account."""

    def __init__(self, broker: Broker) -> None:
        """Connect and subscribe to the plugin's responses.

        Raises:
            BrokerError: when the broker runs no dynamic-security plugin or
                the connection fails.
        """
        if broker.admin is None:
            raise BrokerError("the broker runs without the dynamic-security plugin")
        self._responses: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"fltrust-lab-admin-{secrets.token_hex(4)}"
        )
        self._client.username_pw_set(broker.admin.username, broker.admin.password)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_args: subscribed.set()
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        if not subscribed.wait(TIMEOUT):
            self.close()
            raise BrokerError(f"no subscription to {RESPONSE_TOPIC} within {TIMEOUT:.0f} s")

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> DynsecAdmin:
        """Return the connected administrator."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Disconnect."""
        self.close()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        for response in responses:
            with self._lock:
                waiting = self._responses.get(str(response.get("correlationData")))
            if waiting is not None:
                waiting.put(response)

    def command(self, name: str, **fields: Any) -> dict[str, Any]:
        """Send one command and return the plugin's response.

        Raises:
            BrokerError: when the plugin reports an error or does not respond.
        """
        correlation = secrets.token_hex(8)
        waiting: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._responses[correlation] = waiting
        command = {"command": name, **fields, "correlationData": correlation}
        try:
            self._client.publish(CONTROL_TOPIC, json.dumps({"commands": [command]}), qos=1)
            response = waiting.get(timeout=TIMEOUT)
        except queue.Empty as err:
            raise BrokerError(f"no response to {name} within {TIMEOUT:.0f} s") from err
        finally:
            with self._lock:
                del self._responses[correlation]
        if "error" in response:
            raise BrokerError(f"{name} failed: {response['error']}")
        return response

    def create_client(self, account: BrokerAccount) -> None:
        """Create an account with no role, so the broker's default access applies to it."""
        self.command("createClient", username=account.username, password=account.password)

    def is_disabled(self, username: str) -> bool:
        """Return whether an account is disabled."""
        response = self.command("getClient", username=username)
        return bool(response["data"]["client"].get("disabled", False))
