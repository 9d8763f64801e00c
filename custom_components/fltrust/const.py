"""Constants of the fltrust integration."""

from __future__ import annotations

import logging
from typing import Final

DOMAIN: Final = "fltrust"
LOGGER = logging.getLogger(__package__)

CONF_TOPIC_PREFIX: Final = "topic_prefix"
CONF_FEDERATION_KEY: Final = "federation_key"
CONF_ROUND_INTERVAL: Final = "round_interval"
CONF_ROUND_TIMEOUT: Final = "round_timeout"
CONF_MIN_NODES: Final = "min_nodes"
CONF_REAUTH_THRESHOLD: Final = "reauth_threshold"
CONF_QUARANTINE_THRESHOLD: Final = "quarantine_threshold"
CONF_BROKER_ACCESS: Final = "broker_access"
CONF_BROKER_USERNAME: Final = "broker_username"
# Settings kept in a config entry's options. They can change while the edge nodes
# run; the topic prefix and the federation key in its data cannot.
ROUND_SETTINGS: Final = (
    CONF_ROUND_INTERVAL,
    CONF_ROUND_TIMEOUT,
    CONF_MIN_NODES,
    CONF_REAUTH_THRESHOLD,
    CONF_QUARANTINE_THRESHOLD,
)
# Entry data the coordinator writes: whether the federation saved its state
# once, whether a person chose to start over without it, and the generation
# of each replaced node key.
CONF_STATE_SAVED: Final = "state_saved"
CONF_START_OVER: Final = "start_over"
CONF_KEY_GENERATIONS: Final = "key_generations"
CONF_NODE_ID: Final = "node_id"
CONF_CONFIG_ENTRY_ID: Final = "config_entry_id"

DEFAULT_NAME: Final = "fltrust"
DEFAULT_TOPIC_PREFIX: Final = "fltrust"
DEFAULT_ROUND_INTERVAL: Final = 60
DEFAULT_ROUND_TIMEOUT: Final = 30
DEFAULT_MIN_NODES: Final = 2
DEFAULT_REAUTH_THRESHOLD: Final = 60.0
DEFAULT_QUARANTINE_THRESHOLD: Final = 30.0

MIN_ROUND_INTERVAL: Final = 5
MAX_ROUND_INTERVAL: Final = 86400
# A node leaves the re-authentication status only above the threshold plus the
# trust hysteresis (5 points by default), so the threshold must leave that room below 100.
MAX_REAUTH_THRESHOLD: Final = 95.0

# A node counts as connected while its last message is at most this many of its
# heartbeat intervals old.
CONNECTED_HEARTBEATS: Final = 3

EVENT_TRUST_DROPPED: Final = f"{DOMAIN}_trust_dropped"
EVENT_QUARANTINED: Final = f"{DOMAIN}_quarantined"
EVENT_RELEASED: Final = f"{DOMAIN}_released"

SERVICE_RELEASE: Final = "release"
SERVICE_ISSUE_NODE_KEY: Final = "issue_node_key"
SERVICE_REPLACE_NODE_KEY: Final = "replace_node_key"
SERVICE_CREATE_NODE_ACCOUNT: Final = "create_node_account"
CONF_SENSOR_TOPICS: Final = "sensor_topics"

STORAGE_VERSION: Final = 1
BACKUP_SUFFIX: Final = "backup"
# Seconds between a change of the federation state and writing it to storage.
SAVE_DELAY: Final = 10.0
# Seconds between copies of the state to its backup file, which a start uses when
# the main file is missing or invalid. The last save before a stop is copied too.
BACKUP_INTERVAL: Final = 300.0

NODE_MODEL: Final = "Edge node"
FEDERATION_MODEL: Final = "Federation coordinator"
MANUFACTURER: Final = "fltrust"
