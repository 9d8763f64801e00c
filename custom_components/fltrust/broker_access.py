"""Cut and restore quarantined nodes' broker access through Mosquitto's dynamic security.

The coordinator calls ``async_set_access`` when a node is quarantined or
released. Each call publishes one command to the plugin and waits for the
response. A failure then becomes a repair issue that names the node, instead
of a silent gap. A broker without the plugin never responds, and for a node
whose account has another name the plugin reports "Client not found".
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_USERNAME
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir

from .const import DOMAIN, LOGGER
from .core.dynsec import (
    CLIENT_NOT_FOUND,
    CONTROL_TOPIC,
    RESPONSE_TOPIC,
    broker_username,
    client_access_command,
    create_client_command,
    create_role_command,
    delete_role_command,
    encode_commands,
    parse_responses,
)

# Seconds to wait for the plugin's response. It usually responds within milliseconds;
# the margin covers a busy broker and Home Assistant's own queue.
RESPONSE_TIMEOUT = 10.0


class BrokerAccessError(Exception):
    """The broker did not carry out a dynamic-security command."""


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
        prefix: str,
        username_template: str,
        on_change: Callable[[], None],
    ) -> None:
        """Keep the settings. ``async_start`` subscribes to the plugin's responses.

        ``on_change`` is called whenever the record of a node changes.
        """
        self.hass = hass
        self.entry = entry
        self.prefix = prefix
        self.username_template = username_template
        self._on_change = on_change
        self.records: dict[str, AccessRecord] = {}
        self._pending: dict[str, asyncio.Future[str | None]] = {}
        self._unsubscribe: CALLBACK_TYPE | None = None
        self._unsubscribe_done: CALLBACK_TYPE | None = None
        self._subscribed = asyncio.Event()
        # The newest command about each node's account: the result of an older one
        # that arrives later, such as a timed-out disable after a release, is stale.
        self._latest: dict[str, str] = {}

    async def async_start(self) -> None:
        """Subscribe to the plugin's response topic.

        Home Assistant sends subscriptions in batches, so the broker may get
        the subscription after a command published right away, and its response
        would then reach no subscriber. Commands therefore wait until the broker confirmed it.
        """
        self._unsubscribe_done = mqtt.async_on_subscribe_done(
            self.hass, RESPONSE_TOPIC, 1, self._subscribed.set
        )
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
        if self._unsubscribe_done is not None:
            self._unsubscribe_done()
            self._unsubscribe_done = None
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
        if TYPE_CHECKING:
            # Subscribed with encoding=None, so this is paho's payload, which is bytes.
            assert isinstance(payload, bytes)
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

    async def _async_send(self, commands: list[dict[str, Any]]) -> list[str | None]:
        """Send commands in one message and return the plugin's error for each, or None.

        Raises:
            BrokerAccessError: when publishing fails or a response does not
                arrive within ``RESPONSE_TIMEOUT``.
        """
        try:
            async with asyncio.timeout(RESPONSE_TIMEOUT):
                await self._subscribed.wait()
        except TimeoutError:
            LOGGER.debug(
                "%s: no confirmation of the subscription to %s, sending the command anyway",
                self.entry.entry_id,
                RESPONSE_TOPIC,
            )
        correlation = secrets.token_hex(8)
        tags = [f"{correlation}-{index}" for index in range(len(commands))]
        futures: list[asyncio.Future[str | None]] = []
        for tag in tags:
            futures.append(self.hass.loop.create_future())
            self._pending[tag] = futures[-1]
        try:
            await mqtt.async_publish(
                self.hass,
                CONTROL_TOPIC,
                encode_commands(commands, correlation),
                1,
                False,
                encoding=None,
            )
            async with asyncio.timeout(RESPONSE_TIMEOUT):
                return list(await asyncio.gather(*futures))
        except HomeAssistantError as err:
            raise BrokerAccessError(f"publishing the command failed: {err}") from err
        except TimeoutError as err:
            raise BrokerAccessError(
                f"no response within {RESPONSE_TIMEOUT:.0f} s; the broker may lack the "
                "dynamic-security plugin, or Home Assistant's MQTT user may not be allowed "
                "to use it"
            ) from err
        finally:
            for tag in tags:
                self._pending.pop(tag, None)

    async def async_set_access(self, node_id: str, enabled: bool) -> AccessRecord:
        """Enable or disable a node's broker account and return the broker's response."""
        username = broker_username(self.username_template, node_id)
        action = "restore" if enabled else "cut"
        token = self._latest[node_id] = secrets.token_hex(8)
        try:
            self._check_not_own(username)
            [error] = await self._async_send([client_access_command(username, enabled)])
        except BrokerAccessError as err:
            error = str(err)
        if self._latest.get(node_id) != token:
            LOGGER.debug(
                "%s: ignored the outcome of an older command to %s the broker access of node %s",
                self.entry.entry_id,
                action,
                node_id,
            )
            return self.records.get(node_id, AccessRecord(username, AccessState.FAILED, error))

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

    async def async_retire(self, node_id: str) -> None:
        """Disable the broker account of a node taken out of service.

        Raises:
            BrokerAccessError: with the plugin's error, when it did not disable it.
        """
        username = broker_username(self.username_template, node_id)
        self._check_not_own(username)
        [error] = await self._async_send([client_access_command(username, enabled=False)])
        if error == CLIENT_NOT_FOUND:
            # Nothing to disable, and keeping the node would not change that.
            LOGGER.warning(
                "%s: retired node %s has no broker account %s, so none was disabled. If it "
                "logged in under another name or anonymously, close that access yourself",
                self.entry.entry_id,
                node_id,
                username,
            )
        elif error is not None:
            LOGGER.error(
                "%s: could not disable the broker account %s of retired node %s: %s",
                self.entry.entry_id,
                username,
                node_id,
                error,
            )
            raise BrokerAccessError(error)
        self._latest.pop(node_id, None)
        self.records.pop(node_id, None)
        ir.async_delete_issue(self.hass, DOMAIN, self._issue_id(node_id))
        if error is None:
            LOGGER.info(
                "%s: disabled the broker account %s of retired node %s",
                self.entry.entry_id,
                username,
                node_id,
            )

    async def async_create_account(
        self, node_id: str, sensor_topics: tuple[str, ...]
    ) -> tuple[str, str]:
        """Create a node's broker account, confined to its own topics, and return its login.

        The role comes first. When the plugin refuses it, as it does when a
        role of that name exists, no account is created, so an account never
        gets a role that someone else made. When the account then fails, the
        new role is deleted again.

        Raises:
            BrokerAccessError: with the plugin's error, when it did not create both.
        """
        username = broker_username(self.username_template, node_id)
        self._check_not_own(username)
        password = secrets.token_urlsafe(24)
        [error] = await self._async_send(
            [create_role_command(self.prefix, node_id, username, sensor_topics)]
        )
        if error is None:
            [error] = await self._async_send([create_client_command(node_id, username, password)])
            if error is not None:
                await self._async_send([delete_role_command(username)])
        if error is not None:
            LOGGER.error(
                "%s: could not create the broker account %s of node %s: %s",
                self.entry.entry_id,
                username,
                node_id,
                error,
            )
            raise BrokerAccessError(
                f"{error}; an account or role named {username} may exist already, which "
                "fltrust does not change: delete it with mosquitto_ctrl first if it is this node's"
            )
        LOGGER.info(
            "%s: created the broker account %s of node %s", self.entry.entry_id, username, node_id
        )
        # A new account is enabled, so an earlier failure to enable or disable one
        # under this name no longer describes the node's access.
        if self.records.pop(node_id, None) is not None:
            ir.async_delete_issue(self.hass, DOMAIN, self._issue_id(node_id))
            self._on_change()
        return username, password

    def _check_not_own(self, username: str) -> None:
        """Refuse to touch the account that Home Assistant itself logs in to the broker with.

        Disabling it would cut off Home Assistant, and with it the release
        that could lift the node's quarantine.

        Raises:
            BrokerAccessError: when ``username`` is the MQTT integration's.
        """
        for entry in self.hass.config_entries.async_entries(mqtt.DOMAIN):
            if entry.data.get(CONF_USERNAME) == username:
                raise BrokerAccessError(
                    f"{username} is the account Home Assistant logs in to the broker with; "
                    "choose a username pattern that gives nodes accounts of their own"
                )

    def _issue_id(self, node_id: str) -> str:
        return f"broker_access_{self.entry.entry_id}_{node_id}"
