"""Child processes with their output captured in a log file, and loopback port helpers."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import LOOPBACK

_LOGGER = logging.getLogger(__name__)


def free_port() -> int:
    """Return a TCP port on the loopback interface that is free right now.

    Another process may take the port before the caller binds it, so a caller
    that starts a server should retry with a new port when binding fails, as
    ``broker.start_broker`` does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Return whether a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ManagedProcess:
    """One child process whose stdout and stderr go to ``log_path``.

    The child runs in its own session, so a Ctrl-C in the terminal reaches only
    the lab, which then stops its children in order.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """Store the command. Nothing starts until ``start``."""
        self.name = name
        self.argv = [str(arg) for arg in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process, appending its output to the log file."""
        if self.popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        _LOGGER.debug("%s: started pid %s: %s", self.name, self.popen.pid, " ".join(self.argv))

    @property
    def pid(self) -> int | None:
        """Process id, or None before ``start``."""
        return self.popen.pid if self.popen is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has ended, else None."""
        return self.popen.poll() if self.popen is not None else None

    def is_running(self) -> bool:
        """Return whether the process was started and has not exited."""
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit and return its status.

        Raises:
            subprocess.TimeoutExpired: when it is still running after ``timeout`` seconds.
        """
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig`` (SIGTERM by default), then SIGKILL after ``timeout`` seconds.

        Returns the exit status, or None when the process was never started.
        """
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            _LOGGER.debug("%s: sending signal %s to pid %s", self.name, sig, self.popen.pid)
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _LOGGER.warning(
                    "%s: pid %s still running %.0f s after signal %s, killing it",
                    self.name,
                    self.popen.pid,
                    timeout,
                    sig,
                )
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def log_tail(self, lines: int = 30) -> str:
        """Return the last ``lines`` lines of the log file, or '' when it does not exist."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
