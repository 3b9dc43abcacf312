"""What the real-server launchers share: a server started in the foreground in a session
of its own (stdio away from the test's pipes), and the wait until each port listens."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path


def launch(command: Sequence[str], workdir: Path) -> subprocess.Popen[bytes]:
    """``command`` running, its stderr appended to ``workdir/stderr.log``."""
    with (workdir / "stderr.log").open("ab") as stderr:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            close_fds=True,
            start_new_session=True,
        )


def wait_listening(
    proc: subprocess.Popen[bytes], ports: Iterable[int], name: str, log: Callable[[], str],
    timeout: float,
) -> None:  # fmt: skip
    """Until every port accepts a connection; raises with the server's log when it exits
    or does not listen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not listening on {port}") from None
                time.sleep(0.01)
