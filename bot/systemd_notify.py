"""systemd readiness and watchdog notifications (sd_notify protocol).

Written here rather than pulled from a package: the protocol is one datagram on the
socket named by ``$NOTIFY_SOCKET``, and the small PyPI wrappers for it are unmaintained.
Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends READY, WATCHDOG, STOPPING and STATUS messages to systemd when run under it."""

    def __init__(self, socket_path: str | None = None) -> None:
        self._address = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
        if self._address.startswith("@"):  # abstract namespace socket
            self._address = "\0" + self._address[1:]

    @property
    def enabled(self) -> bool:
        """True when a notification socket is configured."""
        return bool(self._address)

    def watchdog_interval_s(self) -> float | None:
        """Half of systemd's WatchdogSec (the recommended ping period), or None when not watched."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1_000_000 / 2
        except ValueError:
            return None

    def notify(self, message: str) -> None:
        """Send one raw message; failures are logged, never raised (monitoring must not stop trading)."""
        if not self.enabled:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode("utf-8"))
        except OSError as exc:
            log.warning("systemd notification failed: %s", exc)

    def ready(self, status: str = "running") -> None:
        """Tell systemd start-up is complete."""
        self.notify(f"READY=1\nSTATUS={status}")

    def watchdog(self) -> None:
        """Keep-alive ping; systemd restarts the service when these stop."""
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell systemd a shutdown is in progress."""
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        """Free-text status shown by `systemctl status`."""
        self.notify(f"STATUS={text}")
