"""An asyncio event loop in a background thread, for calling the async clients from sync code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """An event loop that runs in a daemon thread until ``stop``."""

    def __init__(self, name: str = "fltrust-lab-loop") -> None:
        """Create the loop and its thread. ``start`` starts the thread."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    def start(self) -> None:
        """Start running the loop and its one executor thread.

        The executor gets a single worker, created here, so that no thread
        appears later. Home Assistant's pytest plugin fails a test that leaves
        a new thread behind.
        """
        self.loop.set_default_executor(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.thread.name}-executor")
        )
        self.thread.start()
        self.run(asyncio.to_thread(lambda: None), timeout=10)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the loop and return its result.

        Raises:
            TimeoutError: when the coroutine does not finish within ``timeout``
                seconds. The coroutine is cancelled then.
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop, wait for its thread and close it."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        if not self.loop.is_running():
            self.loop.close()
