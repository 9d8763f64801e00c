"""Rate-limited warnings about rejected and dropped MQTT messages.

A node that floods the broker with bad messages must not flood the log as
well. The first rejection of each (node, reason) pair is logged at once. Later
ones within ``window`` seconds are only counted. The count is logged with the
next rejection after the window, or by ``flush`` once the window has ended.
Rejections from nodes the coordinator does not know share one key per reason,
so random node ids in topics cannot grow the table. Messages dropped because
too many were waiting share one key as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from .const import LOGGER
from .core.protocol import is_valid_id

UNKNOWN_NODES = "*"
# Reason of messages dropped before the engine saw them.
QUEUE_FULL = "queue_full"
MAX_DETAIL_CHARS = 200
MAX_NODE_ID_CHARS = 64
DEFAULT_WINDOW = 60.0


def printable_node_id(node_id: str) -> str:
    """Return a node id from a topic in a form that is safe to log."""
    if is_valid_id(node_id):
        return node_id
    return repr(node_id[:MAX_NODE_ID_CHARS])


@dataclass
class _Window:
    started: float
    suppressed: int = 0
    # Node and detail of the last suppressed rejection, for the summary line.
    last_node: str = ""
    last_detail: str = ""


class RejectionLog:
    """Rate-limited log of one federation's rejected and dropped messages."""

    def __init__(self, entry_id: str, window: float = DEFAULT_WINDOW) -> None:
        """Create an empty log; ``window`` is in seconds."""
        self._entry_id = entry_id
        self._window = window
        self._windows: dict[tuple[str, str], _Window] = {}

    def _admit(self, key: tuple[str, str], node: str, detail: str, now: float) -> int | None:
        """Return the count suppressed before, or None when this message is suppressed too."""
        window = self._windows.get(key)
        if window is not None and now - window.started < self._window:
            window.suppressed += 1
            window.last_node = node
            window.last_detail = detail
            return None
        self._windows[key] = _Window(started=now)
        return window.suppressed if window is not None else 0

    def record(self, node_id: str, known_node: bool, reason: str, detail: str, now: float) -> None:
        """Log one rejected message unless its (node, reason) pair was logged recently."""
        node = printable_node_id(node_id)
        detail = detail[:MAX_DETAIL_CHARS]
        key = (node_id if known_node else UNKNOWN_NODES, reason)
        suppressed = self._admit(key, node, detail, now)
        if suppressed is None:
            return
        LOGGER.warning(
            "%s: rejected a message from %s node %s, reason %s: %s%s",
            self._entry_id,
            "known" if known_node else "unknown",
            node,
            reason,
            detail,
            self._suppressed_note(suppressed),
        )

    def record_dropped(self, node_id: str, waiting: int, waiting_bytes: int, now: float) -> None:
        """Log one message dropped unread because too many messages were waiting."""
        node = printable_node_id(node_id)
        detail = f"{waiting} messages ({waiting_bytes} bytes) were waiting"
        suppressed = self._admit((UNKNOWN_NODES, QUEUE_FULL), node, detail, now)
        if suppressed is None:
            return
        LOGGER.warning(
            "%s: dropped a message from node %s unread because %s; the coordinator cannot "
            "keep up with the message rate%s",
            self._entry_id,
            node,
            detail,
            self._suppressed_note(suppressed),
        )

    def _suppressed_note(self, suppressed: int) -> str:
        if not suppressed:
            return ""
        return f" ({suppressed} more for this reason in the previous {self._window:.0f} s)"

    def flush(self, now: float) -> None:
        """Log the counts of suppressed messages whose window has ended."""
        for key, window in list(self._windows.items()):
            if now - window.started < self._window:
                continue
            del self._windows[key]
            if not window.suppressed:
                continue
            LOGGER.warning(
                "%s: %s %s more messages from %s, reason %s, in the last %.0f s; the last one: %s",
                self._entry_id,
                "dropped" if key[1] == QUEUE_FULL else "rejected",
                window.suppressed,
                "unknown nodes" if key[0] == UNKNOWN_NODES else f"node {window.last_node}",
                key[1],
                now - window.started,
                window.last_detail,
            )
