"""Commands for Mosquitto's dynamic-security plugin, which cut a node's broker access.

Quarantine drops a node's updates at the coordinator, but the node can still
publish and read every topic its broker account allows. With the plugin, the
coordinator disables the node's broker account, which also disconnects the
node at once, and enables it again when a person releases the node.

The plugin takes JSON commands on ``CONTROL_TOPIC`` from a client whose role
allows it, and responds on ``RESPONSE_TOPIC``, one response per command, with
the command's ``correlationData`` echoed and an ``error`` text on failure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
# The placeholder of a username template that stands for the node id.
NODE_ID_FIELD = "{node_id}"
DEFAULT_USERNAME_TEMPLATE = "fltrust-" + NODE_ID_FIELD
# MQTT strings are at most 65535 bytes; a template is far shorter in practice.
MAX_TEMPLATE_LENGTH = 200
# A response larger than this is not one the plugin sends for our commands.
MAX_RESPONSE_BYTES = 64 * 1024
_TEMPLATE_TEXT = re.compile(r"[A-Za-z0-9_.@:-]*")


@dataclass(frozen=True)
class DynsecResponse:
    """The plugin's response to one command."""

    command: str
    correlation: str | None
    error: str | None


def validate_username_template(template: str) -> str:
    """Return the template if it names each node's broker account unambiguously.

    The template must contain ``{node_id}`` exactly once; the rest may contain
    letters, digits and ``_ . @ : -``, so that no two node ids map to the same
    username and no character needs escaping in a broker's account list.

    Raises:
        ValueError: with the reason, when the template is not usable.
    """
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise ValueError(f"longer than {MAX_TEMPLATE_LENGTH} characters")
    if template.count(NODE_ID_FIELD) != 1:
        raise ValueError(f"must contain {NODE_ID_FIELD} exactly once")
    for part in template.split(NODE_ID_FIELD):
        if not _TEMPLATE_TEXT.fullmatch(part):
            raise ValueError(
                f"may hold only letters, digits, '_', '.', '@', ':' and '-' besides {NODE_ID_FIELD}"
            )
    return template


def broker_username(template: str, node_id: str) -> str:
    """Return the broker username of a node under a validated template."""
    return template.replace(NODE_ID_FIELD, node_id)


def client_access_command(username: str, enabled: bool, correlation: str) -> bytes:
    """Return the command that enables or disables the broker account ``username``.

    Disabling an account also disconnects every client logged in with it, and
    the broker refuses it until the account is enabled again.
    """
    command = {
        "command": "enableClient" if enabled else "disableClient",
        "username": username,
        "correlationData": correlation,
    }
    return json.dumps({"commands": [command]}, separators=(",", ":")).encode()


def parse_responses(payload: bytes) -> list[DynsecResponse]:
    """Return the responses in a message on ``RESPONSE_TOPIC``.

    Raises:
        ValueError: when the payload is not a response list the plugin sends.
    """
    if len(payload) > MAX_RESPONSE_BYTES:
        raise ValueError(f"response of {len(payload)} bytes exceeds {MAX_RESPONSE_BYTES}")
    try:
        data: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"response is not JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("responses"), list):
        raise ValueError("response has no list 'responses'")
    responses = []
    for item in data["responses"]:
        if not isinstance(item, dict) or not isinstance(item.get("command"), str):
            raise ValueError("response item without a command name")
        correlation = item.get("correlationData")
        error = item.get("error")
        responses.append(
            DynsecResponse(
                item["command"],
                correlation if isinstance(correlation, str) else None,
                str(error) if error is not None else None,
            )
        )
    return responses
