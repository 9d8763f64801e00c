"""The MQTT wire protocol shared by the coordinator and the edge nodes.

Every message is a JSON object (an envelope)::

    {"v": 1, "type": "update", "sender": "node-1", "counter": 17,
     "ts": 1733340000.0, "body": {...}, "sig": "<hex>"}

``v`` is the protocol version, ``counter`` strictly increases per sender and
``ts`` is the sender's Unix time; both protect against replay. ``sig`` covers
every other field (see ``security``). Topics, below a configurable prefix:

==================================================  =========  ============
topic                                               direction  type
==================================================  =========  ============
``<prefix>/node/<node>/heartbeat``                  uplink     heartbeat
``<prefix>/node/<node>/device/<device>/state``      uplink     state
``<prefix>/node/<node>/update``                     uplink     update
``<prefix>/node/<node>/auth``                       uplink     auth
``<prefix>/coordinator/round``                      downlink   round
``<prefix>/coordinator/model`` (retained)           downlink   model
``<prefix>/node/<node>/command`` (retained)         downlink   command
==================================================  =========  ============

Each ``parse_*`` function validates one body and raises ``MessageRejected``
with a reason from ``security.RejectReason``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from . import PROTOCOL_VERSION
from .model import FeatureStats, FederationParams, GlobalModel, KindModel
from .security import MessageRejected, RejectReason

MAX_PAYLOAD_BYTES = 512 * 1024
MAX_DEVICES = 64
MAX_FEATURES = 64
MAX_RFF_COMPONENTS = 2048
MAX_CLUSTERS = 64
MAX_KINDS = 16
# Lists and objects inside one another; the deepest valid message, an update's
# centroid rows, uses 6.
MAX_DEPTH = 16
# Samples behind one update; far above any node's training buffer, so a larger
# claim can only be an attempt to dominate the sample-weighted average.
MAX_SAMPLES = 10_000_000
# Largest magnitude of a model parameter or statistic. Far above any sensor
# reading's sums of squares over MAX_SAMPLES rows, and far enough below the
# float range that the aggregation's weighted sums and squared distances
# cannot overflow to infinity.
MAX_MAGNITUDE = 1e100
# Largest integer a message may carry, in any field. Integers up to 2**53 are
# exact as floats and fit the 64-bit integers of Home Assistant's storage.
# Counters taken from the clock in microseconds stay below it until 2255.
MAX_INTEGER = 2**53
# Bounds of an edge node's heartbeat interval in seconds. Every heartbeat is
# followed by one state message per device, so a shorter interval floods the
# broker. The coordinator counts a node as connected for a few intervals after
# its last message, and computes traffic rates over at least the lower bound.
MIN_HEARTBEAT_INTERVAL = 1.0
MAX_HEARTBEAT_INTERVAL = 3600.0

COORDINATOR_SENDER = "coordinator"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# A federation epoch: lowercase hexadecimal, as ``new_epoch`` draws it.
EPOCH_PATTERN = re.compile(r"^[0-9a-f]{1,64}$")
# The model of a regime of a kind: "pump.1" is the first regime of kind
# "pump". Device kinds are ids and cannot hold a dot, so no kind takes such a
# name, and edge nodes from before regimes skip these models.
REGIME_SEPARATOR = "."
MAX_REGIMES = 8
REGIME_INDEX_PATTERN = re.compile(r"[1-9][0-9]{0,2}")
UPLINK_TYPES = ("heartbeat", "state", "update", "auth")
COMMAND_ACTIONS = ("quarantine", "release", "reauthenticate")


def is_valid_id(value: object) -> TypeGuard[str]:
    """Return whether ``value`` is a valid node, device or kind id; "coordinator" is reserved."""
    return (
        isinstance(value, str)
        and ID_PATTERN.fullmatch(value) is not None
        and value != COORDINATOR_SENDER
    )


def regime_key(kind: str, index: int) -> str:
    """Return the model key of regime ``index`` (from 1) of ``kind``."""
    return f"{kind}{REGIME_SEPARATOR}{index}"


def split_model_key(key: object) -> tuple[str, int] | None:
    """Return (kind, regime index) of a model key, or None if it is invalid.

    The index is 0 for a kind itself.
    """
    if not isinstance(key, str):
        return None
    kind, separator, index = key.partition(REGIME_SEPARATOR)
    if not is_valid_id(kind):
        return None
    if not separator:
        return kind, 0
    if REGIME_INDEX_PATTERN.fullmatch(index) is None or int(index) > MAX_REGIMES:
        return None
    return kind, int(index)


def regime_index(key: str) -> int:
    """Return the regime index of a model key: 0 for a kind itself or an invalid key."""
    parsed = split_model_key(key)
    return 0 if parsed is None else parsed[1]


def base_kind(key: str) -> str:
    """Return the device kind of a model key: ``kind`` for a kind or any of its regimes."""
    return key.partition(REGIME_SEPARATOR)[0]


# Topics.


def node_topic(prefix: str, node_id: str, message_type: str) -> str:
    """Return the uplink topic of one message type of a node."""
    return f"{prefix}/node/{node_id}/{message_type}"


def state_topic(prefix: str, node_id: str, device_id: str) -> str:
    """Return the topic on which a node publishes one device's anomaly state."""
    return f"{prefix}/node/{node_id}/device/{device_id}/state"


def command_topic(prefix: str, node_id: str) -> str:
    """Return the topic on which the coordinator sends commands to a node."""
    return f"{prefix}/node/{node_id}/command"


def round_topic(prefix: str) -> str:
    """Return the topic of round announcements."""
    return f"{prefix}/coordinator/round"


def model_topic(prefix: str) -> str:
    """Return the topic of the retained global model."""
    return f"{prefix}/coordinator/model"


def uplink_subscription(prefix: str) -> str:
    """Return the wildcard that matches every uplink topic."""
    return f"{prefix}/node/#"


def parse_uplink_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """Return (node id, message type) for an uplink topic, or None for any other topic."""
    if not topic.startswith(prefix + "/node/"):
        return None
    parts = topic[len(prefix) + 6 :].split("/")
    if len(parts) == 2 and parts[1] in ("heartbeat", "update", "auth"):
        return parts[0], parts[1]
    if len(parts) == 4 and parts[1] == "device" and parts[3] == "state":
        return parts[0], "state"
    return None


# Envelopes.


@dataclass(frozen=True)
class Envelope:
    """A decoded message whose envelope fields passed validation."""

    version: int
    type: str
    sender: str
    counter: int
    timestamp: float
    body: dict[str, Any]
    raw: dict[str, Any]


def build_envelope(
    message_type: str, sender: str, counter: int, body: dict[str, Any], now: float | None = None
) -> dict[str, Any]:
    """Return an unsigned envelope; the caller adds ``sig``."""
    return {
        "v": PROTOCOL_VERSION,
        "type": message_type,
        "sender": sender,
        "counter": counter,
        "ts": time.time() if now is None else now,
        "body": body,
    }


def encode(envelope: dict[str, Any]) -> bytes:
    """Serialize a signed envelope for publishing."""
    return json.dumps(envelope, separators=(",", ":"), allow_nan=False).encode()


def decode_envelope(payload: bytes | str) -> Envelope:
    """Parse and validate the envelope of a payload, leaving the body unchecked.

    Raises:
        MessageRejected: with TOO_LARGE, MALFORMED, WRONG_VERSION or SCHEMA.
    """
    size = len(payload.encode() if isinstance(payload, str) else payload)
    if size > MAX_PAYLOAD_BYTES:
        raise MessageRejected(
            RejectReason.TOO_LARGE, f"payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES}"
        )
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as err:
        raise MessageRejected(RejectReason.MALFORMED, f"payload is not JSON: {err}") from err
    except RecursionError as err:
        raise MessageRejected(RejectReason.MALFORMED, "payload nests too deeply") from err
    if not isinstance(data, dict):
        raise MessageRejected(RejectReason.MALFORMED, "payload is not a JSON object")
    if _exceeds_depth(data, MAX_DEPTH):
        raise MessageRejected(
            RejectReason.MALFORMED, f"payload nests deeper than {MAX_DEPTH} levels"
        )
    version = data.get("v")
    if version != PROTOCOL_VERSION:
        raise MessageRejected(
            RejectReason.WRONG_VERSION,
            f"protocol version {version!r} is not the supported {PROTOCOL_VERSION}",
        )
    message_type = data.get("type")
    sender = data.get("sender")
    counter = data.get("counter")
    timestamp = data.get("ts")
    body = data.get("body")
    if not isinstance(message_type, str):
        raise MessageRejected(RejectReason.SCHEMA, "envelope field 'type' is missing")
    if not (is_valid_id(sender) or sender == COORDINATOR_SENDER):
        raise MessageRejected(
            RejectReason.SCHEMA, f"envelope field 'sender' is invalid: {sender!r}"
        )
    # A counter above MAX_INTEGER would not fit the receiver's stored state. It
    # is rejected before the signature check, so the sender is not charged: a
    # charge would be repeated by anyone replaying the message.
    if not _is_int(counter) or counter < 0:
        raise MessageRejected(
            RejectReason.SCHEMA, f"envelope field 'counter' is invalid: {counter!r:.40}"
        )
    if not _is_number(timestamp):
        raise MessageRejected(
            RejectReason.SCHEMA, f"envelope field 'ts' is invalid: {timestamp!r:.40}"
        )
    if not isinstance(body, dict):
        raise MessageRejected(RejectReason.SCHEMA, "envelope field 'body' is not an object")
    if not isinstance(data.get("sig"), str):
        raise MessageRejected(RejectReason.SCHEMA, "envelope field 'sig' is missing")
    return Envelope(
        version=version,
        type=message_type,
        sender=sender,
        counter=counter,
        timestamp=float(timestamp),
        body=body,
        raw=data,
    )


# Validation helpers.


def _exceeds_depth(data: object, limit: int) -> bool:
    """Return whether ``data`` nests lists and objects deeper than ``limit``.

    The walk uses an explicit stack, because serializing a deeply nested value
    again for the signature check would otherwise hit the recursion limit.
    """
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children: Iterable[object]
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INTEGER


def _is_number(value: object) -> TypeGuard[int | float]:
    return _is_int(value) or isinstance(value, float)


def _all_numbers(value: list[Any]) -> bool:
    """Return whether every leaf of the nested lists ``value`` passes ``_is_number``.

    NumPy would read true and false as 1 and 0, and integers too large for a
    float would raise OverflowError while converting.
    """
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif not _is_number(item):
            return False
    return True


def _field(body: dict[str, Any], key: str, path: str) -> Any:
    if key not in body:
        raise MessageRejected(RejectReason.SCHEMA, f"field '{path}{key}' is missing")
    return body[key]


def _int_field(body: dict[str, Any], key: str, path: str = "", minimum: int = 0) -> int:
    value = _field(body, key, path)
    if not _is_int(value) or value < minimum:
        raise MessageRejected(
            RejectReason.SCHEMA,
            f"field '{path}{key}' must be an integer from {minimum} to {MAX_INTEGER}, "
            f"got {value!r:.40}",
        )
    return value


def _float_field(body: dict[str, Any], key: str, path: str = "") -> float:
    value = _field(body, key, path)
    if not _is_number(value):
        raise MessageRejected(
            RejectReason.SCHEMA,
            f"field '{path}{key}' must be a number, integers within {MAX_INTEGER}, "
            f"got {value!r:.40}",
        )
    if not math.isfinite(value):
        raise MessageRejected(RejectReason.NON_FINITE, f"field '{path}{key}' is {value}")
    return float(value)


def _array_field(
    body: dict[str, Any], key: str, path: str, shape: tuple[int | None, ...]
) -> np.ndarray:
    """Return a finite float array of the given shape; None in ``shape`` means any size >= 1."""
    value = _field(body, key, path)
    if not isinstance(value, list):
        raise MessageRejected(RejectReason.SCHEMA, f"field '{path}{key}' must be a list")
    if not _all_numbers(value):
        raise MessageRejected(
            RejectReason.SCHEMA,
            f"field '{path}{key}' must contain only numbers, integers within {MAX_INTEGER}",
        )
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as err:
        raise MessageRejected(
            RejectReason.SCHEMA, f"field '{path}{key}' must be a regular array of numbers"
        ) from err
    if array.ndim != len(shape) or any(
        (want is not None and got != want) or got == 0
        for got, want in zip(array.shape, shape, strict=True)
    ):
        expected = "x".join("n" if want is None else str(want) for want in shape)
        raise MessageRejected(
            RejectReason.WRONG_SHAPE,
            f"field '{path}{key}' has shape {array.shape}, expected {expected}",
        )
    if not np.all(np.isfinite(array)):
        raise MessageRejected(
            RejectReason.NON_FINITE, f"field '{path}{key}' contains NaN or infinity"
        )
    return array


def _id_field(body: dict[str, Any], key: str, path: str = "") -> str:
    value = _field(body, key, path)
    if not is_valid_id(value):
        raise MessageRejected(
            RejectReason.SCHEMA,
            f"field '{path}{key}' must match {ID_PATTERN.pattern}, got {value!r}",
        )
    return value


# Uplink bodies.


@dataclass(frozen=True)
class DeviceInfo:
    """A device that a node watches."""

    device_id: str
    kind: str
    name: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class Heartbeat:
    """A node's periodic report: its devices and the behaviour figures trust needs.

    The counts cover the ``interval`` seconds since the previous heartbeat.
    """

    devices: tuple[DeviceInfo, ...]
    interval: float
    samples: int
    anomalies: int
    peers_known: int
    peers_unknown: int
    traffic_bytes: int
    model_version: int
    software: str


def heartbeat_body(heartbeat: Heartbeat) -> dict[str, Any]:
    """Return the wire body of a heartbeat."""
    return {
        "devices": [
            {"id": d.device_id, "kind": d.kind, "name": d.name, "features": list(d.features)}
            for d in heartbeat.devices
        ],
        "interval": heartbeat.interval,
        "samples": heartbeat.samples,
        "anomalies": heartbeat.anomalies,
        "peers_known": heartbeat.peers_known,
        "peers_unknown": heartbeat.peers_unknown,
        "traffic_bytes": heartbeat.traffic_bytes,
        "model_version": heartbeat.model_version,
        "software": heartbeat.software,
    }


def parse_heartbeat(body: dict[str, Any]) -> Heartbeat:
    """Validate a heartbeat body."""
    raw_devices = _field(body, "devices", "")
    if not isinstance(raw_devices, list) or len(raw_devices) > MAX_DEVICES:
        raise MessageRejected(
            RejectReason.SCHEMA, f"field 'devices' must be a list of at most {MAX_DEVICES}"
        )
    devices = []
    for index, raw in enumerate(raw_devices):
        path = f"devices[{index}]."
        if not isinstance(raw, dict):
            raise MessageRejected(RejectReason.SCHEMA, f"field '{path[:-1]}' must be an object")
        name = raw.get("name", "")
        features = _field(raw, "features", path)
        if not isinstance(name, str) or len(name) > 100:
            raise MessageRejected(RejectReason.SCHEMA, f"field '{path}name' must be a short string")
        if (
            not isinstance(features, list)
            or not 1 <= len(features) <= MAX_FEATURES
            or not all(isinstance(f, str) and len(f) <= 64 for f in features)
        ):
            raise MessageRejected(
                RejectReason.SCHEMA, f"field '{path}features' must list 1 to {MAX_FEATURES} names"
            )
        devices.append(
            DeviceInfo(
                device_id=_id_field(raw, "id", path),
                kind=_id_field(raw, "kind", path),
                name=name,
                features=tuple(features),
            )
        )
    if len({d.device_id for d in devices}) != len(devices):
        raise MessageRejected(RejectReason.SCHEMA, "field 'devices' lists a device id twice")
    interval = _float_field(body, "interval")
    if interval <= 0:
        raise MessageRejected(RejectReason.SCHEMA, "field 'interval' must be positive")
    software = body.get("software", "")
    return Heartbeat(
        devices=tuple(devices),
        interval=interval,
        samples=_int_field(body, "samples"),
        anomalies=_int_field(body, "anomalies"),
        peers_known=_int_field(body, "peers_known"),
        peers_unknown=_int_field(body, "peers_unknown"),
        traffic_bytes=_int_field(body, "traffic_bytes"),
        model_version=_int_field(body, "model_version"),
        software=software[:64] if isinstance(software, str) else "",
    )


@dataclass(frozen=True)
class DeviceState:
    """A device's current anomaly state as reported by its node."""

    device_id: str
    anomaly: bool
    score: float
    threshold: float


def state_body(state: DeviceState) -> dict[str, Any]:
    """Return the wire body of a device state."""
    return {
        "device": state.device_id,
        "anomaly": state.anomaly,
        "score": state.score,
        "threshold": state.threshold,
    }


def parse_state(body: dict[str, Any]) -> DeviceState:
    """Validate a device state body."""
    anomaly = _field(body, "anomaly", "")
    if not isinstance(anomaly, bool):
        raise MessageRejected(RejectReason.SCHEMA, "field 'anomaly' must be true or false")
    return DeviceState(
        device_id=_id_field(body, "device"),
        anomaly=anomaly,
        score=_float_field(body, "score"),
        threshold=_float_field(body, "threshold"),
    )


@dataclass(frozen=True)
class ModelUpdate:
    """A node's locally trained parameters for one round, one model per device kind."""

    round: int
    base_version: int
    kinds: dict[str, KindModel]


def update_body(update: ModelUpdate) -> dict[str, Any]:
    """Return the wire body of a model update."""
    return {
        "round": update.round,
        "base_version": update.base_version,
        "kinds": {kind: model.to_json() for kind, model in sorted(update.kinds.items())},
    }


def parse_kind_model(
    data: object,
    path: str,
    params: FederationParams,
    n_features: int | None,
    max_samples: int | None = MAX_SAMPLES,
) -> KindModel:
    """Validate one kind's parameters against the federation's shapes.

    ``n_features`` is the feature count the federation already uses for this
    kind, or None when the kind is new. ``max_samples`` caps ``n_samples``; a
    global model sums many nodes' samples, so its parser passes None.
    """
    if not isinstance(data, dict):
        raise MessageRejected(RejectReason.SCHEMA, f"field '{path}' must be an object")
    n_samples = _int_field(data, "n_samples", path + ".", minimum=1)
    if max_samples is not None and n_samples > max_samples:
        raise MessageRejected(
            RejectReason.SCHEMA, f"field '{path}.n_samples' is {n_samples}, above {max_samples}"
        )
    stats = _field(data, "stats", path + ".")
    svm = _field(data, "svm", path + ".")
    kmeans = _field(data, "kmeans", path + ".")
    for name, value in (("stats", stats), ("svm", svm), ("kmeans", kmeans)):
        if not isinstance(value, dict):
            raise MessageRejected(RejectReason.SCHEMA, f"field '{path}.{name}' must be an object")
    centers = _array_field(kmeans, "centers", f"{path}.kmeans.", (params.n_clusters, n_features))
    if centers.shape[1] > MAX_FEATURES:
        raise MessageRejected(
            RejectReason.WRONG_SHAPE,
            f"field '{path}.kmeans.centers' has more than {MAX_FEATURES} features",
        )
    features = centers.shape[1]
    counts = _array_field(kmeans, "counts", f"{path}.kmeans.", (params.n_clusters,))
    total = _array_field(stats, "sum", f"{path}.stats.", (features,))
    total_sq = _array_field(stats, "sumsq", f"{path}.stats.", (features,))
    count = _float_field(stats, "count", f"{path}.stats.")
    coef = _array_field(svm, "coef", f"{path}.svm.", (params.rff_components,))
    offset = _float_field(svm, "offset", f"{path}.svm.")
    for name, values in (
        ("kmeans.centers", centers),
        ("stats.sum", total),
        ("stats.sumsq", total_sq),
        ("svm.coef", coef),
        ("svm.offset", np.array([offset])),
    ):
        if np.any(np.abs(values) > MAX_MAGNITUDE):
            raise MessageRejected(
                RejectReason.SCHEMA,
                f"field '{path}.{name}' has values beyond ±{MAX_MAGNITUDE:g}",
            )
    if np.any(counts < 0) or count < 1 or np.any(total_sq < 0):
        raise MessageRejected(
            RejectReason.SCHEMA, f"field '{path}' has negative counts or sums of squares"
        )
    # Every count describes the same training samples, so none may exceed n_samples.
    if count > n_samples or counts.sum() > n_samples * (1 + 1e-9):
        raise MessageRejected(
            RejectReason.SCHEMA,
            f"field '{path}' counts {count:g} statistics samples and {counts.sum():g} "
            f"centroid samples, more than its n_samples {n_samples}",
        )
    # Sums of squares below the squared sums over the count mean a negative variance.
    if np.any(total_sq * count < total * total * (1 - 1e-9) - 1e-9):
        raise MessageRejected(
            RejectReason.SCHEMA, f"field '{path}.stats' implies a negative variance"
        )
    return KindModel(
        stats=FeatureStats(count=count, total=total, total_sq=total_sq),
        svm_coef=coef,
        svm_offset=offset,
        centers=centers,
        counts=counts,
        n_samples=n_samples,
    )


def parse_update(
    body: dict[str, Any], params: FederationParams, n_features_by_kind: dict[str, int]
) -> ModelUpdate:
    """Validate a model update against the federation's parameters and known shapes."""
    kinds = _field(body, "kinds", "")
    if not isinstance(kinds, dict) or not 1 <= len(kinds) <= MAX_KINDS:
        raise MessageRejected(
            RejectReason.SCHEMA, f"field 'kinds' must map 1 to {MAX_KINDS} kinds to parameters"
        )
    parsed = {}
    for kind, data in kinds.items():
        if split_model_key(kind) is None:
            raise MessageRejected(
                RejectReason.SCHEMA,
                f"kind {kind!r} is neither a valid id nor a regime of one "
                f"(a valid id, '{REGIME_SEPARATOR}' and a number from 1 to {MAX_REGIMES})",
            )
        parsed[kind] = parse_kind_model(data, f"kinds.{kind}", params, n_features_by_kind.get(kind))
    regimes_per_kind = Counter(base_kind(kind) for kind in parsed)
    doubled = sorted(kind for kind, count in regimes_per_kind.items() if count > 1)
    if doubled:
        # A node trains one model per kind, on the rows of all its devices of that kind.
        raise MessageRejected(
            RejectReason.SCHEMA,
            f"more than one model for kind {', '.join(doubled)}; send one per kind",
        )
    return ModelUpdate(
        round=_int_field(body, "round", minimum=1),
        base_version=_int_field(body, "base_version"),
        kinds=parsed,
    )


def parse_auth(body: dict[str, Any]) -> str:
    """Validate an authentication response and return its nonce."""
    nonce = _field(body, "nonce", "")
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
        raise MessageRejected(
            RejectReason.SCHEMA, "field 'nonce' must be a string of 16 to 128 characters"
        )
    return nonce


# Downlink bodies.


@dataclass(frozen=True)
class RoundAnnouncement:
    """The coordinator's call for updates."""

    round: int
    deadline: float
    base_version: int
    params: FederationParams
    # The federation's epoch (see ``GlobalModel.epoch``), empty when not sent.
    epoch: str = ""


def round_body(announcement: RoundAnnouncement) -> dict[str, Any]:
    """Return the wire body of a round announcement."""
    return {
        "round": announcement.round,
        "deadline": announcement.deadline,
        "base_version": announcement.base_version,
        "epoch": announcement.epoch,
        "params": announcement.params.as_dict(),
    }


def parse_epoch(body: dict[str, Any]) -> str:
    """Return the optional ``epoch`` field of a round or model body, "" when absent.

    Coordinators from before epochs existed do not send one.
    """
    epoch = body.get("epoch", "")
    if epoch == "":
        return ""
    if not isinstance(epoch, str) or not EPOCH_PATTERN.fullmatch(epoch):
        raise MessageRejected(
            RejectReason.SCHEMA, "field 'epoch' must be 1 to 64 lowercase hexadecimal digits"
        )
    return epoch


def parse_params(data: object) -> FederationParams:
    """Validate federation hyper-parameters."""
    if not isinstance(data, dict):
        raise MessageRejected(RejectReason.SCHEMA, "field 'params' must be an object")
    components = _int_field(data, "rff_components", "params.", minimum=1)
    clusters = _int_field(data, "n_clusters", "params.", minimum=1)
    if components > MAX_RFF_COMPONENTS or clusters > MAX_CLUSTERS:
        raise MessageRejected(RejectReason.SCHEMA, "field 'params' exceeds the size limits")
    gamma = _float_field(data, "rff_gamma", "params.")
    nu = _float_field(data, "svm_nu", "params.")
    if gamma <= 0 or not 0 < nu <= 1:
        raise MessageRejected(
            RejectReason.SCHEMA, "field 'params' has gamma <= 0 or nu outside (0, 1]"
        )
    return FederationParams(
        seed=_int_field(data, "seed", "params."),
        rff_components=components,
        rff_gamma=gamma,
        svm_nu=nu,
        n_clusters=clusters,
        local_epochs=_int_field(data, "local_epochs", "params.", minimum=1),
    )


def parse_round(body: dict[str, Any]) -> RoundAnnouncement:
    """Validate a round announcement."""
    return RoundAnnouncement(
        round=_int_field(body, "round", minimum=1),
        deadline=_float_field(body, "deadline"),
        base_version=_int_field(body, "base_version"),
        params=parse_params(_field(body, "params", "")),
        epoch=parse_epoch(body),
    )


def parse_model(body: dict[str, Any]) -> GlobalModel:
    """Validate a global model."""
    params = parse_params(_field(body, "params", ""))
    kinds = _field(body, "kinds", "")
    if not isinstance(kinds, dict) or len(kinds) > MAX_KINDS:
        raise MessageRejected(RejectReason.SCHEMA, "field 'kinds' must be an object")
    contributors = body.get("contributors", {})
    if not isinstance(contributors, dict) or not all(
        is_valid_id(k) and _is_number(v) for k, v in contributors.items()
    ):
        raise MessageRejected(
            RejectReason.SCHEMA, "field 'contributors' must map node ids to weights"
        )
    return GlobalModel(
        version=_int_field(body, "version"),
        round=_int_field(body, "round"),
        params=params,
        kinds={
            kind: parse_kind_model(data, f"kinds.{kind}", params, None, max_samples=None)
            for kind, data in kinds.items()
            if split_model_key(kind) is not None
        },
        contributors={k: float(v) for k, v in contributors.items()},
        epoch=parse_epoch(body),
        max_regimes=_max_regimes(body),
    )


def _max_regimes(body: dict[str, Any]) -> int:
    """Return a model's number of regimes per kind; 0 where a coordinator sends none.

    A later coordinator may keep more regimes than this version supports. Keys
    beyond ``MAX_REGIMES`` are skipped, so the count is capped rather than
    the model rejected.
    """
    if "max_regimes" not in body:
        return 0
    return min(_int_field(body, "max_regimes"), MAX_REGIMES)


@dataclass(frozen=True)
class Command:
    """An instruction from the coordinator to one node."""

    node_id: str
    action: str
    nonce: str = ""


def command_body(command: Command) -> dict[str, Any]:
    """Return the wire body of a command."""
    return {"node": command.node_id, "action": command.action, "nonce": command.nonce}


def parse_command(body: dict[str, Any]) -> Command:
    """Validate a command."""
    action = _field(body, "action", "")
    if action not in COMMAND_ACTIONS:
        raise MessageRejected(
            RejectReason.SCHEMA, f"field 'action' must be one of {', '.join(COMMAND_ACTIONS)}"
        )
    nonce = body.get("nonce", "")
    if not isinstance(nonce, str) or len(nonce) > 128:
        raise MessageRejected(RejectReason.SCHEMA, "field 'nonce' must be a short string")
    return Command(node_id=_id_field(body, "node"), action=action, nonce=nonce)
