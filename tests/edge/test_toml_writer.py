"""TOML output of configuration documents, read back with the standard library."""

import tomllib

import pytest
from fltrust_edge.toml_writer import dumps_toml


def test_document_round_trips():
    document = {
        "node_id": "node-1",
        "mqtt": {"host": "127.0.0.1", "port": 1883, "tls": False},
        "detection": {"target_fpr": 1e-05, "heartbeat_interval": 30.0, "extra_features": []},
        "devices": [
            {
                "id": "a",
                "features": ["t", "h"],
                "source": {"type": "mqtt", "topics": [{"topic": "x/y"}, {"topic": "x/z"}]},
            },
            {"id": "b", "features": ["t"], "source": {"type": "mqtt", "topics": [{"topic": "q"}]}},
        ],
    }

    assert tomllib.loads(dumps_toml(document)) == document


@pytest.mark.parametrize(
    "text",
    [
        'quote " and backslash \\',
        "line\nbreak, tab\t, carriage return\r",
        "control \x01 \x1f and delete \x7f",
        "non-ASCII: Küche, 温度, emoji \U0001f321",
        "",
    ],
)
def test_strings_round_trip(text):
    document = {"value": text, "list": [text, text], "table": {"value": text}}

    assert tomllib.loads(dumps_toml(document)) == document


def test_keys_that_need_quotes():
    document = {"a key": 1, "table.with.dots": {"ü": True}}

    assert tomllib.loads(dumps_toml(document)) == document


def test_table_keys_come_before_sub_tables():
    text = dumps_toml({"table": {"sub": {"x": 1}, "y": 2}})

    assert text == "[table]\ny = 2\n\n[table.sub]\nx = 1\n"


def test_unsupported_value_raises():
    with pytest.raises(TypeError, match="cannot write a value of type NoneType"):
        dumps_toml({"value": None})
