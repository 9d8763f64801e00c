"""Diagnostics of a federation: its settings, trust records and model, without secrets."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_FEDERATION_KEY
from .coordinator import FltrustConfigEntry

# The federation key signs for every node and the coordinator. An open
# re-authentication challenge is redacted too, because with it a stolen node
# key is enough to re-authenticate.
# The baseline of a node's updates ("parts") contains statistics of its own data,
# such as the mean of each reading, which never leave the node otherwise.
TO_REDACT = {CONF_FEDERATION_KEY, "challenge", "node_key", "parts"}


def _model_summary(model: dict[str, Any]) -> dict[str, Any]:
    """Return the global model without its parameter arrays."""
    return {
        "version": model["version"],
        "round": model["round"],
        "params": model["params"],
        "contributors": model["contributors"],
        "kinds": {
            kind: {
                "n_samples": data["n_samples"],
                "n_features": len(data["stats"]["sum"]),
                "svm_offset": data["svm"]["offset"],
            }
            for kind, data in model["kinds"].items()
        },
    }


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: FltrustConfigEntry
) -> dict[str, Any]:
    """Return the diagnostics of one federation."""
    coordinator = entry.runtime_data
    state = await coordinator.async_export_state()
    model = state.pop("model")
    return async_redact_data(
        {
            "entry": {
                "title": entry.title,
                "data": dict(entry.data),
                "options": dict(entry.options),
            },
            "coordinator_public_key": coordinator.public_key,
            "broker_access": (
                {node_id: asdict(record) for node_id, record in access.records.items()}
                if (access := coordinator.broker_access) is not None
                else None
            ),
            "dropped_messages": coordinator.dropped_messages,
            "model": _model_summary(model),
            "state": state,
        },
        TO_REDACT,
    )
