"""A federation of real edge nodes coordinated by a real Home Assistant.

The checks read what crossed the broker (signed updates and global models)
and what Home Assistant shows (entities, states, its log).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import numpy as np
import pytest
from fltrust_core.protocol import build_envelope, encode
from fltrust_core.security import (
    derive_coordinator_private_key,
    derive_node_key,
    hmac_tag,
    parse_key,
    verify_ed25519,
    verify_hmac,
)
from fltrust_lab.mqtt_capture import CapturedMessage

from .conftest import MIN_ROUNDS, NODE_SLICES, PREFIX, FederationRun, HassSession

MODEL_TOPIC = f"{PREFIX}/coordinator/model"
UPDATE_TOPIC = re.compile(rf"^{re.escape(PREFIX)}/node/([^/]+)/update$")
# Relative tolerance of the hand-computed FedAvg, as a share of the vector's norm.
FEDAVG_RTOL = 1e-9


def global_models(federation: FederationRun) -> list[tuple[CapturedMessage, dict[str, Any]]]:
    """Return each captured aggregated model with its envelope, one per version, oldest first.

    Version 0, the empty model published before the first round, is left out.
    """
    by_version: dict[int, tuple[CapturedMessage, dict[str, Any]]] = {}
    for message in federation.capture.messages(lambda m: m.topic == MODEL_TOPIC):
        envelope = message.json()
        if envelope["body"]["version"] > 0:
            by_version.setdefault(envelope["body"]["version"], (message, envelope))
    return [by_version[version] for version in sorted(by_version)]


def signed_updates(federation: FederationRun) -> list[tuple[CapturedMessage, str, dict[str, Any]]]:
    """Return every captured update whose HMAC verifies with its node's key, in arrival order."""
    key = parse_key(federation.settings.federation_key)
    updates = []
    for message in federation.capture.messages(lambda m: UPDATE_TOPIC.match(m.topic) is not None):
        node_id = UPDATE_TOPIC.match(message.topic).group(1)
        envelope = message.json()
        verify_hmac(derive_node_key(key, node_id), envelope)
        updates.append((message, node_id, envelope))
    return updates


def entity_ids(home_assistant: HassSession, federation: FederationRun) -> dict[str, str]:
    """Return the fltrust entity ids by unique id."""

    async def query() -> list[dict[str, Any]]:
        async with home_assistant.websocket() as websocket:
            return await websocket.entity_registry("fltrust")

    return {entry["unique_id"]: entry["entity_id"] for entry in home_assistant.run(query())}


def state_of(home_assistant: HassSession, entity_id: str) -> dict[str, Any]:
    """Return the state object of an entity, failing the test when it has none."""
    state = home_assistant.run(home_assistant.client.state(entity_id))
    assert state is not None, f"{entity_id} has no state"
    return state


def test_rounds_publish_signed_global_models(federation: FederationRun) -> None:
    public_key = derive_coordinator_private_key(
        parse_key(federation.settings.federation_key)
    ).public_key()
    models = global_models(federation)

    versions = [envelope["body"]["version"] for _, envelope in models]
    rounds = [envelope["body"]["round"] for _, envelope in models]
    assert len(models) >= MIN_ROUNDS
    assert versions == sorted(set(versions))
    assert rounds == sorted(rounds)
    for message, envelope in models:
        verify_ed25519(public_key, envelope)
        assert envelope["sender"] == "coordinator"
        assert message.json()["body"]["kinds"], (
            f"model version {envelope['body']['version']} is empty"
        )


def test_every_node_sends_signed_updates(federation: FederationRun) -> None:
    senders = {node_id for _, node_id, _ in signed_updates(federation)}

    assert senders == set(NODE_SLICES)


def test_global_svm_is_weighted_mean(federation: FederationRun) -> None:
    updates = signed_updates(federation)
    errors: list[tuple[int, str, float, dict[str, float]]] = []
    for model_message, model_envelope in global_models(federation):
        body = model_envelope["body"]
        contributors: dict[str, float] = body["contributors"]
        # The first update each node sent for this round before the model arrived,
        # because the coordinator rejects a second one.
        round_updates: dict[str, dict[str, Any]] = {}
        for message, node_id, envelope in updates:
            if (
                envelope["body"]["round"] == body["round"]
                and message.received_at <= model_message.received_at
            ):
                round_updates.setdefault(node_id, envelope["body"])
        assert set(contributors) <= set(round_updates), (
            f"round {body['round']}: contributors {sorted(contributors)} but updates captured "
            f"only from {sorted(round_updates)}"
        )
        for kind, aggregated in body["kinds"].items():
            senders = sorted(n for n in contributors if kind in round_updates[n]["kinds"])
            vectors = np.array(
                [
                    [
                        *round_updates[n]["kinds"][kind]["svm"]["coef"],
                        round_updates[n]["kinds"][kind]["svm"]["offset"],
                    ]
                    for n in senders
                ]
            )
            # FedAvg weight: the node's published aggregation weight times its sample count.
            weights = np.array(
                [contributors[n] * round_updates[n]["kinds"][kind]["n_samples"] for n in senders]
            )
            expected = weights @ vectors / weights.sum()
            actual = np.array([*aggregated["svm"]["coef"], aggregated["svm"]["offset"]])

            error = np.linalg.norm(actual - expected) / np.linalg.norm(expected)
            errors.append((body["round"], kind, float(error), contributors))
    too_far = [item for item in errors if item[2] > FEDAVG_RTOL]
    assert len(errors) >= MIN_ROUNDS
    assert not too_far, "global SVM differs from the weighted mean of the round's updates:\n" + (
        "\n".join(
            f"round {round_number} kind {kind}: relative error {error:.3g}, weights {weights}"
            for round_number, kind, error, weights in errors
        )
    )


def test_entities_exist_with_sane_states(
    home_assistant: HassSession, federation: FederationRun
) -> None:
    entry_id = federation.entry_id
    entities = entity_ids(home_assistant, federation)
    expected = [f"{entry_id}_round", f"{entry_id}_model_version"]
    for node_id in NODE_SLICES:
        expected += [f"{entry_id}_{node_id}_trust", f"{entry_id}_{node_id}_quarantined"]
        expected += [
            f"{entry_id}_{node_id}_machine_{suffix}"
            for suffix in ("trust", "anomaly", "anomaly_score")
        ]
    missing = [unique_id for unique_id in expected if unique_id not in entities]
    assert not missing, f"missing entities {missing}, registered: {sorted(entities)}"

    round_state = state_of(home_assistant, entities[f"{entry_id}_round"])
    assert int(round_state["state"]) >= MIN_ROUNDS
    assert float(round_state["attributes"]["last_round_duration"]) >= 0
    assert set(round_state["attributes"]["participants"]) <= set(NODE_SLICES)
    assert int(round_state["attributes"]["rejected"]) >= 0
    assert int(round_state["attributes"]["model_version"]) >= MIN_ROUNDS

    for node_id in NODE_SLICES:
        trust = float(state_of(home_assistant, entities[f"{entry_id}_{node_id}_trust"])["state"])
        assert 0 <= trust <= 100, f"{node_id} trust {trust}"
        quarantined = state_of(home_assistant, entities[f"{entry_id}_{node_id}_quarantined"])[
            "state"
        ]
        assert quarantined == "off", f"benign {node_id} quarantined"
        device = f"{entry_id}_{node_id}_machine"
        device_trust = float(state_of(home_assistant, entities[f"{device}_trust"])["state"])
        assert 0 <= device_trust <= 100, f"{node_id} device trust {device_trust}"
        assert state_of(home_assistant, entities[f"{device}_anomaly"])["state"] in ("on", "off")
        score = state_of(home_assistant, entities[f"{device}_anomaly_score"])["state"]
        assert np.isfinite(float(score)), f"{node_id} anomaly score {score}"


def latest_model_version(messages: list[CapturedMessage]) -> int:
    """Return the highest global model version among ``messages``, 0 when there is none."""
    versions = [m.json()["body"]["version"] for m in messages if m.topic == MODEL_TOPIC]
    return max(versions, default=0)


def wait_for_new_model(federation: FederationRun, timeout: float) -> int:
    """Wait for a global model newer than the latest captured one and return its version."""
    current = latest_model_version(federation.capture.messages())
    messages = federation.capture.wait_for(
        lambda messages: latest_model_version(messages) > current, timeout=timeout
    )
    return latest_model_version(messages)


def _wait_for_log(
    home_assistant: HassSession, pattern: re.Pattern[str], timeout: float, since: int = 0
) -> str:
    """Return the first line matching ``pattern`` after the log's first ``since`` characters."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = pattern.search(home_assistant.log(), since)
        if match:
            return match.group(0)
        time.sleep(0.5)
    pytest.fail(
        f"no log line matching {pattern.pattern!r} within {timeout:.0f} s "
        f"in {home_assistant.process.log_path}"
    )


def test_forged_and_replayed_updates_rejected(
    home_assistant: HassSession, federation: FederationRun
) -> None:
    node_id = "e2e-node-1"
    entry_id = federation.entry_id
    trust_entity = entity_ids(home_assistant, federation)[f"{entry_id}_{node_id}_trust"]
    genuine_message, _, genuine = next(
        item for item in reversed(signed_updates(federation)) if item[1] == node_id
    )
    # Trust changes only when a round closes, so publish right after one closed
    # and read the trust again before the next one closes. On a busy machine a
    # round can close in between, so the attempt is repeated.
    round_entity = entity_ids(home_assistant, federation)[f"{entry_id}_round"]
    for _attempt in range(3):
        closed_version = wait_for_new_model(federation, timeout=30)
        # The entities take the closed round's trust a moment after the model goes out.
        deadline = time.monotonic() + 10
        while (
            int(state_of(home_assistant, round_entity)["attributes"]["model_version"])
            < closed_version
        ):
            assert time.monotonic() < deadline, "the round entity's model version did not follow"
            time.sleep(0.1)
        trust_before = float(state_of(home_assistant, trust_entity)["state"])
        log_start = len(home_assistant.log())

        # A forged update with a far higher counter must neither count nor lock
        # the node out: its next genuine update has a lower counter.
        forged = build_envelope("update", node_id, genuine["counter"] + 1_000_000, genuine["body"])
        forged["sig"] = hmac_tag(secrets.token_bytes(32), forged)
        federation.capture.publish(genuine_message.topic, encode(forged))
        federation.capture.publish(genuine_message.topic, genuine_message.payload)

        forged_line = _wait_for_log(
            home_assistant,
            re.compile(
                rf"{entry_id}: rejected a message from known node {node_id}, "
                r"reason bad_signature.*"
            ),
            10,
            log_start,
        )
        replayed_line = _wait_for_log(
            home_assistant,
            re.compile(
                rf"{entry_id}: rejected a message from known node {node_id}, reason replayed.*"
            ),
            10,
            log_start,
        )
        trust_after = float(state_of(home_assistant, trust_entity)["state"])
        version_at_read = latest_model_version(federation.capture.messages())
        if version_at_read == closed_version:
            break
    next_version = wait_for_new_model(federation, timeout=30)
    next_model = next(
        envelope["body"]
        for _, envelope in global_models(federation)
        if envelope["body"]["version"] == next_version
    )

    assert "bad_signature" in forged_line
    assert "replayed" in replayed_line
    assert version_at_read == closed_version, "a round closed before the trust was read again"
    assert trust_after <= trust_before, (
        f"{node_id} trust rose from {trust_before} to {trust_after} "
        "after a forged and a replayed update"
    )
    assert node_id in next_model["contributors"], (
        f"{node_id} missing from the contributors of version {next_version} after the forgery: "
        f"{next_model['contributors']}"
    )
