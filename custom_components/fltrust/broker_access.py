"""Cut and restore quarantined nodes' broker access through Mosquitto's dynamic security.

The coordinator calls ``async_set_access`` when a node is quarantined or
released. Each call publishes one command to the plugin and waits for the
response, so that a failure becomes a repair issue naming the node instead of a
silent gap: a broker without the plugin never responds, and a node whose
account has another name gets "Client not found".
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir

from .const import DOMAIN, LOGGER
from .core.dynsec import (
    CONTROL_TOPIC,
    RESPONSE_TOPIC,
    broker_username,
    client_access_command,
    parse_responses,
)

# Seconds to wait for the plugin's response. It usually responds within milliseconds;
# the margin covers a busy broker and Home Assistant's own queue.
RESPONSE_TIMEOUT = 10.0


class AccessState(StrEnum):
    """The state of a node's account that the broker last confirmed."""

    CUT = "cut"
    RESTORED = "restored"
    FAILED = "failed"


@dataclass(frozen=True)
class AccessRecord:
    """The outcome of the last command about one node's account."""

    username: str
    state: AccessState
    error: str | None = None


class BrokerAccess:
    """Enables and disables edge nodes' broker accounts for one federation."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: ConfigEntry,
        username_template: str,
        on_change: Callable[[], None],
    ) -> None:
        """Keep the settings. ``async_start`` subscribes to the plugin's responses.

        ``on_change`` is called whenever the record of a node changes.
        """
        self.hass = hass
        self.entry = entry
        self.username_template = username_template
        self._on_change = on_change
        self.records: dict[str, AccessRecord] = {}
        self._pending: dict[str, asyncio.Future[str | None]] = {}
        self._unsubscribe: mqtt.CALLBACK_TYPE | None = None

    async def async_start(self) -> None:
        """Subscribe to the plugin's response topic."""
        self._unsubscribe = await mqtt.async_subscribe(
            self.hass, RESPONSE_TOPIC, self._async_response_received, qos=1, encoding=None
        )

    @callback
    def async_stop(self) -> None:
        """Unsubscribe, cancel the commands still waiting for a response and drop their issues.

        The next start sends the commands for quarantined nodes again, so an
        issue that still applies comes back then.
        """
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        for node_id, record in self.records.items():
            if record.state is AccessState.FAILED:
                ir.async_delete_issue(self.hass, DOMAIN, self._issue_id(node_id))

    @callback
    def _async_response_received(self, message: mqtt.ReceiveMessage) -> None:
        """Pass each response to the command that waits for it."""
        payload = message.payload
        if isinstance(payload, str):
            payload = payload.encode()
        try:
            responses = parse_responses(payload)
        except ValueError as err:
            LOGGER.warning(
                "%s: ignored an invalid response on %s: %s",
                self.entry.entry_id,
                RESPONSE_TOPIC,
                err,
            )
            return
        for response in responses:
            # Responses to other clients' commands, such as mosquitto_ctrl's, arrive here too.
            future = self._pending.pop(response.correlation or "", None)
            if future is not None and not future.done():
                future.set_result(response.error)

    async def async_set_access(self, node_id: str, enabled: bool) -> AccessRecord:
        """Enable or disable a node's broker account and return the broker's response."""
        username = broker_username(self.username_template, node_id)
        correlation = secrets.token_hex(8)
        future: asyncio.Future[str | None] = self.hass.loop.create_future()
        self._pending[correlation] = future
        action = "restore" if enabled else "cut"
        try:
            await mqtt.async_publish(
                self.hass,
                CONTROL_TOPIC,
                client_access_command(username, enabled, correlation),
                1,
                False,
                encoding=None,
            )
            async with asyncio.timeout(RESPONSE_TIMEOUT):
                error = await future
        except HomeAssistantError as err:
            error = f"publishing the command failed: {err}"
        except TimeoutError:
            error = (
                f"no response within {RESPONSE_TIMEOUT:.0f} s; the broker may lack the "
                "dynamic-security plugin, or Home Assistant's MQTT user may not be allowed "
                "to use it"
            )
        finally:
            self._pending.pop(correlation, None)

        if error is None:
            record = AccessRecord(username, AccessState.RESTORED if enabled else AccessState.CUT)
            LOGGER.info(
                "%s: %s the broker access of node %s (account %s)",
                self.entry.entry_id,
                "restored" if enabled else "cut",
                node_id,
                username,
            )
            ir.async_delete_issue(self.hass, DOMAIN, self._issue_id(node_id))
        else:
            record = AccessRecord(username, AccessState.FAILED, error)
            LOGGER.error(
                "%s: could not %s the broker access of node %s (account %s): %s",
                self.entry.entry_id,
                action,
                node_id,
                username,
                error,
            )
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                self._issue_id(node_id),
                is_fixable=False,
                severity=ir.IssueSeverity.ERROR,
                translation_key="broker_access_cut_failed"
                if not enabled
                else "broker_access_restore_failed",
                translation_placeholders={
                    "title": self.entry.title,
                    "node_id": node_id,
                    "username": username,
                    "error": error,
                },
            )
        self.records[node_id] = record
        self._on_change()
        return record

    def _issue_id(self, node_id: str) -> str:
        return f"broker_access_{self.entry.entry_id}_{node_id}"
