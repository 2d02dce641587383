"""The service manager's notify protocol (sd_notify(3)) without libsystemd:
datagrams like "READY=1" to the AF_UNIX socket named by $NOTIFY_SOCKET.
Outside systemd (no NOTIFY_SOCKET) every call does nothing."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("vswitch.systemd")


class Notifier:
    def __init__(self, environ=os.environ):
        path = environ.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):            # an abstract socket
            path = "\0" + path[1:]
        self.path = path or None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self.path else None
        # WATCHDOG_USEC applies to us only if WATCHDOG_PID is unset or ours.
        usec = environ.get("WATCHDOG_USEC")
        pid = environ.get("WATCHDOG_PID")
        self.watchdog_usec = int(usec) if usec and usec.isdigit() and \
            (not pid or pid == str(os.getpid())) else 0

    def notify(self, *fields: str):
        if self.sock is None or self.path is None:
            return
        try:
            self.sock.sendto("\n".join(fields).encode(), self.path)
        except OSError as e:        # the manager went away: keep switching regardless
            log.warning("sd_notify %s failed: %s", fields[0], e)

    def ready(self, status: str):
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str):
        self.notify(f"STATUS={status}")

    def reloading(self):
        # Since systemd 253, Type=notify-reload also wants the monotonic time.
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={now}")

    def stopping(self):
        self.notify("STOPPING=1")

    def watchdog(self):
        self.notify("WATCHDOG=1")

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between keep-alives: half the manager's timeout."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def close(self):
        if self.sock:
            self.sock.close()
