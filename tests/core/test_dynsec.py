"""Commands and responses of Mosquitto's dynamic-security plugin."""

from __future__ import annotations

import json

import pytest
from fltrust_core.dynsec import (
    DEFAULT_USERNAME_TEMPLATE,
    DynsecResponse,
    broker_username,
    client_access_command,
    create_client_command,
    create_role_command,
    delete_role_command,
    encode_commands,
    node_role_acls,
    parse_responses,
    validate_sensor_topic,
    validate_username_template,
)


@pytest.mark.parametrize(("enabled", "command"), [(False, "disableClient"), (True, "enableClient")])
def test_client_access_command(enabled: bool, command: str) -> None:
    payload = json.loads(
        encode_commands([client_access_command("fltrust-kitchen-pi", enabled)], "c0ffee")
    )

    assert payload == {
        "commands": [
            {"command": command, "username": "fltrust-kitchen-pi", "correlationData": "c0ffee-0"}
        ]
    }


def _matches(pattern: str, topic: str) -> bool:
    """Return whether an MQTT topic filter matches a topic name."""
    pattern_levels, topic_levels = pattern.split("/"), topic.split("/")
    for index, level in enumerate(pattern_levels):
        if level == "#":
            return True
        if index >= len(topic_levels) or level not in ("+", topic_levels[index]):
            return False
    return len(pattern_levels) == len(topic_levels)


def test_role_confines_node_to_its_topics() -> None:
    acls = node_role_acls("fltrust/home", "kitchen-pi", ("zigbee2mqtt/kitchen",))
    by_priority = sorted(acls, key=lambda acl: -acl["priority"])

    def allowed(acltype: str, topic: str) -> bool:
        # The plugin applies the first matching ACL from the highest priority down.
        for acl in by_priority:
            if acl["acltype"] == acltype and _matches(acl["topic"], topic):
                return acl["allow"]
        return True

    assert allowed("publishClientSend", "fltrust/home/node/kitchen-pi/update")
    assert not allowed("publishClientSend", "fltrust/home/node/kitchen-pi/command")
    assert not allowed("publishClientSend", "fltrust/home/node/hall-pi/update")
    assert not allowed("publishClientSend", "fltrust/home/coordinator/model")
    assert allowed("subscribePattern", "fltrust/home/coordinator/model")
    assert allowed("subscribePattern", "fltrust/home/node/kitchen-pi/command")
    assert not allowed("subscribePattern", "fltrust/home/node/hall-pi/state")
    assert allowed("subscribePattern", "zigbee2mqtt/kitchen")
    assert allowed("publishClientReceive", "zigbee2mqtt/kitchen")
    assert not allowed("publishClientReceive", "fltrust/home/node/hall-pi/command")
    # Outside the federation too, whatever the broker's default access.
    assert not allowed("publishClientSend", "homeassistant/lock/door/config")
    assert not allowed("subscribePattern", "#")
    assert not allowed("subscribePattern", "fltrust/other/coordinator/model")
    assert not allowed("publishClientReceive", "zigbee2mqtt/hall")


def test_account_commands() -> None:
    role = create_role_command("p", "n1", "fltrust-n1", ("s/t",))
    client = create_client_command("n1", "fltrust-n1", "secret")

    assert role["command"] == "createRole"
    assert role["rolename"] == "fltrust-n1"
    assert role["acls"] == node_role_acls("p", "n1", ("s/t",))
    assert client["command"] == "createClient"
    assert client["username"] == "fltrust-n1"
    assert client["password"] == "secret"
    assert client["clientid"] == "fltrust-edge-n1"
    assert client["roles"] == [{"rolename": "fltrust-n1"}]
    assert delete_role_command("fltrust-n1") == {"command": "deleteRole", "rolename": "fltrust-n1"}


@pytest.mark.parametrize(
    "topic",
    ["zigbee2mqtt/kitchen", "home/+/temperature", "sensors/#", "fltrust", "fltrust/other/#"],
)
def test_valid_sensor_topics(topic: str) -> None:
    assert validate_sensor_topic(topic, "fltrust/home") == topic


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "not a valid"),
        ("a\0b", "not a valid"),
        ("$CONTROL/dynamic-security/#", "broker's own"),
        ("$SYS/#", "broker's own"),
        ("a/#/b", "wildcards"),
        ("a/b#", "wildcards"),
        ("a/x+/b", "wildcards"),
        ("#", "federation's topics"),
        ("fltrust/#", "federation's topics"),
        ("+/home/node/hall-pi/state", "federation's topics"),
        ("fltrust/home/node/+/command", "federation's topics"),
    ],
)
def test_invalid_sensor_topics(topic: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_sensor_topic(topic, "fltrust/home")


@pytest.mark.parametrize(
    "template", [DEFAULT_USERNAME_TEMPLATE, "{node_id}", "home.{node_id}@plant:1", "x_{node_id}-y"]
)
def test_valid_templates(template: str) -> None:
    assert validate_username_template(template) == template
    assert "kitchen-pi" in broker_username(template, "kitchen-pi")


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("fltrust", "exactly once"),
        ("{node_id}{node_id}", "exactly once"),
        ("{node}", "exactly once"),
        ("fltrust/{node_id}", "may hold only"),
        ("a b{node_id}", "may hold only"),
        ("{node_id}+", "may hold only"),
        ("{node_id}{x}", "may hold only"),
        ("x" * 200 + "{node_id}", "longer than"),
    ],
)
def test_invalid_templates(template: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_username_template(template)


def test_default_username() -> None:
    assert broker_username(DEFAULT_USERNAME_TEMPLATE, "kitchen-pi") == "fltrust-kitchen-pi"


def test_parse_responses() -> None:
    payload = json.dumps(
        {
            "responses": [
                {"command": "disableClient", "correlationData": "a1"},
                {"command": "enableClient", "error": "Client not found", "correlationData": "b2"},
                {"command": "createClient"},
                1,
                {"error": "no command name"},
            ]
        }
    ).encode()

    assert parse_responses(payload) == [
        DynsecResponse("disableClient", "a1", None),
        DynsecResponse("enableClient", "b2", "Client not found"),
        DynsecResponse("createClient", None, None),
    ]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff", "not JSON"),
        (b"not json", "not JSON"),
        (b"[]", "no list"),
        (b'{"responses": {}}', "no list"),
        (b'{"responses": []}' + b" " * 70000, "exceeds"),
    ],
)
def test_parse_responses_rejects(payload: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_responses(payload)
