"""Diagnostics of a federation, with its secrets redacted."""

from __future__ import annotations

import itertools
import json
from typing import Any
from unittest.mock import MagicMock

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from syrupy.assertion import SnapshotAssertion

from custom_components.fltrust.core import security
from custom_components.fltrust.core.trust import TrustStatus

from .conftest import FEDERATION_KEY, EdgeNode, federation_with_nodes, store_federation

CHALLENGE = "0f" * 16


async def test_diagnostics(
    frozen_time: FrozenDateTimeFactory,
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    mqtt_mock: MagicMock,
    mock_config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    snapshot: SnapshotAssertion,
) -> None:
    """Test the diagnostics show trust records and rejections but no key or challenge.

    The clock is frozen before the client's access token is issued, so the
    token is valid at the frozen time.
    """
    federation = federation_with_nodes(mock_config_entry, "node-1", "node-2")
    node = federation.nodes["node-2"]
    node.trust.status = TrustStatus.REAUTH_REQUIRED
    node.trust.score = 50.0
    node.authenticated = False
    node.challenge = CHALLENGE
    node.challenge_round = 3
    federation.round = 3
    # Its baseline contains statistics of its own readings, such as their mean.
    federation.nodes["node-1"].trust.update_baselines = {
        "temperature": {"parts": [[0.5, -0.25], [92.25, 0.1]], "spreads": None, "probation": 0}
    }
    store_federation(hass_storage, mock_config_entry, federation)
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    # A signed message the coordinator rejects goes on the node's record.
    node_1 = EdgeNode(hass, "node-1")
    node_1.counter = itertools.count(10**6)
    node_1.send("state", {"device": "fridge", "anomaly": "yes"}, device_id="fridge")
    await hass.async_block_till_done()

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, mock_config_entry)

    assert diagnostics == snapshot
    text = json.dumps(diagnostics)
    federation_key = bytes.fromhex(FEDERATION_KEY)
    assert FEDERATION_KEY not in text
    assert CHALLENGE not in text
    assert security.derive_node_key(federation_key, "node-1").hex() not in text
    assert diagnostics["entry"]["data"]["federation_key"] == "**REDACTED**"
    assert diagnostics["state"]["nodes"]["node-2"]["challenge"] == "**REDACTED**"
    assert "92.25" not in text
    baseline = diagnostics["state"]["nodes"]["node-1"]["trust"]["update_baselines"]["temperature"]
    assert baseline["parts"] == "**REDACTED**"
    assert diagnostics["state"]["nodes"]["node-1"]["last_rejection"].startswith("schema")
