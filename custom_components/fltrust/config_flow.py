"""Config flow of fltrust: one config entry per federation, identified by its topic prefix."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, override

import voluptuous as vol
from homeassistant.components import mqtt
from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlowWithReload,
)
from homeassistant.const import CONF_NAME, UnitOfTime
from homeassistant.core import callback
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)

from .const import (
    CONF_BROKER_ACCESS,
    CONF_BROKER_USERNAME,
    CONF_FEDERATION_KEY,
    CONF_MIN_NODES,
    CONF_QUARANTINE_THRESHOLD,
    CONF_REAUTH_THRESHOLD,
    CONF_ROUND_INTERVAL,
    CONF_ROUND_TIMEOUT,
    CONF_TOPIC_PREFIX,
    DEFAULT_MIN_NODES,
    DEFAULT_NAME,
    DEFAULT_QUARANTINE_THRESHOLD,
    DEFAULT_REAUTH_THRESHOLD,
    DEFAULT_ROUND_INTERVAL,
    DEFAULT_ROUND_TIMEOUT,
    DEFAULT_TOPIC_PREFIX,
    DOMAIN,
    MAX_REAUTH_THRESHOLD,
    MAX_ROUND_INTERVAL,
    MIN_ROUND_INTERVAL,
)
from .core.dynsec import DEFAULT_USERNAME_TEMPLATE, NODE_ID_FIELD, validate_username_template
from .core.security import (
    derive_coordinator_private_key,
    generate_federation_key,
    parse_key,
    public_key_hex,
)
from .core.trust import TrustConfig

SECONDS = NumberSelectorConfig(
    min=1,
    max=MAX_ROUND_INTERVAL,
    step=1,
    unit_of_measurement=UnitOfTime.SECONDS,
    mode=NumberSelectorMode.BOX,
)
THRESHOLD = NumberSelector(
    NumberSelectorConfig(min=0, max=MAX_REAUTH_THRESHOLD, step=1, mode=NumberSelectorMode.BOX)
)

ROUND_FIELDS: dict[vol.Marker, Any] = {
    vol.Required(CONF_ROUND_INTERVAL, default=DEFAULT_ROUND_INTERVAL): NumberSelector(
        NumberSelectorConfig(**{**SECONDS, "min": MIN_ROUND_INTERVAL})
    ),
    vol.Required(CONF_ROUND_TIMEOUT, default=DEFAULT_ROUND_TIMEOUT): NumberSelector(SECONDS),
    vol.Required(CONF_MIN_NODES, default=DEFAULT_MIN_NODES): NumberSelector(
        NumberSelectorConfig(min=1, max=1000, step=1, mode=NumberSelectorMode.BOX)
    ),
    vol.Required(CONF_REAUTH_THRESHOLD, default=DEFAULT_REAUTH_THRESHOLD): THRESHOLD,
    vol.Required(CONF_QUARANTINE_THRESHOLD, default=DEFAULT_QUARANTINE_THRESHOLD): THRESHOLD,
}

USER_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_NAME, default=DEFAULT_NAME): TextSelector(),
        vol.Required(CONF_TOPIC_PREFIX, default=DEFAULT_TOPIC_PREFIX): TextSelector(),
        vol.Optional(CONF_FEDERATION_KEY): TextSelector(
            TextSelectorConfig(type=TextSelectorType.PASSWORD)
        ),
        **ROUND_FIELDS,
    }
)
BROKER_FIELDS: dict[vol.Marker, Any] = {
    vol.Required(CONF_BROKER_ACCESS, default=False): BooleanSelector(),
    vol.Required(CONF_BROKER_USERNAME, default=DEFAULT_USERNAME_TEMPLATE): TextSelector(),
}


OPTION_DEFAULTS: dict[str, Any] = {
    CONF_ROUND_INTERVAL: DEFAULT_ROUND_INTERVAL,
    CONF_ROUND_TIMEOUT: DEFAULT_ROUND_TIMEOUT,
    CONF_MIN_NODES: DEFAULT_MIN_NODES,
    CONF_REAUTH_THRESHOLD: DEFAULT_REAUTH_THRESHOLD,
    CONF_QUARANTINE_THRESHOLD: DEFAULT_QUARANTINE_THRESHOLD,
    CONF_BROKER_ACCESS: False,
    CONF_BROKER_USERNAME: DEFAULT_USERNAME_TEMPLATE,
}


def _options_schema(options: Mapping[str, Any]) -> vol.Schema:
    """Return the options form, each field defaulting to its current value.

    A form submitted through the REST API without some fields then keeps their
    values instead of resetting them to the integration's defaults.
    """
    fields: dict[vol.Marker, Any] = {}
    for marker, selector in {**ROUND_FIELDS, **BROKER_FIELDS}.items():
        key = str(marker)
        fields[vol.Required(key, default=options.get(key, OPTION_DEFAULTS[key]))] = selector
    return vol.Schema(fields)


def _round_settings(user_input: Mapping[str, Any]) -> dict[str, Any]:
    """Return the round and trust settings of a form in the types the entry stores."""
    return {
        CONF_ROUND_INTERVAL: round(user_input[CONF_ROUND_INTERVAL]),
        CONF_ROUND_TIMEOUT: round(user_input[CONF_ROUND_TIMEOUT]),
        CONF_MIN_NODES: round(user_input[CONF_MIN_NODES]),
        CONF_REAUTH_THRESHOLD: float(user_input[CONF_REAUTH_THRESHOLD]),
        CONF_QUARANTINE_THRESHOLD: float(user_input[CONF_QUARANTINE_THRESHOLD]),
    }


def _number_errors(user_input: Mapping[str, Any]) -> dict[str, str]:
    """Return a form error for each round or trust field that is not a finite number.

    The form's number boxes rule these out, but the flow can also be driven
    through the REST API.
    """
    return {
        str(field): "not_a_number"
        for field in ROUND_FIELDS
        if not math.isfinite(float(user_input[str(field)]))
    }


def _round_errors(settings: Mapping[str, Any]) -> dict[str, str]:
    """Return the form errors of round and trust settings, by field."""
    errors: dict[str, str] = {}
    if settings[CONF_ROUND_TIMEOUT] >= settings[CONF_ROUND_INTERVAL]:
        errors[CONF_ROUND_TIMEOUT] = "timeout_not_below_interval"
    if settings[CONF_QUARANTINE_THRESHOLD] >= settings[CONF_REAUTH_THRESHOLD]:
        errors[CONF_QUARANTINE_THRESHOLD] = "quarantine_not_below_reauth"
    elif settings[CONF_QUARANTINE_THRESHOLD] >= TrustConfig().initial_score:
        # Every new node would start quarantined.
        errors[CONF_QUARANTINE_THRESHOLD] = "quarantine_not_below_initial"
    return errors


def _is_valid_prefix(prefix: str) -> bool:
    """Return whether ``prefix`` can be the first levels of every fltrust topic."""
    # Brokers keep topics that start with $ for themselves and drop what clients
    # publish there. The edge node also rejects empty levels (a leading, trailing
    # or doubled slash), so a federation with one could have no nodes.
    if not prefix or prefix.startswith("$") or "" in prefix.split("/"):
        return False
    try:
        mqtt.valid_publish_topic(prefix)
    except vol.Invalid:
        return False
    return True


def _is_valid_key(key: str) -> bool:
    try:
        parse_key(key)
    except ValueError:
        return False
    return True


class FltrustConfigFlow(ConfigFlow, domain=DOMAIN):
    """Create a federation: its topic prefix and key in the data, its settings in the options."""

    VERSION = 1
    MINOR_VERSION = 2

    @staticmethod
    @callback
    @override
    def async_get_options_flow(config_entry: ConfigEntry) -> FltrustOptionsFlow:
        """Return the flow that changes the round, trust and broker access settings."""
        return FltrustOptionsFlow()

    @override
    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the federation's name, topic prefix, key and round settings."""
        # The broker connection is configured in the MQTT integration, not here.
        if not await mqtt.async_wait_for_mqtt_client(self.hass):
            return self.async_abort(reason="mqtt_not_configured")

        errors: dict[str, str] = {}
        if user_input is not None:
            prefix = user_input[CONF_TOPIC_PREFIX].strip()
            # A key pasted in groups, with spaces or line breaks, is still the same key.
            key = "".join(user_input.get(CONF_FEDERATION_KEY, "").split()).lower()
            if not _is_valid_prefix(prefix):
                errors[CONF_TOPIC_PREFIX] = "invalid_topic_prefix"
            if key and not _is_valid_key(key):
                errors[CONF_FEDERATION_KEY] = "invalid_federation_key"
            number_errors = _number_errors(user_input)
            errors.update(number_errors)
            if not number_errors:
                settings = _round_settings(user_input)
                errors.update(_round_errors(settings))
            if not errors:
                await self.async_set_unique_id(prefix)
                self._abort_if_unique_id_configured()
                return self._async_create_federation(
                    user_input[CONF_NAME].strip() or DEFAULT_NAME, prefix, key, settings
                )

        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(
                USER_SCHEMA,  # type: ignore[arg-type]  # HA loads probatio as voluptuous
                user_input,
            ),
            errors=errors,
        )

    def _async_create_federation(
        self, title: str, prefix: str, key: str, settings: dict[str, Any]
    ) -> ConfigFlowResult:
        """Create the entry and show the public key, and a generated federation key once.

        The success dialog is the only place that shows a generated key. Edge
        node keys stay available through the ``issue_node_key`` action.
        """
        placeholders = {"topic_prefix": prefix}
        description = None
        if not key:
            key = generate_federation_key()
            description = "generated_key"
            placeholders["federation_key"] = key
        placeholders["public_key"] = public_key_hex(derive_coordinator_private_key(parse_key(key)))
        return self.async_create_entry(
            title=title,
            data={CONF_TOPIC_PREFIX: prefix, CONF_FEDERATION_KEY: key},
            options=settings,
            description=description,
            description_placeholders=placeholders,
        )


class FltrustOptionsFlow(OptionsFlowWithReload):
    """Change the round and trust settings and how quarantine reaches the broker.

    The topic prefix and the federation key stay: changing either would cut
    off every edge node that was set up with them.
    """

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the round and trust settings, and whether to manage node accounts."""
        errors: dict[str, str] = {}
        if user_input is not None:
            errors = _number_errors(user_input)
            settings: dict[str, Any] = {}
            if not errors:
                settings = _round_settings(user_input)
                errors = _round_errors(settings)
            template = user_input[CONF_BROKER_USERNAME].strip()
            try:
                validate_username_template(template)
            except ValueError:
                errors[CONF_BROKER_USERNAME] = "invalid_username_template"
            else:
                if user_input[CONF_BROKER_ACCESS] and self._template_in_use(template):
                    # Both federations would disable the same account for a shared node id.
                    errors[CONF_BROKER_USERNAME] = "username_template_in_use"
            if not errors:
                return self.async_create_entry(
                    data={
                        **settings,
                        CONF_BROKER_ACCESS: bool(user_input[CONF_BROKER_ACCESS]),
                        CONF_BROKER_USERNAME: template,
                    }
                )

        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                _options_schema(self.config_entry.options),  # type: ignore[arg-type]  # HA loads probatio as voluptuous
                user_input or self.config_entry.options,
            ),
            errors=errors,
            description_placeholders={
                # The texts show the pattern's placeholder itself.
                "node_id": NODE_ID_FIELD,
                "topic_prefix": self.config_entry.data[CONF_TOPIC_PREFIX],
            },
        )

    def _template_in_use(self, template: str) -> bool:
        """Return whether another federation manages broker accounts with ``template``."""
        return any(
            entry.entry_id != self.config_entry.entry_id
            and entry.options.get(CONF_BROKER_ACCESS, False)
            and entry.options.get(CONF_BROKER_USERNAME, DEFAULT_USERNAME_TEMPLATE) == template
            for entry in self.hass.config_entries.async_entries(DOMAIN)
        )
