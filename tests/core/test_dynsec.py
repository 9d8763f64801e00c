"""Commands and responses of Mosquitto's dynamic-security plugin."""

from __future__ import annotations

import json

import pytest
from fltrust_core.dynsec import (
    DEFAULT_USERNAME_TEMPLATE,
    DynsecResponse,
    broker_username,
    client_access_command,
    parse_responses,
    validate_username_template,
)


@pytest.mark.parametrize(("enabled", "command"), [(False, "disableClient"), (True, "enableClient")])
def test_client_access_command(enabled: bool, command: str) -> None:
    payload = json.loads(client_access_command("fltrust-kitchen-pi", enabled, "c0ffee"))

    assert payload == {
        "commands": [
            {"command": command, "username": "fltrust-kitchen-pi", "correlationData": "c0ffee"}
        ]
    }


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
        (b'{"responses": [1]}', "without a command"),
        (b'{"responses": [{"error": "x"}]}', "without a command"),
        (b'{"responses": []}' + b" " * 70000, "exceeds"),
    ],
)
def test_parse_responses_rejects(payload: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_responses(payload)
