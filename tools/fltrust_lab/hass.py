"""Run a real Home Assistant core and talk to it through its REST and websocket APIs.

``HomeAssistantProcess`` writes a minimal configuration folder, starts
``.venv/bin/hass -c DIR`` with its output in a log file, waits for the API,
onboards the first user and stops the process. ``HassClient`` wraps
the REST API (config flows, states, services) and ``HassWebSocket`` the
websocket API (registry commands and event subscriptions).

Nothing here contacts a host other than 127.0.0.1. The onboarding stops after
the user step because finishing the core-config step makes Home Assistant set
up integrations that fetch data from the internet (met, radio_browser).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from . import HASS_BIN, LOOPBACK
from .broker import BrokerAccount
from .hass_config import frontend_available, http_settings, write_config
from .process import ManagedProcess, port_is_open

_LOGGER = logging.getLogger(__name__)

# A record of Home Assistant's log: "2026-12-04 21:13:46.897 ERROR (MainThread) [logger] text".
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \S+ (?P<level>[A-Z]+) \([^)]*\) \[(?P<logger>[^\]]+)\]")
# Loggers of the integration under test. Its errors are test results, not setup failures.
FLTRUST_LOGGER = "custom_components.fltrust"


class HassError(RuntimeError):
    """Home Assistant failed to start, or an API call failed."""


@dataclass(frozen=True)
class HassCredentials:
    """The onboarded owner account and the tokens issued for it."""

    name: str
    username: str
    password: str
    client_id: str
    access_token: str
    refresh_token: str


class HomeAssistantProcess:
    """A Home Assistant core started from a generated configuration folder."""

    def __init__(
        self,
        config_dir: Path,
        port: int,
        log_path: Path,
        *,
        hass_bin: Path = HASS_BIN,
        log_levels: Mapping[str, str] | None = None,
    ) -> None:
        """Store the settings. ``start`` writes the configuration and starts the process."""
        self.config_dir = config_dir
        self.port = port
        self.log_levels = dict(log_levels or {})
        self.hass_bin = hass_bin
        self.process = ManagedProcess("hass", [], log_path)

    @property
    def base_url(self) -> str:
        """Root URL of the HTTP API."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        """Home Assistant's own log file inside the configuration folder."""
        return self.config_dir / "home-assistant.log"

    def start(self) -> None:
        """Write the configuration and start the process.

        Raises:
            HassError: when the hass executable is missing or the port is taken.
        """
        if not self.hass_bin.exists():
            raise HassError(f"{self.hass_bin} not found. Run script/setup first")
        if port_is_open(self.port):
            raise HassError(
                f"port {self.port} on {LOOPBACK} is already in use. Stop the program "
                "that listens there or choose another port"
            )
        # Home Assistant 2026.10 always loads the frontend, and it starts in recovery
        # mode (without config entries) when the frontend fails to load. So unless
        # the frontend package is installed, Home Assistant must pip-install the
        # requirements of its default integrations, as any installation does.
        # With the package installed, skipping pip gives a faster, offline start.
        # requirements_test.txt then installs the default integrations' requirements,
        # because their setup fails and logs errors without them.
        has_frontend = frontend_available(self.hass_bin.parent / "python")
        argv: list[str | Path] = [self.hass_bin, "-c", self.config_dir, "--log-no-color"]
        if has_frontend:
            argv.append("--skip-pip")
        else:
            _LOGGER.warning(
                "home-assistant-frontend is not installed next to %s, so Home Assistant will "
                "pip-install the requirements of its default integrations on this start",
                self.hass_bin,
            )
        write_config(self.config_dir, self.port, log_levels=self.log_levels, frontend=has_frontend)
        self.process.argv = [str(arg) for arg in argv]
        self.process.start()
        _LOGGER.info("Home Assistant starting on %s (pid %s)", self.base_url, self.process.pid)

    async def wait_for_api(self, timeout: float = 240.0) -> None:
        """Wait until the unauthenticated onboarding endpoint responds.

        Raises:
            HassError: when the process exits or the API is not up in time.
        """
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if not self.process.is_running():
                    raise HassError(
                        f"Home Assistant exited with status {self.process.returncode} "
                        f"before its API came up. Last lines of {self.process.log_path}:\n"
                        f"{self.process.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        f"{self.base_url}/api/onboarding", timeout=aiohttp.ClientTimeout(total=5)
                    ) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(1.0)
        raise HassError(
            f"Home Assistant API did not respond within {timeout:.0f} s. Last lines of "
            f"{self.process.log_path}:\n{self.process.log_tail()}"
        )

    async def onboard(
        self, username: str = "fltrust", password: str | None = None, name: str = "fltrust lab"
    ) -> HassCredentials:
        """Create the owner account through the onboarding API and return tokens for it.

        Raises:
            HassError: when the user step was already done or a request fails.
        """
        password = password or secrets.token_urlsafe(12)
        client_id = f"{self.base_url}/"
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{self.base_url}/api/onboarding/users",
                json={
                    "client_id": client_id,
                    "name": name,
                    "username": username,
                    "password": password,
                    "language": "en",
                },
            ) as response:
                body = await response.text()
                if response.status != 200:
                    raise HassError(
                        f"onboarding user step failed with HTTP {response.status}: {body}"
                    )
                auth_code = json.loads(body)["auth_code"]
            async with session.post(
                f"{self.base_url}/auth/token",
                data={
                    "grant_type": "authorization_code",
                    "code": auth_code,
                    "client_id": client_id,
                },
            ) as response:
                body = await response.text()
                if response.status != 200:
                    raise HassError(f"token request failed with HTTP {response.status}: {body}")
                tokens = json.loads(body)
        return HassCredentials(
            name=name,
            username=username,
            password=password,
            client_id=client_id,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
        )

    async def wait_until_running(self, client: HassClient, timeout: float = 120.0) -> None:
        """Wait until ``/api/config`` reports the core state RUNNING.

        Raises:
            HassError: when the process exits or the state is not reached in time.
        """
        deadline = time.monotonic() + timeout
        state = "unknown"
        while time.monotonic() < deadline:
            if not self.process.is_running():
                raise HassError(
                    f"Home Assistant exited with status {self.process.returncode}. "
                    f"Last lines of {self.process.log_path}:\n{self.process.log_tail()}"
                )
            with contextlib.suppress(HassError, aiohttp.ClientError, TimeoutError):
                state = (await client.get("/api/config")).get("state", "unknown")
                if state == "RUNNING":
                    return
            await asyncio.sleep(1.0)
        raise HassError(f"Home Assistant state is {state}, not RUNNING, after {timeout:.0f} s")

    def stop(self, timeout: float = 60.0) -> int | None:
        """Stop Home Assistant with SIGTERM, which it handles as a clean shutdown."""
        status = self.process.stop(timeout=timeout)
        _LOGGER.info("Home Assistant stopped with status %s", status)
        return status

    def read_log(self) -> str:
        """Return Home Assistant's log so far (its own file, else the captured output)."""
        for path in (self.log_path, self.process.log_path):
            if path.exists():
                return path.read_text(errors="replace")
        return ""

    def error_records(self) -> list[str]:
        """Return the first line of each ERROR or CRITICAL record that Home Assistant logged.

        Records of fltrust's own loggers are left out, so the list shows what
        failed in Home Assistant and the integrations it set up on its own.
        """
        return find_error_records(self.read_log(), ignore_loggers=(FLTRUST_LOGGER,))

    async def check_http_config(self, websocket: HassWebSocket) -> dict[str, Any]:
        """Raise HassError unless the server runs on the stable slot that ``write_config`` wrote.

        A server started on the pending slot is reverted to the stable slot,
        with a restart, five minutes after the start unless an admin promotes
        it. Returns the result of the websocket command ``http/config``.
        """
        config = await websocket.command("http/config")
        expected = http_settings(self.port)
        stable = {key: config["stable"].get(key) for key in expected}
        problems = []
        if config["active_config_type"] != "stable":
            problems.append(f"the server runs on the {config['active_config_type']!r} slot")
        if config["pending"] is not None:
            problems.append(f"a pending config is stored: {config['pending']}")
        if config["revert_at"] is not None:
            problems.append(f"a revert to the stable slot is scheduled at {config['revert_at']}")
        if stable != expected:
            problems.append(f"the stable slot is {stable}, expected {expected}")
        if problems:
            raise HassError(
                "Home Assistant's HTTP config is not the lab's stable loopback config: "
                + "; ".join(problems)
                + f". Check {self.config_dir / '.storage' / 'http'}"
            )
        return config


def find_error_records(log: str, ignore_loggers: tuple[str, ...] = ()) -> list[str]:
    """Return the first line of each ERROR or CRITICAL record in a Home Assistant log.

    Records of a logger in ``ignore_loggers``, or of one of its children, are left out.
    Continuation lines such as tracebacks are not returned.
    """
    found = []
    for line in log.splitlines():
        match = _LOG_RECORD.match(line)
        if match is None or match["level"] not in ("ERROR", "CRITICAL"):
            continue
        logger = match["logger"]
        if any(logger == name or logger.startswith(f"{name}.") for name in ignore_loggers):
            continue
        found.append(line)
    return found


class HassClient:
    """REST client of one Home Assistant instance, authenticated with a bearer token."""

    def __init__(self, base_url: str, access_token: str) -> None:
        """Create the HTTP session, which ``close`` or ``async with`` closes."""
        self.base_url = base_url
        self.access_token = access_token
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def __aenter__(self) -> HassClient:
        """Return the client."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the HTTP session."""
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.session.close()

    async def request(self, method: str, path: str, payload: object | None = None) -> Any:
        """Send one request and return the decoded JSON body.

        Raises:
            HassError: on any status other than 200 and 201, with the response body.
        """
        async with self.session.request(method, f"{self.base_url}{path}", json=payload) as response:
            body = await response.text()
            if response.status not in (200, 201):
                raise HassError(f"{method} {path} failed with HTTP {response.status}: {body}")
            return json.loads(body) if body else None

    async def get(self, path: str) -> Any:
        """Send a GET request and return the decoded JSON body."""
        return await self.request("GET", path)

    async def post(self, path: str, payload: object | None = None) -> Any:
        """Send a POST request and return the decoded JSON body."""
        return await self.request("POST", path, payload)

    async def states(self) -> list[dict[str, Any]]:
        """Return every entity state."""
        return await self.get("/api/states")

    async def state(self, entity_id: str) -> dict[str, Any] | None:
        """Return one entity's state, or None when the entity has no state."""
        try:
            return await self.get(f"/api/states/{entity_id}")
        except HassError as err:
            if "HTTP 404" in str(err):
                return None
            raise

    async def call_service(self, domain: str, service: str, data: Mapping[str, Any]) -> Any:
        """Call a service and return the states it changed."""
        return await self.post(f"/api/services/{domain}/{service}", dict(data))

    async def call_service_for_response(
        self, domain: str, service: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Call a service that returns a response, and return that response."""
        result = await self.post(f"/api/services/{domain}/{service}?return_response", dict(data))
        return result["service_response"]

    async def config_entries(self, domain: str | None = None) -> list[dict[str, Any]]:
        """Return the config entries, optionally of one domain only."""
        suffix = f"?domain={domain}" if domain else ""
        return await self.get(f"/api/config/config_entries/entry{suffix}")

    async def run_config_flow(self, handler: str, steps: list[Mapping[str, Any]]) -> dict[str, Any]:
        """Start the config flow of ``handler``, submit each step's form and return the result.

        The flow must end in ``create_entry`` after the last form. The returned
        dictionary is the flow result, whose ``result`` is the new config entry.

        Raises:
            HassError: when the flow aborts, reports form errors or needs more steps.
        """
        return await self._run_flow("/api/config/config_entries/flow", {"handler": handler}, steps)

    async def run_options_flow(
        self, entry_id: str, steps: list[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Run the options flow of a config entry with one form per step and return the result.

        Raises:
            HassError: when the flow aborts, reports form errors or needs more steps.
        """
        return await self._run_flow(
            "/api/config/config_entries/options/flow", {"handler": entry_id}, steps
        )

    async def run_repair_flow(
        self, domain: str, issue_id: str, steps: list[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Run the fix flow of a repair issue with one form per step and return the result.

        Raises:
            HassError: when the flow aborts, reports form errors or needs more steps.
        """
        return await self._run_flow(
            "/api/repairs/issues/fix", {"handler": domain, "issue_id": issue_id}, steps
        )

    async def _run_flow(
        self, path: str, start: Mapping[str, str], steps: list[Mapping[str, Any]]
    ) -> dict[str, Any]:
        handler = start["handler"]
        try:
            result = await self.post(path, dict(start))
        except HassError as err:
            if "Invalid handler specified" in str(err):
                raise HassError(
                    f"Home Assistant has no flow for {handler!r}: the integration or entry is "
                    "missing or failed to load. Its log names the import or setup error"
                ) from err
            raise
        for form in steps:
            self._check_flow_result(handler, result, expect_form=True)
            result = await self.post(f"{path}/{result['flow_id']}", dict(form))
        self._check_flow_result(handler, result, expect_form=False)
        return result

    @staticmethod
    def _check_flow_result(handler: str, result: dict[str, Any], *, expect_form: bool) -> None:
        kind = result.get("type")
        if kind == "abort":
            raise HassError(f"{handler} config flow aborted: {result.get('reason')}")
        if result.get("errors"):
            raise HassError(
                f"{handler} config flow step {result.get('step_id')} rejected the form: "
                f"{result['errors']}"
            )
        if expect_form and kind != "form":
            raise HassError(f"{handler} config flow returned {kind!r} where a form was expected")
        if not expect_form and kind != "create_entry":
            raise HassError(
                f"{handler} config flow stopped at step {result.get('step_id')!r} "
                f"({kind}) instead of creating an entry"
            )

    async def create_mqtt_entry(
        self, host: str, port: int, protocol: str = "5", account: BrokerAccount | None = None
    ) -> dict[str, Any]:
        """Configure Home Assistant's MQTT integration through its config flow.

        Returns the new config entry.
        """
        credentials = {}
        if account is not None:
            credentials = {"username": account.username, "password": account.password}
        form = {
            "broker": host,
            "port": port,
            **credentials,
            "protocol": protocol,
            "other_settings": {
                "set_client_cert": False,
                "set_ca_cert": "off",
                "transport": "tcp",
            },
        }
        result = await self.run_config_flow("mqtt", [form])
        return result["result"]


class HassWebSocket:
    """An authenticated websocket connection with command results and event queues."""

    def __init__(self, base_url: str, access_token: str) -> None:
        """Store the address. ``connect`` opens the connection."""
        self.url = base_url.replace("http://", "ws://", 1) + "/api/websocket"
        self.access_token = access_token
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._subscriptions: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HassWebSocket:
        """Connect and authenticate."""
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the connection."""
        await self.close()

    async def connect(self) -> None:
        """Open the connection and authenticate with the access token.

        Raises:
            HassError: when authentication fails.
        """
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url, max_msg_size=0)
        hello = await self._ws.receive_json()
        if hello.get("type") != "auth_required":
            raise HassError(f"unexpected first websocket message: {hello}")
        await self._ws.send_json({"type": "auth", "access_token": self.access_token})
        reply = await self._ws.receive_json()
        if reply.get("type") != "auth_ok":
            raise HassError(f"websocket authentication failed: {reply}")
        self._reader = asyncio.create_task(self._read_loop(), name="hass websocket reader")

    async def close(self) -> None:
        """Close the connection and fail pending commands."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(HassError("websocket closed"))
        self._pending.clear()

    async def _read_loop(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            for item in data if isinstance(data, list) else [data]:
                self._dispatch(item)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(HassError("websocket connection closed by Home Assistant"))

    def _dispatch(self, item: dict[str, Any]) -> None:
        message_id = item.get("id")
        if item.get("type") == "event" and message_id in self._subscriptions:
            self._subscriptions[message_id].put_nowait(item["event"])
            return
        future = self._pending.pop(message_id, None)
        if future is None or future.done():
            return
        if item.get("success", False):
            future.set_result(item.get("result"))
        else:
            future.set_exception(HassError(f"websocket command failed: {item.get('error')}"))

    async def command(self, command_type: str, timeout: float = 30.0, **fields: Any) -> Any:
        """Send one command and return its result.

        Raises:
            HassError: when Home Assistant reports an error.
            TimeoutError: when no result arrives within ``timeout`` seconds.
        """
        if self._ws is None:
            raise HassError("websocket is not connected")
        message_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send_json({"id": message_id, "type": command_type, **fields})
        return await asyncio.wait_for(future, timeout)

    async def subscribe_events(self, event_type: str) -> asyncio.Queue[dict[str, Any]]:
        """Subscribe to one event type and return the queue that receives its events."""
        if self._ws is None:
            raise HassError("websocket is not connected")
        message_id = next(self._ids)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscriptions[message_id] = queue
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send_json(
            {"id": message_id, "type": "subscribe_events", "event_type": event_type}
        )
        await asyncio.wait_for(future, 30.0)
        return queue

    async def entity_registry(self, platform: str | None = None) -> list[dict[str, Any]]:
        """Return the entity registry, optionally only the entries of one platform."""
        entries = await self.command("config/entity_registry/list")
        if platform is None:
            return entries
        return [entry for entry in entries if entry.get("platform") == platform]

    async def repair_issues(self, domain: str) -> list[dict[str, Any]]:
        """Return the repair issues of one integration, as the Repairs page lists them."""
        result = await self.command("repairs/list_issues")
        return [issue for issue in result["issues"] if issue.get("domain") == domain]


@dataclass(frozen=True)
class FederationSettings:
    """The fields of the fltrust config flow's ``user`` step."""

    name: str
    topic_prefix: str
    federation_key: str
    round_interval: int
    round_timeout: int
    min_nodes: int
    reauth_threshold: float = 60.0
    quarantine_threshold: float = 30.0

    def form(self) -> dict[str, Any]:
        """Return the form data of the ``user`` step."""
        return {
            "name": self.name,
            "topic_prefix": self.topic_prefix,
            "federation_key": self.federation_key,
            "round_interval": self.round_interval,
            "round_timeout": self.round_timeout,
            "min_nodes": self.min_nodes,
            "reauth_threshold": self.reauth_threshold,
            "quarantine_threshold": self.quarantine_threshold,
        }


async def create_federation_entry(
    client: HassClient, settings: FederationSettings
) -> dict[str, Any]:
    """Create one fltrust config entry through the integration's config flow.

    Returns the new config entry.
    """
    result = await client.run_config_flow("fltrust", [settings.form()])
    return result["result"]


async def create_node_account(
    client: HassClient, entry_id: str, node_id: str, timeout: float = 30.0
) -> BrokerAccount:
    """Create a node's broker account through fltrust's action and return its login.

    Turning on broker access in the options flow reloads the entry, and the
    action fails while the entry is not loaded, so the call is repeated until
    ``timeout``.

    Raises:
        HassError: when the action fails otherwise, or the entry stays unloaded.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = await client.call_service_for_response(
                "fltrust", "create_node_account", {"config_entry_id": entry_id, "node_id": node_id}
            )
        except HassError as err:
            if "is not loaded" not in str(err) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        return BrokerAccount(response["username"], response["password"])
