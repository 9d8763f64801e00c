"""Rate-limited warnings about rejected and dropped MQTT messages.

A node that floods the broker with bad messages must not flood the log as
well. The first rejection of each (node, reason) pair is logged at once. Later
ones within ``window`` seconds are only counted. The count is logged with the
next rejection after the window, or by ``flush`` once the window has ended.
Rejections from nodes the coordinator does not know share one key per reason,
so random node ids in topics cannot grow the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from .const import LOGGER
from .core.protocol import is_valid_id

UNKNOWN_NODES = "*"
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
    """Rate-limited log of one federation's rejected messages."""

    def __init__(self, entry_id: str, window: float = DEFAULT_WINDOW) -> None:
        """Create an empty log; ``window`` is in seconds."""
        self._entry_id = entry_id
        self._window = window
        self._windows: dict[tuple[str, str], _Window] = {}

    def record(self, node_id: str, known_node: bool, reason: str, detail: str, now: float) -> None:
        """Log one rejected message unless its (node, reason) pair was logged recently."""
        node = printable_node_id(node_id)
        detail = detail[:MAX_DETAIL_CHARS]
        key = (node_id if known_node else UNKNOWN_NODES, reason)
        window = self._windows.get(key)
        if window is not None and now - window.started < self._window:
            window.suppressed += 1
            window.last_node = node
            window.last_detail = detail
            return
        self._windows[key] = _Window(started=now)
        suppressed = window.suppressed if window is not None else 0
        if suppressed:
            LOGGER.warning(
                "%s: rejected a message from %s node %s, reason %s: %s "
                "(%s more rejections for this reason in the previous %.0f s)",
                self._entry_id,
                "known" if known_node else "unknown",
                node,
                reason,
                detail,
                suppressed,
                self._window,
            )
        else:
            LOGGER.warning(
                "%s: rejected a message from %s node %s, reason %s: %s",
                self._entry_id,
                "known" if known_node else "unknown",
                node,
                reason,
                detail,
            )

    def flush(self, now: float) -> None:
        """Log the counts of suppressed rejections whose window has ended."""
        for key, window in list(self._windows.items()):
            if now - window.started < self._window:
                continue
            del self._windows[key]
            if window.suppressed:
                LOGGER.warning(
                    "%s: rejected %s more messages from %s, reason %s, in the last %.0f s; "
                    "the last one: %s",
                    self._entry_id,
                    window.suppressed,
                    "unknown nodes" if key[0] == UNKNOWN_NODES else f"node {window.last_node}",
                    key[1],
                    now - window.started,
                    window.last_detail,
                )
