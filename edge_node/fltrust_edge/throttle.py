"""Rate limiting for warnings that a misbehaving peer or sensor can repeat endlessly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class ThrottledLogger:
    """Logs each kind of warning at most once per interval and counts the suppressed ones."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wrap ``logger``. ``interval`` is in seconds."""
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        # Key -> (time of the last logged warning, warnings suppressed since).
        self._state: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless a warning with the same key was logged recently."""
        now = self._clock()
        with self._lock:
            last, suppressed = self._state.get(key, (None, 0))
            if last is not None and now - last < self._interval:
                self._state[key] = (last, suppressed + 1)
                return
            self._state[key] = (now, 0)
        if suppressed:
            message += " (%s similar warnings suppressed)"
            args = (*args, suppressed)
        self._logger.warning(message, *args)
