"""systemd's notify protocol: READY, STATUS, WATCHDOG and STOPPING on $NOTIFY_SOCKET.

A few lines of stdlib instead of a dependency. The watchdog is fed by a task on the
event loop itself, so a hung loop stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import os
import socket
from contextlib import suppress


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog = int(usec) / 1_000_000 if usec.isdigit() and int(usec) > 0 else None

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        # systemd gone (or never there): nothing to tell
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, suppress(OSError):
            sock.setblocking(False)  # a full queue must never stall the event loop
            sock.sendto("\n".join(lines).encode(), self.address)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def reloading(self) -> None:
        self.send("RELOADING=1", "STATUS=reloading configuration")

    async def feed_watchdog(self) -> None:
        """Ping at half the watchdog interval, for as long as the loop runs."""
        if self.watchdog is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog / 2)
