"""What is failing, since when, and whether it was told: logs once when a feed or sink
starts failing and once when it recovers, and says which failures are due an alert."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bot.errors import AuthError
from bot.logs import fields

log = logging.getLogger("inboxbot.health")


@dataclass
class Failing:
    reason: str
    since: float
    auth: bool


class Health:
    """Logs a failing feed or sink once when it starts failing and once when it recovers,
    and knows which failures are due an alert (see ``Pipeline.alert``)."""

    def __init__(self) -> None:
        self.failing: dict[str, Failing] = {}
        self.alerted: set[str] = set()
        self.recovered: set[str] = set()  # alerted, then recovered: the all-clear is due

    def failed(self, key: str, err: Exception) -> None:
        reason = str(err)
        if key not in self.failing:
            kind = type(err).__name__
            log.warning("failing", extra=fields(target=key, error=kind, reason=reason))
            self.failing[key] = Failing(reason, time.time(), isinstance(err, AuthError))
        self.failing[key].reason = reason

    def ok(self, key: str) -> None:
        if self.failing.pop(key, None) is not None:
            log.info("recovered", extra=fields(target=key))
            if key in self.alerted:
                self.alerted.discard(key)
                self.recovered.add(key)

    def due(self, now: float, after: float) -> list[tuple[str, Failing]]:
        """Failures not alerted yet that are old enough (an auth failure at once)."""
        return [
            (key, f)
            for key, f in self.failing.items()
            if key not in self.alerted and (f.auth or now - f.since >= after)
        ]
