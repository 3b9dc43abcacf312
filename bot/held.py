"""What noise control keeps in the state: held deliveries' batches, mutes, limits' windows.

Kept in the state database beside the outbox, so a restart, a SIGKILL and the command
line (``inboxbot mute``) all see the same: a held step is a pending step with a batch and
a due time, a mute a row until it ends, a limit's window its start and count.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.store import DONE, MUTED, PENDING, Store


@dataclass(frozen=True)
class Mute:
    id: int
    until: float | None  # None: until `inboxbot unmute`
    comment: str = ""
    defer: bool = False  # hold what it mutes and send it as one digest at its end
    rule: str | None = None
    sink: str | None = None
    account: str | None = None
    match: Mapping[str, str] = field(default_factory=dict)  # item field or extraction → value

    def scope(self) -> str:
        named = (("rule", self.rule), ("sink", self.sink), ("account", self.account))
        parts = [f"{k} {v}" for k, v in named if v]
        parts += [f"{k}={v}" for k, v in self.match.items()]
        return ", ".join(parts) or "everything"


class Held:
    """Noise control's queries on the store (one process writes steps; the CLI too, in WAL)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    # --- batches -------------------------------------------------------------------

    def latest_pending(self, batch: str) -> float | None:
        """The latest send time of ``batch``'s waiting members, if any wait."""
        (at,) = self.db.execute(
            "SELECT max(batch_at) FROM steps WHERE batch=? AND status=?", (batch, PENDING)
        ).fetchone()
        return float(at) if at is not None else None

    def last_sent(self, batch: str) -> float | None:
        (at,) = self.db.execute(
            "SELECT max(done_at) FROM steps WHERE batch=? AND status=?", (batch, DONE)
        ).fetchone()
        return float(at) if at is not None else None

    def hold(self, ids: Sequence[str], batch: str | None, at: float, reason: str) -> None:
        """Make steps wait until ``at``, in ``batch`` (None: each alone), saying why."""
        with self.store.transaction() as db:
            db.executemany(
                "UPDATE steps SET batch=?, batch_at=?, due_at=?, reason=? WHERE id=?",
                [(batch, at if batch else None, at, reason, sid) for sid in ids],
            )

    def mute_steps(self, ids: Sequence[str], reason: str, *, now: float) -> None:
        """Record deliveries as muted, and cancel their rules' actions on the items: what the
        user was not told about is not marked read or deleted behind their back."""
        with self.store.transaction():
            for sid in ids:
                self.store.finish_step(sid, now=now, status=MUTED, error="")
                self.db.execute("UPDATE steps SET reason=? WHERE id=?", (reason, sid))
                row = self.db.execute(
                    "SELECT feed, item_id, rule FROM steps WHERE id=?", (sid,)
                ).fetchone()
                self.store.cancel_actions(*row, now=now)

    # --- mutes ---------------------------------------------------------------------

    def add_mute(self, mute: Mute, *, now: float) -> int:
        cursor = self.db.execute(
            "INSERT INTO mutes (rule, sink, account, match, until, comment, defer, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (mute.rule, mute.sink, mute.account, json.dumps(dict(mute.match)), mute.until,
             mute.comment, int(mute.defer), now),
        )  # fmt: skip
        return int(cursor.lastrowid or 0)

    def mutes(self) -> list[Mute]:
        rows = self.db.execute(
            "SELECT id, until, comment, defer, rule, sink, account, match FROM mutes ORDER BY id"
        )
        return [
            Mute(i, until, comment, bool(defer), rule, sink, account, json.loads(match))
            for i, until, comment, defer, rule, sink, account, match in rows
        ]

    def active_mutes(self, now: float) -> list[Mute]:
        """The mutes in force; ended ones are removed (what they deferred is due by then)."""
        found = self.mutes()
        if any(m.until is not None and m.until <= now for m in found):
            self.db.execute("DELETE FROM mutes WHERE until IS NOT NULL AND until<=?", (now,))
        return [m for m in found if m.until is None or m.until > now]

    def unmute(self, mute_id: int, *, now: float) -> int | None:
        """End a mute now; None when there is no such mute, else how many deliveries it had
        deferred (due now)."""
        with self.store.transaction() as db:
            if not db.execute("DELETE FROM mutes WHERE id=?", (mute_id,)).rowcount:
                return None
            return db.execute(
                "UPDATE steps SET due_at=?, batch_at=? WHERE batch LIKE ? AND status=?",
                (now, now, f"{deferred_batch(mute_id, '')}%", PENDING),
            ).rowcount

    # --- limits --------------------------------------------------------------------

    def windows(self) -> dict[str, tuple[float, int]]:
        return {key: (since, sent) for key, since, sent in self.db.execute(
            "SELECT key, since, sent FROM limits")}  # fmt: skip

    def count(self, key: str, since: float, sent: int) -> None:
        self.db.execute(
            "INSERT INTO limits (key, since, sent) VALUES (?, ?, ?) ON CONFLICT (key) "
            "DO UPDATE SET since=excluded.since, sent=excluded.sent",
            (key, since, sent),
        )

    def muted_counts(self) -> dict[str, int]:
        """Per sink, deliveries recorded as muted (kept until retention prunes them)."""
        rows = self.db.execute(
            "SELECT target, count(*) FROM steps WHERE status=? GROUP BY target", (MUTED,)
        )
        return {target: int(n) for target, n in rows}


def deferred_batch(mute_id: int, sink: str) -> str:
    return f"mute\x1f{mute_id}\x1f{sink}"


def matches(mute: Mute, step: Any, account: str) -> bool:
    """Whether ``mute`` silences the delivery ``step`` (a StepRecord) of ``account``."""
    if mute.rule not in (None, step.rule) or mute.sink not in (None, step.target):
        return False
    if mute.account not in (None, account):
        return False
    values = {**step.payload.get("item", {}), **step.payload.get("extract", {})}
    return all(_equal(values.get(name), wanted) for name, wanted in mute.match.items())


def _equal(value: Any, wanted: str) -> bool:
    """Text compared without case; a list (links) when one element is equal."""
    if isinstance(value, list):
        return any(_equal(v, wanted) for v in value)
    if isinstance(value, bool):
        return str(value).lower() == wanted.strip().lower()
    return value is not None and str(value).strip().lower() == wanted.strip().lower()
