"""What is failing, since when, and whether it was told: logs once when a feed or sink
starts failing and once when it recovers, and says which failures are due an alert.

Attached to a store, it also records what is failing there (only when that changes), so
that ``inboxbot status`` in another process sees it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.errors import AuthError
from bot.logs import fields

if TYPE_CHECKING:
    from bot.store import Store

log = logging.getLogger("inboxbot.health")


@dataclass
class Failing:
    reason: str
    since: float
    auth: bool
    retry_at: float | None = None  # a feed's next poll while it rests


class Health:
    """Logs a failing feed or sink once when it starts failing and once when it recovers,
    and knows which failures are due an alert (see ``Pipeline.alert``)."""

    def __init__(self) -> None:
        self.failing: dict[str, Failing] = {}
        self.alerted: set[str] = set()
        self.recovered: set[str] = set()  # alerted, then recovered: the all-clear is due
        self.store: Store | None = None

    def attach(self, store: Store) -> None:
        """Record in ``store`` from now on; what it says failed (in an earlier run) is
        replaced by what this one knows."""
        self.store = store
        with store.transaction():
            store.clear_failing()
            for key, failing in self.failing.items():
                store.record_failing(key, failing)

    def failed(self, key: str, err: Exception, *, retry_at: float | None = None) -> None:
        reason = str(err)
        failing = self.failing.get(key)
        if failing is None:
            kind = type(err).__name__
            log.warning("failing", extra=fields(target=key, error=kind, reason=reason))
            failing = self.failing[key] = Failing(reason, time.time(), False)
        elif (failing.reason, failing.retry_at, failing.auth) == (
            reason, retry_at, isinstance(err, AuthError)
        ):  # fmt: skip
            return
        failing.reason, failing.retry_at = reason, retry_at
        failing.auth = isinstance(err, AuthError)
        if self.store is not None:
            self.store.record_failing(key, failing)

    def ok(self, key: str) -> None:
        if self.failing.pop(key, None) is not None:
            log.info("recovered", extra=fields(target=key))
            if self.store is not None:
                self.store.clear_failing(key)
            if key in self.alerted:
                self.alerted.discard(key)
                self.recovered.add(key)

    def refused(self, prefix: str) -> dict[str, str]:
        """Names (after ``prefix``) whose credentials are refused → the reason."""
        return {
            key.removeprefix(prefix): f.reason
            for key, f in self.failing.items()
            if f.auth and key.startswith(prefix)
        }

    def due(self, now: float, after: float) -> list[tuple[str, Failing]]:
        """Failures not alerted yet that are old enough (an auth failure at once)."""
        return [
            (key, f)
            for key, f in self.failing.items()
            if key not in self.alerted and (f.auth or now - f.since >= after)
        ]
