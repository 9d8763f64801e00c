"""Config flow of fltrust: every step, error and abort."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any
from unittest.mock import AsyncMock, MagicMock, patch

import pytest
from homeassistant.config_entries import SOURCE_USER
from homeassistant.const import CONF_NAME
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType, InvalidData
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.fltrust.const import (
    CONF_BROKER_ACCESS,
    CONF_BROKER_USERNAME,
    CONF_FEDERATION_KEY,
    CONF_MIN_NODES,
    CONF_QUARANTINE_THRESHOLD,
    CONF_REAUTH_THRESHOLD,
    CONF_ROUND_INTERVAL,
    CONF_ROUND_TIMEOUT,
    CONF_TOPIC_PREFIX,
    DOMAIN,
)
from custom_components.fltrust.core import security

from .conftest import FEDERATION_KEY, PREFIX

USER_INPUT = {
    CONF_NAME: "Home",
    CONF_TOPIC_PREFIX: "home/fltrust",
    CONF_FEDERATION_KEY: FEDERATION_KEY,
    CONF_ROUND_INTERVAL: 120,
    CONF_ROUND_TIMEOUT: 45,
    CONF_MIN_NODES: 3,
    CONF_REAUTH_THRESHOLD: 65,
    CONF_QUARANTINE_THRESHOLD: 25,
}


@pytest.fixture
def mock_setup_entry() -> Generator[AsyncMock]:
    """Replace entry set-up so that flows do not start federations."""
    with patch("custom_components.fltrust.async_setup_entry", return_value=True) as mock_setup:
        yield mock_setup


async def _start_user_flow(hass: HomeAssistant) -> dict[str, Any]:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}
    return result


@pytest.mark.usefixtures("mqtt_mock")
async def test_user_flow_creates_entry(hass: HomeAssistant, mock_setup_entry: AsyncMock) -> None:
    """Test the user step stores the prefix, key and settings and shows the public key."""
    result = await _start_user_flow(hass)

    result = await hass.config_entries.flow.async_configure(result["flow_id"], USER_INPUT)

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Home"
    assert result["result"].unique_id == "home/fltrust"
    assert result["data"] == {
        CONF_TOPIC_PREFIX: "home/fltrust",
        CONF_FEDERATION_KEY: FEDERATION_KEY,
    }
    assert result["options"] == {
        CONF_ROUND_INTERVAL: 120,
        CONF_ROUND_TIMEOUT: 45,
        CONF_MIN_NODES: 3,
        CONF_REAUTH_THRESHOLD: 65.0,
        CONF_QUARANTINE_THRESHOLD: 25.0,
    }
    assert result["result"].minor_version == 2
    expected_public_key = security.public_key_hex(
        security.derive_coordinator_private_key(bytes.fromhex(FEDERATION_KEY))
    )
    assert result["description"] is None
    assert result["description_placeholders"] == {
        "public_key": expected_public_key,
        "topic_prefix": "home/fltrust",
    }
    assert len(mock_setup_entry.mock_calls) == 1


@pytest.mark.usefixtures("mqtt_mock", "mock_setup_entry")
async def test_user_flow_joins_grouped_key(hass: HomeAssistant) -> None:
    """Test a key pasted in groups of eight characters is stored without the spaces."""
    result = await _start_user_flow(hass)
    grouped = " ".join(FEDERATION_KEY[i : i + 8] for i in range(0, 64, 8)).upper()

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**USER_INPUT, CONF_FEDERATION_KEY: grouped}
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_FEDERATION_KEY] == FEDERATION_KEY


@pytest.mark.usefixtures("mqtt_mock", "mock_setup_entry")
async def test_user_flow_generates_key(hass: HomeAssistant) -> None:
    """Test an empty federation key is replaced by a new random one."""
    result = await _start_user_flow(hass)
    user_input = {key: value for key, value in USER_INPUT.items() if key != CONF_FEDERATION_KEY}

    result = await hass.config_entries.flow.async_configure(result["flow_id"], user_input)

    assert result["type"] is FlowResultType.CREATE_ENTRY
    key = result["data"][CONF_FEDERATION_KEY]
    assert key != FEDERATION_KEY
    assert len(security.parse_key(key)) == 32
    # The success dialog shows the generated key once.
    assert result["description"] == "generated_key"
    assert result["description_placeholders"] == {
        "federation_key": key,
        "public_key": security.public_key_hex(
            security.derive_coordinator_private_key(bytes.fromhex(key))
        ),
        "topic_prefix": "home/fltrust",
    }


@pytest.mark.usefixtures("mqtt_mock", "mock_setup_entry")
async def test_user_flow_defaults(hass: HomeAssistant) -> None:
    """Test the defaults: prefix fltrust, 60 s rounds, 30 s timeout, 2 nodes, 60 and 30."""
    result = await _start_user_flow(hass)

    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "fltrust"
    assert result["data"][CONF_TOPIC_PREFIX] == "fltrust"
    assert result["options"] == {
        CONF_ROUND_INTERVAL: 60,
        CONF_ROUND_TIMEOUT: 30,
        CONF_MIN_NODES: 2,
        CONF_REAUTH_THRESHOLD: 60.0,
        CONF_QUARANTINE_THRESHOLD: 30.0,
    }


async def test_mqtt_not_configured(hass: HomeAssistant) -> None:
    """Test the flow aborts when the MQTT integration has no config entry."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "mqtt_not_configured"


@pytest.mark.usefixtures("mqtt_mock", "mock_setup_entry")
@pytest.mark.parametrize(
    ("changes", "field", "error"),
    [
        ({CONF_TOPIC_PREFIX: "/home"}, CONF_TOPIC_PREFIX, "invalid_topic_prefix"),
        ({CONF_TOPIC_PREFIX: "home/"}, CONF_TOPIC_PREFIX, "invalid_topic_prefix"),
        ({CONF_TOPIC_PREFIX: "home/+/x"}, CONF_TOPIC_PREFIX, "invalid_topic_prefix"),
        ({CONF_TOPIC_PREFIX: "home/#"}, CONF_TOPIC_PREFIX, "invalid_topic_prefix"),
        ({CONF_TOPIC_PREFIX: "   "}, CONF_TOPIC_PREFIX, "invalid_topic_prefix"),
        ({CONF_TOPIC_PREFIX: "$SYS/fltrust"}, CONF_TOPIC_PREFIX, "invalid_topic_prefix"),
        ({CONF_TOPIC_PREFIX: "home//fltrust"}, CONF_TOPIC_PREFIX, "invalid_topic_prefix"),
        ({CONF_ROUND_INTERVAL: float("nan")}, CONF_ROUND_INTERVAL, "not_a_number"),
        ({CONF_QUARANTINE_THRESHOLD: float("nan")}, CONF_QUARANTINE_THRESHOLD, "not_a_number"),
        ({CONF_FEDERATION_KEY: "abc123"}, CONF_FEDERATION_KEY, "invalid_federation_key"),
        ({CONF_FEDERATION_KEY: "zz" * 32}, CONF_FEDERATION_KEY, "invalid_federation_key"),
        ({CONF_FEDERATION_KEY: "00" * 33}, CONF_FEDERATION_KEY, "invalid_federation_key"),
        (
            {CONF_ROUND_INTERVAL: 60, CONF_ROUND_TIMEOUT: 60},
            CONF_ROUND_TIMEOUT,
            "timeout_not_below_interval",
        ),
        (
            {CONF_ROUND_INTERVAL: 30, CONF_ROUND_TIMEOUT: 45},
            CONF_ROUND_TIMEOUT,
            "timeout_not_below_interval",
        ),
        (
            {CONF_REAUTH_THRESHOLD: 50, CONF_QUARANTINE_THRESHOLD: 50},
            CONF_QUARANTINE_THRESHOLD,
            "quarantine_not_below_reauth",
        ),
        (
            {CONF_REAUTH_THRESHOLD: 40, CONF_QUARANTINE_THRESHOLD: 70},
            CONF_QUARANTINE_THRESHOLD,
            "quarantine_not_below_reauth",
        ),
        (
            {CONF_REAUTH_THRESHOLD: 90, CONF_QUARANTINE_THRESHOLD: 82},
            CONF_QUARANTINE_THRESHOLD,
            "quarantine_not_below_initial",
        ),
    ],
)
async def test_user_flow_field_errors(
    hass: HomeAssistant, changes: dict[str, Any], field: str, error: str
) -> None:
    """Test each invalid value is reported on its own field and the flow recovers."""
    result = await _start_user_flow(hass)

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**USER_INPUT, **changes}
    )

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {field: error}

    result = await hass.config_entries.flow.async_configure(result["flow_id"], USER_INPUT)
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.usefixtures("mqtt_mock", "mock_setup_entry")
async def test_user_flow_reports_every_error(hass: HomeAssistant) -> None:
    """Test several invalid fields are reported together."""
    result = await _start_user_flow(hass)

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {
            **USER_INPUT,
            CONF_TOPIC_PREFIX: "home/#",
            CONF_FEDERATION_KEY: "nothex",
            CONF_ROUND_TIMEOUT: 500,
            CONF_QUARANTINE_THRESHOLD: 90,
        },
    )

    assert result["errors"] == {
        CONF_TOPIC_PREFIX: "invalid_topic_prefix",
        CONF_FEDERATION_KEY: "invalid_federation_key",
        CONF_ROUND_TIMEOUT: "timeout_not_below_interval",
        CONF_QUARANTINE_THRESHOLD: "quarantine_not_below_reauth",
    }


@pytest.mark.usefixtures("mqtt_mock", "mock_setup_entry")
@pytest.mark.parametrize(
    "changes",
    [
        {CONF_ROUND_INTERVAL: 4},
        {CONF_ROUND_TIMEOUT: 0},
        {CONF_MIN_NODES: 0},
        {CONF_REAUTH_THRESHOLD: 101},
        {CONF_QUARANTINE_THRESHOLD: -1},
    ],
)
async def test_user_flow_out_of_range(hass: HomeAssistant, changes: dict[str, Any]) -> None:
    """Test numbers outside their selector's range are rejected by the form schema."""
    result = await _start_user_flow(hass)

    with pytest.raises(InvalidData):
        await hass.config_entries.flow.async_configure(result["flow_id"], {**USER_INPUT, **changes})


@pytest.mark.usefixtures("mqtt_mock", "mock_setup_entry")
async def test_user_flow_already_configured(hass: HomeAssistant) -> None:
    """Test a second federation on the same prefix aborts."""
    MockConfigEntry(domain=DOMAIN, unique_id="home/fltrust", data={}).add_to_hass(hass)
    result = await _start_user_flow(hass)

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**USER_INPUT, CONF_TOPIC_PREFIX: " home/fltrust "}
    )

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


@pytest.mark.usefixtures("mock_setup_entry")
async def test_options_change_settings(
    hass: HomeAssistant, mqtt_mock: MagicMock, mock_config_entry: MockConfigEntry
) -> None:
    """Test the options change rounds and thresholds but not the prefix or the key."""
    mock_config_entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(mock_config_entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    assert result["description_placeholders"]["topic_prefix"] == PREFIX
    broker = {CONF_BROKER_ACCESS: False, CONF_BROKER_USERNAME: "fltrust-{node_id}"}

    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            CONF_ROUND_INTERVAL: 300,
            CONF_ROUND_TIMEOUT: 300,
            CONF_MIN_NODES: 4,
            CONF_REAUTH_THRESHOLD: 70,
            CONF_QUARANTINE_THRESHOLD: 75,
            **broker,
        },
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {
        CONF_ROUND_TIMEOUT: "timeout_not_below_interval",
        CONF_QUARANTINE_THRESHOLD: "quarantine_not_below_reauth",
    }

    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            CONF_ROUND_INTERVAL: 300,
            CONF_ROUND_TIMEOUT: 120,
            CONF_MIN_NODES: 4,
            CONF_REAUTH_THRESHOLD: 70,
            CONF_QUARANTINE_THRESHOLD: 35,
            **broker,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert dict(mock_config_entry.data) == {
        CONF_TOPIC_PREFIX: PREFIX,
        CONF_FEDERATION_KEY: FEDERATION_KEY,
    }
    assert dict(mock_config_entry.options) == {
        CONF_ROUND_INTERVAL: 300,
        CONF_ROUND_TIMEOUT: 120,
        CONF_MIN_NODES: 4,
        CONF_REAUTH_THRESHOLD: 70.0,
        CONF_QUARANTINE_THRESHOLD: 35.0,
        **broker,
    }


async def test_migrate_settings_to_options(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    entry_data: dict[str, Any],
    entry_options: dict[str, Any],
) -> None:
    """Test an entry of version 1.1 gets its settings moved from the data to the options."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id=PREFIX,
        data={**entry_data, **entry_options},
        options={CONF_BROKER_ACCESS: False},
        version=1,
        minor_version=1,
    )
    entry.add_to_hass(hass)

    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()

    assert entry.minor_version == 2
    assert dict(entry.data) == entry_data
    assert dict(entry.options) == {**entry_options, CONF_BROKER_ACCESS: False}
    assert entry.runtime_data.settings.round_interval == entry_options[CONF_ROUND_INTERVAL]
