"""Message signing, key derivation, replay protection and rejection reasons.

Every security decision lives here so that it can be audited in one read:

- Uplink messages (node to coordinator) carry an HMAC-SHA256 tag made with the
  node's key. Node keys are derived from the federation key, so the coordinator
  can verify any node that an administrator issued a key to, and a node cannot
  forge another node's messages. Each node key has a generation: replacing a
  node's key moves it to the next generation, which makes a leaked key useless
  without touching the federation key or any other node's key.
- Downlink messages (coordinator to nodes) carry an Ed25519 signature. The key
  pair is derived from the federation key. Nodes hold only the public key, so a
  compromised node cannot forge a round announcement or a global model.
- Each sender's counter must strictly increase and its timestamp must lie within
  a window around the receiver's clock, which rejects replayed messages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

KEY_BYTES = 32
# Highest generation of a node key. No deployment replaces a key this often, so the
# bound only keeps a corrupted stored value from being taken as a generation.
MAX_KEY_GENERATION = 1_000_000
# Maximum length, in characters, of a rejection detail that is logged and stored.
MAX_DETAIL_CHARS = 200
# Clock skew tolerated between a sender and the receiver, in seconds.
DEFAULT_MAX_SKEW = 300.0


class RejectReason(StrEnum):
    """Reason a received message was rejected."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    WRONG_VERSION = "wrong_version"
    SCHEMA = "schema"
    TOPIC_MISMATCH = "topic_mismatch"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED = "replayed"
    STALE = "stale"
    NON_FINITE = "non_finite"
    WRONG_SHAPE = "wrong_shape"
    WRONG_ROUND = "wrong_round"
    LATE = "late"
    QUARANTINED = "quarantined"
    REVOKED_KEY = "revoked_key"
    UNANNOUNCED_DEVICE = "unannounced_device"


# How much one rejection counts against the sender's trust. The round engine
# charges only messages whose signature, counter and timestamp verified, because
# anyone who can publish on a node's topic can send one that fails those checks.
# The severities of reasons that only such checks raise are therefore not applied.
REJECTION_SEVERITY: dict[RejectReason, float] = {
    RejectReason.TOO_LARGE: 0.5,
    RejectReason.MALFORMED: 0.5,
    RejectReason.WRONG_VERSION: 0.25,
    RejectReason.SCHEMA: 0.5,
    RejectReason.TOPIC_MISMATCH: 0.5,
    RejectReason.BAD_SIGNATURE: 0.5,
    RejectReason.REPLAYED: 0.5,
    RejectReason.STALE: 0.25,
    RejectReason.NON_FINITE: 1.0,
    RejectReason.WRONG_SHAPE: 1.0,
    RejectReason.WRONG_ROUND: 0.1,
    # An update for a round that already closed: an honest node that paused or
    # lost its connection for a moment sends one.
    RejectReason.LATE: 0.0,
    RejectReason.QUARANTINED: 0.0,
    # Signed with a node key that was replaced: expected from a node that has not
    # received its new key yet, and from anyone else holding the old one.
    RejectReason.REVOKED_KEY: 0.0,
    # A state for a device that no heartbeat announced: after the coordinator lost
    # its state, a node's next state change may arrive before its next heartbeat.
    RejectReason.UNANNOUNCED_DEVICE: 0.0,
}


def printable_detail(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Return ``text`` with control characters escaped, cut to ``limit`` characters.

    Details of rejections quote what a sender sent. Escaped, they cannot start
    a forged line in a log, and cut, they cannot bloat stored state.
    """
    escaped = "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)
    if len(escaped) <= limit:
        return escaped
    return escaped[: limit - 1] + "…"


class MessageRejected(Exception):
    """Exception raised when a received message fails a check named by ``reason``."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        """Store the reason and a human-readable detail, made safe with ``printable_detail``."""
        detail = printable_detail(detail)
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def generate_federation_key() -> str:
    """Return a new random federation key as 64 hexadecimal characters."""
    return secrets.token_hex(KEY_BYTES)


def parse_key(key_hex: str, label: str = "key") -> bytes:
    """Decode a 32-byte key from hexadecimal, raising ValueError that names ``label``.

    Unlike ``bytes.fromhex``, it rejects whitespace, so that a stored key has one form.
    """
    if isinstance(key_hex, str) and any(char.isspace() for char in key_hex):
        raise ValueError(f"{label} must be hexadecimal without spaces")
    try:
        key = bytes.fromhex(key_hex)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{label} must be hexadecimal, got {len(str(key_hex))} characters"
        ) from err
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"{label} must be {KEY_BYTES * 2} hexadecimal characters, got {len(key_hex)}"
        )
    return key


def derive_node_key(federation_key: bytes, node_id: str, generation: int = 0) -> bytes:
    """Derive the HMAC key of one node and key generation from the federation key.

    Generation 0 is a node's first key. Node ids contain no NUL byte, so the
    input of one id and generation never equals that of another.

    Raises:
        ValueError: when ``generation`` is not between 0 and ``MAX_KEY_GENERATION``.
    """
    if not 0 <= generation <= MAX_KEY_GENERATION:
        raise ValueError(f"invalid key generation {generation}: expected 0 to {MAX_KEY_GENERATION}")
    message = b"fltrust node key\x00" + node_id.encode()
    if generation:
        message += b"\x00" + str(generation).encode()
    return hmac.new(federation_key, message, hashlib.sha256).digest()


def derive_coordinator_private_key(federation_key: bytes) -> Ed25519PrivateKey:
    """Derive the coordinator's Ed25519 signing key from the federation key."""
    seed = hmac.new(federation_key, b"fltrust coordinator signing key", hashlib.sha256).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_hex(private_key: Ed25519PrivateKey) -> str:
    """Return the raw public key of ``private_key`` as hexadecimal."""
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return raw.hex()


def load_public_key(key_hex: str) -> Ed25519PublicKey:
    """Load an Ed25519 public key from hexadecimal, raising ValueError when invalid."""
    return Ed25519PublicKey.from_public_bytes(parse_key(key_hex, "coordinator public key"))


def canonical_bytes(envelope: dict[str, Any]) -> bytes:
    """Serialize a message without its signature in the one form both sides sign.

    NaN and infinity serialize as JSON's non-standard tokens, so a signed message
    that carries them verifies, and its body check then rejects it and charges
    the sender who signed it.
    """
    unsigned = {key: value for key, value in envelope.items() if key != "sig"}
    return json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), allow_nan=True, ensure_ascii=True
    ).encode()


def hmac_tag(node_key: bytes, envelope: dict[str, Any]) -> str:
    """Return the HMAC-SHA256 tag of a message as hexadecimal."""
    return hmac.new(node_key, canonical_bytes(envelope), hashlib.sha256).hexdigest()


def verify_hmac(node_key: bytes, envelope: dict[str, Any]) -> None:
    """Raise MessageRejected unless the message carries a valid HMAC tag."""
    tag = envelope.get("sig")
    if not isinstance(tag, str) or not hmac.compare_digest(tag, hmac_tag(node_key, envelope)):
        raise MessageRejected(RejectReason.BAD_SIGNATURE, "HMAC tag does not match the node key")


def ed25519_signature(private_key: Ed25519PrivateKey, envelope: dict[str, Any]) -> str:
    """Return the Ed25519 signature of a message as hexadecimal."""
    return private_key.sign(canonical_bytes(envelope)).hex()


def verify_ed25519(public_key: Ed25519PublicKey, envelope: dict[str, Any]) -> None:
    """Raise MessageRejected unless the message carries a valid coordinator signature."""
    # Any JSON value: bytes.fromhex raises TypeError for a missing or non-string one.
    signature: Any = envelope.get("sig")
    try:
        public_key.verify(bytes.fromhex(signature), canonical_bytes(envelope))
    except (InvalidSignature, TypeError, ValueError) as err:
        raise MessageRejected(
            RejectReason.BAD_SIGNATURE, "signature does not match the coordinator key"
        ) from err


@dataclass
class ReplayGuard:
    """Last accepted counter per sender, the allowed clock skew and the earliest timestamp.

    The counters are part of the state that must survive a restart: without
    them a recorded message would be accepted again. They are saved some time
    after they change, so a receiver that restores them also sets
    ``not_before`` to the time it restored them. A message sent before then
    may have been accepted after the last save, and is rejected.
    """

    max_skew: float = DEFAULT_MAX_SKEW
    counters: dict[str, int] = field(default_factory=dict)
    not_before: float = -math.inf

    def check(self, sender: str, counter: int, timestamp: float, now: float) -> None:
        """Raise MessageRejected if the message is replayed or outside the time window."""
        if not math.isfinite(timestamp) or abs(timestamp - now) > self.max_skew:
            raise MessageRejected(
                RejectReason.STALE,
                f"timestamp {timestamp} is more than {self.max_skew:.0f} s from the receiver clock",
            )
        if timestamp < self.not_before:
            raise MessageRejected(
                RejectReason.STALE,
                f"timestamp {timestamp} is before the receiver restored its replay counters at "
                f"{self.not_before}; check the sender's clock if this repeats",
            )
        last = self.counters.get(sender)
        if last is not None and counter <= last:
            raise MessageRejected(
                RejectReason.REPLAYED, f"counter {counter} is not above the last accepted {last}"
            )

    def accept(self, sender: str, counter: int) -> None:
        """Record ``counter`` as the last accepted one of ``sender``."""
        self.counters[sender] = counter
