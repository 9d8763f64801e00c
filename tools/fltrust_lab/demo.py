"""The demo: two federations of real edge nodes coordinated by a real Home Assistant.

``run_demo`` starts a broker, Home Assistant on a generated configuration in
``.demo/run-<time>/``, the MQTT and fltrust config entries through Home
Assistant's config flows, and the nodes of ``scenario.plan_scenario``. It
prints a table row each time a federation closes a round, then a summary, and
writes ``demo-summary.json`` in the repository root.

Exit codes: 0 when the run completed (and, with ``headless``, met every
acceptance target), 1 when a target was missed in headless mode, 2 when the
run broke (a process did not start or died).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from fltrust_core.security import generate_federation_key

from . import LOOPBACK, REPO_ROOT
from .broker import Broker, BrokerAccount, BrokerError, start_broker
from .datasets import DataMissingError
from .dynsec_admin import DynsecAdmin
from .hass import (
    HassClient,
    HassCredentials,
    HassError,
    HassWebSocket,
    HomeAssistantProcess,
    create_federation_entry,
    create_node_account,
)
from .monitor import FederationMonitor
from .nodes import EdgeNodeProcess, NodeSpec, start_nodes
from .process import free_port
from .scenario import Scenario, plan_scenario
from .summary import build_summary, format_summary

_LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_TARGET_MISSED = 1
EXIT_BROKEN = 2
INTERACTIVE_PORT = 8123
KEEP_RUNS = 3
# Seconds between two reads of Home Assistant's states.
POLL_INTERVAL = 1.0
PROGRESS_INTERVAL = 15.0
USERNAME = "fltrust"


@dataclass(frozen=True)
class DemoOptions:
    """Command-line options of the demo."""

    headless: bool
    data_dir: Path
    rounds: int
    round_interval: int
    port: int | None
    demo_root: Path
    summary_path: Path

    @property
    def round_timeout(self) -> int:
        """Seconds a round waits for updates: two thirds of the interval."""
        return max(2, self.round_interval * 2 // 3)


class RunBrokenError(RuntimeError):
    """A process of the demo did not start or died during the run."""


def prepare_run_dir(demo_root: Path) -> Path:
    """Create ``demo_root/run-<time>`` and remove all but the newest runs."""
    demo_root.mkdir(parents=True, exist_ok=True)
    run_dir = demo_root / f"run-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir()
    runs = sorted(path for path in demo_root.glob("run-*") if path.is_dir())
    for old in runs[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)
    latest = demo_root / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(run_dir.name)
    return run_dir


def _say(message: str) -> None:
    print(message, flush=True)  # noqa: T201 - the demo's output is for a person at a terminal


class Demo:
    """One demo run: the processes it started and what it observed."""

    def __init__(self, options: DemoOptions) -> None:
        """Store the options. ``run`` does the work."""
        self.options = options
        self.run_dir = prepare_run_dir(options.demo_root)
        self.broker: Broker | None = None
        # The broker's dynamic-security administrator, when Mosquitto runs the plugin.
        self.admin: DynsecAdmin | None = None
        self.accounts: dict[str, BrokerAccount] = {}
        self.hass: HomeAssistantProcess | None = None
        self.client: HassClient | None = None
        self.websocket: HassWebSocket | None = None
        self.credentials: HassCredentials | None = None
        self.scenario: Scenario | None = None
        self.monitors: list[FederationMonitor] = []
        self.nodes: list[EdgeNodeProcess] = []
        self.started = time.monotonic()

    async def run(self) -> int:
        """Run the demo and return the exit code, stopping every started process at the end."""
        _say(f"fltrust demo: run folder {self.run_dir}")
        try:
            await self._start_services()
            await self._start_federations()
            await self._watch()
            summary = await self._summarize()
            if self.options.headless:
                return EXIT_OK if summary["targets_met"] else EXIT_TARGET_MISSED
            await self._stay_up()
            return EXIT_OK
        except (RunBrokenError, BrokerError, HassError, DataMissingError, OSError) as err:
            _say(f"\nerror: the demo run broke: {err}")
            return EXIT_BROKEN
        finally:
            await self._shutdown()

    async def _start_services(self) -> None:
        self.broker = start_broker(self.run_dir / "broker", dynsec=None)
        _say(f"broker: {self.broker.kind} on {self.broker.url}")
        if self.broker.admin is not None:
            self.admin = await asyncio.to_thread(DynsecAdmin, self.broker)
            _say(
                "broker: dynamic-security plugin loaded, so a quarantine also disables the "
                "node's broker account"
            )
        port = self.options.port
        if port is None:
            port = free_port() if self.options.headless else INTERACTIVE_PORT
        self.hass = HomeAssistantProcess(self.run_dir / "config", port, self.run_dir / "hass.log")
        self.hass.start()
        _say(f"Home Assistant: starting on {self.hass.base_url} (log {self.hass.process.log_path})")
        await self.hass.wait_for_api()
        self.credentials = await self.hass.onboard(username=USERNAME)
        self.client = HassClient(self.hass.base_url, self.credentials.access_token)
        await self.hass.wait_until_running(self.client)
        self.websocket = HassWebSocket(self.hass.base_url, self.credentials.access_token)
        await self.websocket.connect()
        await self.hass.check_http_config(self.websocket)
        await self.client.create_mqtt_entry(
            self.broker.host, self.broker.port, self.broker.mqtt_protocol, self.broker.admin
        )
        elapsed = time.monotonic() - self.started
        _say(f"Home Assistant: running after {elapsed:.0f} s, MQTT entry created")
        errors = self.hass.error_records()
        if errors:
            _say(
                f"warning: Home Assistant logged {len(errors)} errors while starting "
                f"(see {self.hass.log_path}). The first:\n  {errors[0]}"
            )

    async def _start_federations(self) -> None:
        assert self.client is not None
        assert self.broker is not None
        assert self.websocket is not None
        options = self.options
        self.scenario = plan_scenario(
            options.data_dir,
            self.run_dir,
            (generate_federation_key(), generate_federation_key()),
            rounds=options.rounds,
            round_interval=options.round_interval,
            round_timeout=options.round_timeout,
        )
        for note in self.scenario.notes:
            _say(f"data: {note}")

        self._events = [
            await self.websocket.subscribe_events("fltrust_quarantined"),
            await self.websocket.subscribe_events("fltrust_trust_dropped"),
        ]

        for plan in self.scenario.federations:
            entry = await create_federation_entry(self.client, plan.settings)
            if self.admin is not None:
                await self.client.run_options_flow(
                    entry["entry_id"],
                    # Each federation needs a username pattern of its own.
                    [{"broker_access": True, "broker_username": f"{plan.name}-{{node_id}}"}],
                )
            self.monitors.append(FederationMonitor(plan, entry["entry_id"]))
            _say(
                f"federation {plan.name}: entry {entry['entry_id']} on "
                f"{plan.settings.topic_prefix}, {len(plan.nodes)} nodes"
            )
            for node in plan.nodes:
                role = (
                    f"turns compromised in round {node.compromise_round}"
                    if node.compromised
                    else "benign"
                )
                sources = "; ".join(device.data.description for device in node.devices)
                _say(f"  {node.node_id:<18} {role:<34} {sources}")

        for plan, monitor in zip(self.scenario.federations, self.monitors, strict=True):
            self.nodes += start_nodes(
                [await self._with_account(spec, monitor.entry_id) for spec in plan.nodes],
                federation=plan.name,
                run_dir=self.run_dir,
                broker_host=LOOPBACK,
                broker_port=self.broker.port,
                prefix=plan.settings.topic_prefix,
                federation_key=plan.settings.federation_key,
                heartbeat_interval=max(2.0, options.round_interval / 3),
                wait_timeout=3.0 * options.round_interval,
            )
        _say(
            f"started {len(self.nodes)} edge nodes. Replays last about "
            f"{self.scenario.replay_seconds:.0f} s, rounds every {options.round_interval} s\n"
        )

    async def _with_account(self, spec: NodeSpec, entry_id: str) -> NodeSpec:
        """Return the node with a broker account of its own, when the broker can disable it.

        fltrust's action creates the account with a role that confines the node
        to its own topics.
        """
        if self.admin is None:
            return spec
        assert self.client is not None
        account = await create_node_account(self.client, entry_id, spec.node_id)
        self.accounts[spec.node_id] = account
        return replace(spec, broker_account=account)

    async def _report_broker_access(self) -> dict[str, bool]:
        """Print and return which node accounts are disabled on the broker."""
        if self.admin is None:
            return {}
        disabled = {
            node_id: await asyncio.to_thread(self.admin.is_disabled, account.username)
            for node_id, account in self.accounts.items()
        }
        locked = sorted(node_id for node_id, is_disabled in disabled.items() if is_disabled)
        _say("broker: accounts disabled: " + (", ".join(locked) if locked else "none"))
        return disabled

    async def _report_repair_issues(self) -> list[dict[str, Any]]:
        """Print and return the fltrust issues that Home Assistant's Repairs page lists."""
        assert self.websocket is not None
        issues = [
            {
                "issue_id": issue["issue_id"],
                "translation_key": issue.get("translation_key"),
                "node_id": (issue.get("translation_placeholders") or {}).get("node_id"),
                "is_fixable": issue.get("is_fixable"),
            }
            for issue in await self.websocket.repair_issues("fltrust")
        ]
        listed = ", ".join(f"{i['translation_key']} ({i['node_id']})" for i in issues)
        _say("Home Assistant repairs: " + (listed or "none"))
        return issues

    async def _refresh_registry(self) -> None:
        assert self.websocket is not None
        registry = await self.websocket.entity_registry("fltrust")
        for monitor in self.monitors:
            monitor.update_registry(registry)

    def _drain_events(self) -> None:
        for queue in self._events:
            while not queue.empty():
                event = queue.get_nowait()
                for monitor in self.monitors:
                    if monitor.record_event(event):
                        data = event.get("data", {})
                        reasons = ", ".join(data.get("reasons") or []) or "no reason given"
                        _say(
                            f"[{monitor.name:<5}] event {event.get('event_type')}: node "
                            f"{data.get('node_id')} trust {data.get('trust')} in round "
                            f"{data.get('round')} ({reasons})"
                        )

    async def _states(self) -> dict[str, dict[str, Any]]:
        assert self.client is not None
        return {state["entity_id"]: state for state in await self.client.states()}

    async def _watch(self) -> None:
        """Print round rows until every node exited, or the deadline passed."""
        assert self.scenario is not None
        assert self.hass is not None
        interval = self.options.round_interval
        deadline = time.monotonic() + self.scenario.replay_seconds + 6 * interval + 120
        last_registry = 0.0
        last_progress = time.monotonic()
        reported_exits: set[str] = set()
        while True:
            if not self.hass.process.is_running():
                raise RunBrokenError(
                    f"Home Assistant exited with status {self.hass.process.returncode}. "
                    f"Last lines of its log:\n{self.hass.process.log_tail()}"
                )
            now = time.monotonic()
            if now - last_registry > 5 and any(m.missing_entities() for m in self.monitors):
                await self._refresh_registry()
                last_registry = now
            self._drain_events()
            states = await self._states()
            for monitor in self.monitors:
                row = monitor.observe(states)
                if row is not None:
                    _say(monitor.format_row(row))

            for node in self.nodes:
                status = node.process.returncode
                if status is not None and node.node_id not in reported_exits:
                    reported_exits.add(node.node_id)
                    if status != 0:
                        _say(
                            f"node {node.node_id} exited with status {status}. Last lines of "
                            f"{node.process.log_path}:\n{node.process.log_tail(10)}"
                        )
            running = [node for node in self.nodes if node.is_running()]
            if not running:
                _say(f"\nall edge nodes finished after {now - self.started:.0f} s")
                return
            if now > deadline:
                _say(
                    f"\nwarning: {len(running)} nodes still running at the deadline. Stopping "
                    + ", ".join(node.node_id for node in running)
                )
                for node in running:
                    node.stop()
                return
            if now - last_progress >= PROGRESS_INTERVAL:
                last_progress = now
                # Rounds go on until the last node exits, which may be past the planned ones.
                rounds = ", ".join(
                    f"{m.name} round {m.rows[-1].round if m.rows else 0}" for m in self.monitors
                )
                nodes = "1 node" if len(running) == 1 else f"{len(running)} nodes"
                _say(
                    f"... {now - self.started:4.0f} s: {rounds} of {self.options.rounds} planned, "
                    f"{nodes} running"
                )
            await asyncio.sleep(POLL_INTERVAL)

    async def _summarize(self) -> dict[str, Any]:
        assert self.scenario is not None
        self._drain_events()
        states = await self._states()
        final_states = {monitor.name: monitor.final_states(states) for monitor in self.monitors}
        summary = build_summary(
            self.scenario,
            self.monitors,
            final_states,
            {node.node_id: node.results() for node in self.nodes},
            {node.node_id: node.process.returncode for node in self.nodes},
            round_interval=self.options.round_interval,
            wall_seconds=time.monotonic() - self.started,
        )
        summary["broker_accounts_disabled"] = await self._report_broker_access()
        summary["repair_issues"] = await self._report_repair_issues()
        self.options.summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        _say(format_summary(summary))
        _say(f"\nsummary written to {self.options.summary_path}")
        return summary

    async def _stay_up(self) -> None:
        assert self.hass is not None
        assert self.credentials is not None
        _say(
            f"\nHome Assistant stays up at {self.hass.base_url}/ until Ctrl-C.\n"
            f"  user: {self.credentials.username}\n  password: {self.credentials.password}\n"
            "The demo finished only the user step of the onboarding. Finishing the others in "
            "the browser sets up integrations that fetch data from the internet."
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(stop.wait())
        while not waiter.done():
            if not self.hass.process.is_running():
                _say("Home Assistant exited")
                break
            await asyncio.wait({waiter}, timeout=2)
        waiter.cancel()

    async def _shutdown(self) -> None:
        """Stop the nodes, Home Assistant and the broker, in that order."""
        for node in self.nodes:
            node.stop()
        if self.websocket is not None:
            with contextlib.suppress(HassError, OSError):
                await self.websocket.close()
        if self.client is not None:
            await self.client.close()
        if self.hass is not None:
            self.hass.stop()
        if self.admin is not None:
            self.admin.close()
        if self.broker is not None:
            self.broker.stop()


def run_demo(options: DemoOptions) -> int:
    """Run the demo and return its exit code."""
    demo = Demo(options)
    try:
        return asyncio.run(demo.run())
    except KeyboardInterrupt:
        # asyncio.run cancelled the run, whose cleanup stopped every process.
        _say("\ninterrupted")
        return EXIT_BROKEN


DEFAULT_SUMMARY_PATH = REPO_ROOT / "demo-summary.json"
DEFAULT_DEMO_ROOT = REPO_ROOT / ".demo"
