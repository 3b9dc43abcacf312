"""One daemon per state file: an exclusive ``flock`` on ``STATE.lock``, held while
``run`` or ``once`` works on the state, released by the kernel when the process ends
(also on SIGKILL), so a stale lock file never blocks a restart."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.errors import InboxbotError
from bot.store import StoreError


class StateInUse(InboxbotError):
    """Another inboxbot works on this state file."""


@contextmanager
def state_lock(state: Path) -> Iterator[None]:
    """Hold the state's lock, or raise StateInUse naming the holder's PID."""
    path = state.with_name(state.name + ".lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise StoreError(f"state {state}: cannot create {path.name}: {err.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise StateInUse(f"{state} is in use by PID {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def holder(state: Path) -> str | None:
    """The PID of the daemon holding the state's lock; None when none does."""
    try:
        fd = os.open(state.with_name(state.name + ".lock"), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it; ours goes with the close
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)
