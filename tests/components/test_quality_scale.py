"""Form of quality_scale.yaml: every rule of the quality scale, each with a valid status."""

from __future__ import annotations

from pathlib import Path

import yaml

QUALITY_SCALE = Path(__file__).parents[2] / "custom_components/fltrust/quality_scale.yaml"

# The rules of Home Assistant's integration quality scale, by tier, as ALL_RULES
# in home-assistant/core's script/hassfest/quality_scale.py lists them.
RULES = {
    "bronze": {
        "action-setup",
        "appropriate-polling",
        "brands",
        "common-modules",
        "config-flow",
        "config-flow-test-coverage",
        "dependency-transparency",
        "docs-actions",
        "docs-conditions",
        "docs-high-level-description",
        "docs-installation-instructions",
        "docs-removal-instructions",
        "docs-triggers",
        "entity-event-setup",
        "entity-unique-id",
        "has-entity-name",
        "runtime-data",
        "test-before-configure",
        "test-before-setup",
        "unique-config-entry",
    },
    "silver": {
        "action-exceptions",
        "config-entry-unloading",
        "docs-configuration-parameters",
        "docs-installation-parameters",
        "entity-unavailable",
        "integration-owner",
        "log-when-unavailable",
        "parallel-updates",
        "reauthentication-flow",
        "test-coverage",
    },
    "gold": {
        "devices",
        "diagnostics",
        "discovery",
        "discovery-update-info",
        "docs-data-update",
        "docs-examples",
        "docs-known-limitations",
        "docs-supported-devices",
        "docs-supported-functions",
        "docs-troubleshooting",
        "docs-use-cases",
        "dynamic-devices",
        "entity-category",
        "entity-device-class",
        "entity-disabled-by-default",
        "entity-translations",
        "exception-translations",
        "icon-translations",
        "reconfiguration-flow",
        "repair-issues",
        "stale-devices",
    },
    "platinum": {"async-dependency", "inject-websession", "strict-typing"},
}


def _rules() -> dict[str, str | dict[str, str]]:
    return yaml.safe_load(QUALITY_SCALE.read_text())["rules"]


def test_every_rule_listed() -> None:
    """Test the file lists each rule of every tier and nothing else."""
    expected = set().union(*RULES.values())

    assert set(_rules()) == expected


def test_rule_statuses_valid() -> None:
    """Test each rule is done, or has a status and a comment as hassfest requires."""
    for name, value in _rules().items():
        if isinstance(value, str):
            assert value in {"done", "todo"}, name
            continue
        assert set(value) == {"status", "comment"}, name
        assert value["status"] in {"done", "exempt", "todo"}, name
        assert value["comment"].strip(), name
