"""Commands for Mosquitto's dynamic-security plugin, which cut a node's broker access.

Quarantine drops a node's updates at the coordinator, but the node can still
publish and read every topic its broker account allows. With the plugin, the
coordinator disables the node's broker account, which also disconnects the
node at once, and enables it again when a person releases the node. It can
also create each node's account with a role that confines the node to its own
topics, so that a node cannot publish as another node or read another node's
messages.

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
# Error the plugin reports for a command on an account that does not exist
# (Mosquitto 2.0's dynamic-security plugin).
CLIENT_NOT_FOUND = "Client not found"
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


def validate_sensor_topic(topic_filter: str, prefix: str) -> str:
    """Return a topic filter that a node's role may allow it to read its sensors from.

    Raises:
        ValueError: with the reason, when the filter is not a valid MQTT
            subscription, starts with ``$`` (``$CONTROL`` carries the plugin's
            commands, passwords included), or could match a topic under the
            federation's prefix, which the role keeps the node from reading.
    """
    if not topic_filter or len(topic_filter.encode()) > 65535 or "\0" in topic_filter:
        raise ValueError("not a valid MQTT topic filter")
    if topic_filter.startswith("$"):
        raise ValueError("topics starting with $ are the broker's own")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if ("#" in level and (level != "#" or index != len(levels) - 1)) or (
            "+" in level and level != "+"
        ):
            raise ValueError("wildcards must fill a whole level, and # must be the last")
    for index, level in enumerate(prefix.split("/")):
        if index == len(levels):
            return topic_filter
        if levels[index] == "#":
            break
        if levels[index] not in ("+", level):
            return topic_filter
    raise ValueError(f"could match the federation's topics under {prefix}/")


def node_role_acls(
    prefix: str, node_id: str, sensor_topics: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Return the ACLs of a node's role: its own topics, the coordinator's, and its sensors.

    The plugin checks a role's ACLs from the highest priority down and applies
    the first that matches. The allowed topics come first, and everything else
    is denied last, so that the role confines the node even on a broker whose
    default access allows everything. ``sensor_topics`` are the topic filters
    the node reads its devices from.
    """
    own = f"{prefix}/node/{node_id}"
    coordinator = f"{prefix}/coordinator/#"
    reserved, allowed, denied = 20, 10, 0
    acls = [
        # Only the coordinator writes a node's commands. A node that could would
        # clear or replace its retained quarantine command.
        _acl("publishClientSend", f"{own}/command", reserved, False),
        _acl("publishClientSend", f"{own}/#", allowed, True),
        _acl("subscribePattern", coordinator, allowed, True),
        _acl("subscribePattern", f"{own}/command", allowed, True),
        _acl("publishClientReceive", coordinator, allowed, True),
        _acl("publishClientReceive", f"{own}/command", allowed, True),
    ]
    for topic in sensor_topics:
        acls.append(_acl("subscribePattern", topic, allowed, True))
        acls.append(_acl("publishClientReceive", topic, allowed, True))
    # "#" does not match topics that start with "$", so those are denied apart.
    for acltype in ("publishClientSend", "subscribePattern", "publishClientReceive"):
        for topic in ("#", "$SYS/#", "$share/#", "$CONTROL/#"):
            acls.append(_acl(acltype, topic, denied, False))
    return acls


def _acl(acltype: str, topic: str, priority: int, allow: bool) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "priority": priority, "allow": allow}


def node_client_id(node_id: str) -> str:
    """Return the MQTT client id that an edge node uses unless its configuration sets another."""
    return f"fltrust-edge-{node_id}"


def create_role_command(
    prefix: str, node_id: str, username: str, sensor_topics: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Return the command that creates a node's role, named like its account.

    The plugin refuses it when a role of that name exists, which keeps the
    coordinator from taking over a role that someone else made.
    """
    return {
        "command": "createRole",
        "rolename": username,
        "textdescription": f"fltrust edge node {node_id}",
        "acls": node_role_acls(prefix, node_id, sensor_topics),
    }


def create_client_command(node_id: str, username: str, password: str) -> dict[str, Any]:
    """Return the command that creates a node's account with its role.

    The account accepts only the node's own client id, so that it cannot
    take over another node's session, whose client id the broker would
    otherwise hand to the newest connection.
    """
    return {
        "command": "createClient",
        "username": username,
        "password": password,
        "clientid": node_client_id(node_id),
        "textname": f"fltrust edge node {node_id}",
        "roles": [{"rolename": username}],
    }


def delete_role_command(username: str) -> dict[str, Any]:
    """Return the command that deletes the role named ``username``."""
    return {"command": "deleteRole", "rolename": username}


def encode_commands(commands: list[dict[str, Any]], correlation: str) -> bytes:
    """Return the message that sends ``commands``, the i-th tagged ``<correlation>-<i>``."""
    tagged = [
        {**command, "correlationData": f"{correlation}-{index}"}
        for index, command in enumerate(commands)
    ]
    return json.dumps({"commands": tagged}, separators=(",", ":")).encode()


def client_access_command(username: str, enabled: bool) -> dict[str, Any]:
    """Return the command that enables or disables the broker account ``username``.

    Disabling an account also disconnects every client logged in with it, and
    the broker refuses it until the account is enabled again.
    """
    return {"command": "enableClient" if enabled else "disableClient", "username": username}


def parse_responses(payload: bytes) -> list[DynsecResponse]:
    """Return the responses in a message on ``RESPONSE_TOPIC``, skipping malformed items.

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
        # One malformed item must not hide the valid responses beside it.
        if not isinstance(item, dict) or not isinstance(item.get("command"), str):
            continue
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
