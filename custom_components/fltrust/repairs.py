"""Repairs of the fltrust integration: release a quarantined node, or start over.

A quarantine lasts until someone lifts it, so every quarantined node has a
repair issue. Its fix flow shows the node's trust and, once the person
confirms that they checked the device, releases the node as the action
``fltrust.release`` does.

A federation whose stored state is lost or damaged does not start. Its issue
explains how to restore the state, and its fix flow starts the federation over
without it.
"""

from __future__ import annotations

import voluptuous as vol
from homeassistant.components.repairs import RepairsFlow, RepairsFlowResult
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant

from .const import CONF_START_OVER, DOMAIN, LOGGER
from .coordinator import ISSUE_STATE_UNUSABLE, FltrustCoordinator, NodeNotQuarantinedError
from .core.trust import TrustStatus


class ReleaseNodeRepairFlow(RepairsFlow):
    """Fix flow that releases a quarantined node after a person confirms it."""

    def __init__(self, entry_id: str, node_id: str) -> None:
        """Store which federation and node the issue is about."""
        self._entry_id = entry_id
        self._node_id = node_id

    def _coordinator(self) -> FltrustCoordinator | None:
        entry = self.hass.config_entries.async_get_entry(self._entry_id)
        if entry is None or entry.domain != DOMAIN or entry.state is not ConfigEntryState.LOADED:
            return None
        coordinator: FltrustCoordinator = entry.runtime_data
        return coordinator

    async def async_step_init(self, user_input: dict[str, str] | None = None) -> RepairsFlowResult:
        """Start with the confirmation."""
        return await self.async_step_confirm()

    async def async_step_confirm(
        self, user_input: dict[str, str] | None = None
    ) -> RepairsFlowResult:
        """Show the node's trust, and release the node once the person confirms."""
        coordinator = self._coordinator()
        if coordinator is None:
            return self.async_abort(reason="entry_not_loaded")
        node = coordinator.data.nodes.get(self._node_id)
        if node is None or node.status != TrustStatus.QUARANTINED:
            return self.async_abort(reason="not_quarantined")

        if user_input is not None:
            try:
                await coordinator.async_release(self._node_id)
            except (KeyError, NodeNotQuarantinedError):
                # A release by the action or another flow came first.
                return self.async_abort(reason="not_quarantined")
            LOGGER.info(
                "%s: node %s released from its repair issue",
                self._entry_id,
                self._node_id,
            )
            return self.async_create_entry(data={})

        return self.async_show_form(
            step_id="confirm",
            data_schema=vol.Schema({}),  # type: ignore[arg-type]  # HA loads probatio as voluptuous
            description_placeholders={
                "title": coordinator.config_entry.title,
                "node_id": self._node_id,
                "trust": f"{node.trust:.1f}",
                "reauth_threshold": f"{coordinator.settings.trust.reauth_threshold:.0f}",
            },
        )


class StartOverRepairFlow(RepairsFlow):
    """Fix flow that starts a federation over without the stored state it lost."""

    def __init__(self, entry_id: str) -> None:
        """Store which federation the issue is about."""
        self._entry_id = entry_id

    async def async_step_init(self, user_input: dict[str, str] | None = None) -> RepairsFlowResult:
        """Start with the confirmation."""
        return await self.async_step_confirm()

    async def async_step_confirm(
        self, user_input: dict[str, str] | None = None
    ) -> RepairsFlowResult:
        """Explain what starting over loses, and start over once the person confirms."""
        entry = self.hass.config_entries.async_get_entry(self._entry_id)
        if entry is None or entry.domain != DOMAIN:
            return self.async_abort(reason="entry_not_found")
        if user_input is not None:
            self.hass.config_entries.async_update_entry(
                entry, data={**entry.data, CONF_START_OVER: True}
            )
            self.hass.config_entries.async_schedule_reload(entry.entry_id)
            LOGGER.warning("%s: a person chose to start the federation over", entry.entry_id)
            return self.async_create_entry(data={})

        return self.async_show_form(
            step_id="confirm",
            data_schema=vol.Schema({}),  # type: ignore[arg-type]  # HA loads probatio as voluptuous
            description_placeholders={"title": entry.title},
        )


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """Return the fix flow of a repair issue of this integration."""
    if data is None or not isinstance(data.get("entry_id"), str):
        raise ValueError(f"repair issue {issue_id} has no config entry id")
    if issue_id.startswith(ISSUE_STATE_UNUSABLE):
        return StartOverRepairFlow(str(data["entry_id"]))
    return ReleaseNodeRepairFlow(str(data["entry_id"]), str(data["node_id"]))
