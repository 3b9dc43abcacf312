"""The store: SQLite (WAL) holding what was seen, each feed's cursor, and the outbox.

A poll's new items are written in the same transaction that moves the feed's
cursor; planned steps are written in the transaction that marks the item
planned; each step is marked done when it succeeded. So a crash at any point
leaves either the work to redo or the record that it was done.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import InboxbotError
from bot.health import Failing
from bot.item import Item

POLLED_EVERY = 30.0  # seconds: how stale `status` may show an idle feed's last good poll

MIGRATIONS = (
    """
    CREATE TABLE feeds (feed TEXT PRIMARY KEY, cursor TEXT, polled_at REAL NOT NULL);
    CREATE TABLE items (
        feed TEXT NOT NULL, item_id TEXT NOT NULL, state TEXT NOT NULL,
        seen_at REAL NOT NULL, data TEXT, PRIMARY KEY (feed, item_id));
    CREATE INDEX items_state ON items (state, seen_at);
    CREATE TABLE steps (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        feed TEXT NOT NULL, item_id TEXT NOT NULL, rule TEXT NOT NULL,
        kind TEXT NOT NULL, target TEXT NOT NULL, status TEXT NOT NULL,
        payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        due_at REAL NOT NULL, last_error TEXT, created_at REAL NOT NULL, done_at REAL);
    CREATE INDEX steps_pending ON steps (status, kind, seq);
    CREATE INDEX steps_item ON steps (feed, item_id, rule);
    """,
    # what is failing (feeds, sinks, actions; Health's keys), for `inboxbot status`
    """
    CREATE TABLE failing (
        key TEXT PRIMARY KEY, since REAL NOT NULL, reason TEXT NOT NULL,
        auth INTEGER NOT NULL, retry_at REAL);
    """,
    # noise control: a held delivery waits in its batch (the digest it goes out in, known by
    # the batch's key and first due time), with the reason shown; mutes; limits' windows
    """
    ALTER TABLE steps ADD COLUMN batch TEXT;
    ALTER TABLE steps ADD COLUMN batch_at REAL;
    ALTER TABLE steps ADD COLUMN reason TEXT;
    CREATE INDEX steps_batch ON steps (batch, status);
    CREATE TABLE mutes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT, sink TEXT, account TEXT,
        match TEXT NOT NULL, until REAL, comment TEXT NOT NULL, defer INTEGER NOT NULL,
        created_at REAL NOT NULL);
    CREATE TABLE limits (key TEXT PRIMARY KEY, since REAL NOT NULL, sent INTEGER NOT NULL);
    """,
    # push channels (IMAP IDLE, realtime streams), for `inboxbot status`
    """
    CREATE TABLE push (
        feed TEXT PRIMARY KEY, connected INTEGER NOT NULL, what TEXT NOT NULL,
        since REAL NOT NULL, reconnects INTEGER NOT NULL DEFAULT 0);
    """,
)

NEW, PLANNED, SKIPPED, DROPPED = "new", "planned", "skipped", "dropped"
PENDING, DONE, FAILED, CANCELLED = "pending", "done", "failed", "cancelled"
MUTED = "muted"  # a delivery a mute silenced: recorded, not sent (its reason says which)
FORCED = "sent by hand"  # the reason of a step `inboxbot retry` sends past noise control
# Actions wait as HELD until their poll's batch is planned: then the count per rule is
# known, and a rule over ``max_actions_per_poll`` gets its actions REFUSED.
HELD, REFUSED = "held", "refused"


@dataclass(frozen=True)
class StepRecord:
    seq: int
    id: str
    feed: str
    item_id: str
    rule: str
    kind: str
    target: str
    payload: dict[str, Any]
    attempts: int
    due_at: float
    batch: str | None = None  # the digest a held delivery goes out in
    batch_at: float | None = None  # when that digest was first due: with batch, its identity
    reason: str | None = None  # why it waits (quiet hours, a group, a limit, a mute)


@dataclass(frozen=True)
class NewStep:
    id: str
    rule: str
    kind: str
    target: str
    payload: dict[str, Any]
    due_at: float
    error: str = ""  # a step that could not be rendered: stored as failed, with this
    batch: str | None = None  # a grouped delivery's group (``batch_at`` and ``due_at`` its send)
    batch_at: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class StepView:
    """A step as ``inboxbot outbox`` shows it."""

    id: str
    status: str
    kind: str
    target: str
    rule: str
    feed: str
    item_id: str
    attempts: int
    due_at: float
    last_error: str | None
    created_at: float
    reason: str | None = None  # why a pending delivery waits (noise control), or was muted
    batch: str | None = None


class StoreError(InboxbotError):
    """The state database cannot be opened."""


class Store:
    def __init__(self, path: Path | str) -> None:
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.Error as err:
            raise StoreError(f"state {path}: {err}") from None

        # Per feed, what the last poll stored (this process is the only writer of feeds and
        # items): its cursor, and the ids it listed, all of them known. A poll listing only
        # those ids with the same cursor changes nothing, and needs no query. One entry per
        # feed, replaced at each poll.
        self._cursors: dict[str, str | None] = {}
        self._listed: dict[str, frozenset[str]] = {}
        # Idle polls' times, written together every POLLED_EVERY seconds (for `status`).
        self._polled: dict[str, float] = {}
        self._polled_written = 0.0

    def close(self) -> None:
        self._write_polled()
        self.db.close()

    def _migrate(self) -> None:
        if self._version() == len(MIGRATIONS):
            return
        with self.transaction():  # read again under the lock: another process may migrate too
            for number, script in enumerate(MIGRATIONS[self._version() :], self._version() + 1):
                for statement in filter(str.strip, script.split(";")):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={number}")

    def _version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- feeds and items -------------------------------------------------------------

    def cursor(self, feed: str) -> tuple[bool, str | None]:
        """(whether the feed was ever polled, its cursor)."""
        if feed in self._cursors:
            return True, self._cursors[feed]
        row = self.db.execute("SELECT cursor FROM feeds WHERE feed=?", (feed,)).fetchone()
        if row is not None:
            self._cursors[feed] = row[0]
        return (row is not None, row[0] if row else None)

    def record_poll(
        self, feed: str, items: Sequence[Item], cursor: str | None, *, now: float, skip: bool
    ) -> int:
        """Store a poll's unseen items (as skipped when ``skip``), move the cursor; count them."""
        ids = frozenset(item.id for item in items)
        if feed in self._listed and self._cursors[feed] == cursor and ids <= self._listed[feed]:
            self._polled[feed] = now  # the usual idle poll: nothing new, nothing to write now
            if now - self._polled_written >= POLLED_EVERY:
                self._write_polled(now)
            return 0
        state = SKIPPED if skip else NEW
        with self.transaction() as db:
            known = self.known(feed, [item.id for item in items])
            unseen = {item.id: item for item in items if item.id not in known}
            db.executemany(
                "INSERT INTO items (feed, item_id, state, seen_at, data) VALUES (?, ?, ?, ?, ?)",
                [
                    (feed, item.id, state, now, None if skip else json.dumps(item.to_json()))
                    for item in unseen.values()
                ],
            )
            db.execute(
                "INSERT INTO feeds (feed, cursor, polled_at) VALUES (?, ?, ?) ON CONFLICT (feed) "
                "DO UPDATE SET cursor=excluded.cursor, polled_at=excluded.polled_at",
                (feed, cursor, now),
            )
        self._cursors[feed], self._listed[feed] = cursor, ids
        return len(unseen)

    def _write_polled(self, now: float = 0.0) -> None:
        """The idle polls' times since the last write, in one transaction."""
        if self._polled:
            with self.transaction() as db:
                db.executemany(
                    "UPDATE feeds SET polled_at=? WHERE feed=?",
                    [(at, feed) for feed, at in self._polled.items()],
                )
            self._polled.clear()
        self._polled_written = now

    def known(self, feed: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the feed has seen (the seen ledger; ids outlive item bodies);
        those its last poll listed without a query."""
        listed = self._listed.get(feed, frozenset())
        known = {i for i in ids if i in listed}
        asked = [i for i in ids if i not in listed]
        for start in range(0, len(asked), 500):
            chunk = asked[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT item_id FROM items WHERE feed=? AND item_id IN ({marks})", (feed, *chunk)
            )
            known.update(row[0] for row in rows)
        return known

    def new_items(self, feed: str) -> list[Item]:
        """Items stored but not planned yet, oldest first (also those a crash left behind)."""
        rows = self.db.execute(
            "SELECT data FROM items WHERE feed=? AND state=? ORDER BY seen_at, rowid", (feed, NEW)
        )
        return [Item.from_json(json.loads(data)) for (data,) in rows]

    def item(self, feed: str, item_id: str) -> Item | None:
        row = self.db.execute(
            "SELECT data FROM items WHERE feed=? AND item_id=?", (feed, item_id)
        ).fetchone()
        return Item.from_json(json.loads(row[0])) if row and row[0] else None

    def feed_summary(self, feed: str) -> tuple[int, Item | None]:
        """(items seen unread that inboxbot has not marked read or deleted, the newest item)."""
        (unread,) = self.db.execute(
            "SELECT COUNT(*) FROM items i WHERE feed=? AND state!=? "
            "AND json_extract(data, '$.unread') = 1 AND NOT EXISTS (SELECT 1 FROM steps s "
            "WHERE s.feed=i.feed AND s.item_id=i.item_id AND s.kind='act' AND s.status=? "
            "AND s.target IN ('mark_read', 'delete'))",
            (feed, DROPPED, DONE),
        ).fetchone()
        row = self.db.execute(
            "SELECT data FROM items WHERE feed=? AND data IS NOT NULL AND state!=? "
            "ORDER BY seen_at DESC, rowid DESC LIMIT 1",
            (feed, DROPPED),
        ).fetchone()
        return int(unread), Item.from_json(json.loads(row[0])) if row else None

    def save_plan(self, feed: str, item: Item, steps: Sequence[NewStep], *, now: float) -> None:
        """Record the item's steps (actions held) and mark it planned, atomically."""
        self.save_plans(feed, [(item, steps, True)], now=now)

    def save_plans(
        self, feed: str, plans: Sequence[tuple[Item, Sequence[NewStep], bool]], *, now: float
    ) -> None:
        """Record each item's steps (actions held) and mark it planned, all in one
        transaction; an item's data is rewritten when flagged (its detail was fetched)."""
        if not plans:
            return
        with self.transaction() as db:
            db.executemany(
                "UPDATE items SET state=? WHERE feed=? AND item_id=?",
                [(PLANNED, feed, item.id) for item, _, changed in plans if not changed],
            )
            db.executemany(
                "UPDATE items SET state=?, data=? WHERE feed=? AND item_id=?",
                [(PLANNED, json.dumps(item.to_json()), feed, item.id)
                 for item, _, changed in plans if changed],
            )  # fmt: skip
            db.executemany(
                "INSERT OR IGNORE INTO steps (id, feed, item_id, rule, kind, target, status, "
                "payload, due_at, created_at, last_error, done_at, batch, batch_at, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (s.id, feed, item.id, s.rule, s.kind, s.target, _initial(s),
                     json.dumps(s.payload), s.due_at, now, s.error or None,
                     now if s.error else None, s.batch, s.batch_at, s.reason)
                    for item, steps, _ in plans for s in steps
                ],
            )  # fmt: skip

    def release_actions(self, feed: str, limit: int, *, now: float) -> dict[str, int]:
        """Let held actions run, except a rule's that acts on more than ``limit`` items;
        those are refused. Returns the refused rules with their item counts."""
        held = "SELECT 1 FROM steps WHERE feed=? AND status=? LIMIT 1"
        if self.db.execute(held, (feed, HELD)).fetchone() is None:
            return {}  # the usual idle poll: no write transaction
        with self.transaction() as db:
            counts = db.execute(
                "SELECT rule, count(DISTINCT item_id) FROM steps WHERE feed=? AND status=? "
                "GROUP BY rule", (feed, HELD)
            ).fetchall()  # fmt: skip
            refused = {rule: n for rule, n in counts if n > limit}
            for rule in refused:
                db.execute(
                    "UPDATE steps SET status=?, done_at=? WHERE feed=? AND rule=? AND status=?",
                    (REFUSED, now, feed, rule, HELD),
                )
            db.execute("UPDATE steps SET status=? WHERE feed=? AND status=?", (PENDING, feed, HELD))
        return refused

    def drop_item(self, feed: str, item_id: str) -> None:
        self.db.execute(
            "UPDATE items SET state=? WHERE feed=? AND item_id=?", (DROPPED, feed, item_id)
        )

    # --- the outbox ------------------------------------------------------------------

    def pending_steps(self, kind: str) -> list[StepRecord]:
        """Pending steps of ``kind`` in creation order; actions only once their rule delivered."""
        ready = (
            "" if kind == "deliver" else
            " AND NOT EXISTS (SELECT 1 FROM steps d WHERE d.feed=s.feed AND d.item_id=s.item_id"
            " AND d.rule=s.rule AND d.kind='deliver' AND d.status!='done')"
        )  # fmt: skip
        rows = self.db.execute(
            "SELECT seq, id, feed, item_id, rule, kind, target, payload, attempts, due_at, "
            f"batch, batch_at, reason FROM steps s WHERE status=? AND kind=?{ready} ORDER BY seq",
            (PENDING, kind),
        )
        return [
            StepRecord(seq, sid, feed, item, rule, kind_, target, json.loads(payload), *rest)
            for seq, sid, feed, item, rule, kind_, target, payload, *rest in rows
        ]

    def finish_step(self, step_id: str, *, now: float, status: str = DONE, error: str = "") -> None:
        self.db.execute(
            "UPDATE steps SET status=?, done_at=?, last_error=?, attempts=attempts+1 WHERE id=?",
            (status, now, error or None, step_id),
        )

    def finish_steps(self, ids: Sequence[str], *, now: float) -> None:
        """Steps sent together (a digest) recorded done together."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE steps SET status=?, done_at=?, last_error=NULL, attempts=attempts+1 "
                "WHERE id=?",
                [(DONE, now, sid) for sid in ids],
            )

    def retry_step(self, step_id: str, *, due_at: float, error: str) -> None:
        """Tried and refused: due again at ``due_at``; a held step's reason is over (it
        waits for its retry now), one sent by hand stays so."""
        self.db.execute(
            "UPDATE steps SET attempts=attempts+1, due_at=?, last_error=?, "
            "reason=CASE WHEN reason=? THEN reason END WHERE id=?",
            (due_at, error, FORCED, step_id),
        )

    def cancel_actions(self, feed: str, item_id: str, rule: str, *, now: float) -> None:
        """A delivery of this rule failed for good: its actions must not run."""
        self.db.execute(
            "UPDATE steps SET status=?, done_at=? WHERE feed=? AND item_id=? AND rule=? "
            "AND kind='act' AND status IN (?, ?)",
            (CANCELLED, now, feed, item_id, rule, PENDING, HELD),
        )

    def outbox_depth(self) -> int:
        return self.outbox()[0]

    def outbox(self) -> tuple[int, float | None]:
        """(pending steps, creation time of the oldest)."""
        depth, oldest = self.db.execute(
            "SELECT count(*), min(created_at) FROM steps WHERE status=?", (PENDING,)
        ).fetchone()
        return int(depth), oldest

    def deliveries_failed(self, *, since: float) -> int:
        """Notifications refused for good (or not rendered) since ``since``."""
        (count,) = self.db.execute(
            "SELECT count(*) FROM steps WHERE kind='deliver' AND status=? AND done_at>=?",
            (FAILED, since),
        ).fetchone()
        return int(count)

    def struggling_sinks(self, attempts: int) -> dict[str, int]:
        """Sinks with a pending delivery tried at least ``attempts`` times → most attempts."""
        rows = self.db.execute(
            "SELECT target, max(attempts) FROM steps WHERE status=? AND kind='deliver' "
            "AND attempts>=? GROUP BY target", (PENDING, attempts)
        )  # fmt: skip
        return {target: int(n) for target, n in rows}

    def prune(self, *, before: float, forget_before: float) -> None:
        """Drop finished steps and item bodies older than ``before``; ids (for dedup) until
        ``forget_before``."""
        self._listed.clear()  # forgotten ids are new again when listed
        with self.transaction() as db:
            db.execute(
                "DELETE FROM steps WHERE status NOT IN (?, ?) AND done_at<?",
                (PENDING, HELD, before),
            )
            db.execute(
                "UPDATE items SET data=NULL WHERE state!=? AND seen_at<? AND data IS NOT NULL AND "
                "NOT EXISTS (SELECT 1 FROM steps s WHERE s.feed=items.feed AND "
                "s.item_id=items.item_id AND s.status=?)",
                (NEW, before, PENDING),
            )
            db.execute(
                "DELETE FROM items WHERE data IS NULL AND state!=? AND seen_at<?",
                (NEW, forget_before),
            )

    # --- seen and handled from the command line (`inboxbot status|outbox|retry|drop`) ---

    def record_failing(self, key: str, failing: Failing) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO failing (key, since, reason, auth, retry_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, failing.since, failing.reason, int(failing.auth), failing.retry_at),
        )

    def clear_failing(self, key: str | None = None) -> None:
        """One key recovered; without a key, all."""
        if key is None:
            self.db.execute("DELETE FROM failing")
        else:
            self.db.execute("DELETE FROM failing WHERE key=?", (key,))

    def failing(self) -> dict[str, Failing]:
        rows = self.db.execute("SELECT key, since, reason, auth, retry_at FROM failing")
        return {key: Failing(why, since, bool(auth), at) for key, since, why, auth, at in rows}

    def record_push(self, feed: str, connected: bool, what: str, *, now: float) -> bool:
        """A push channel's state; True when it changed (connected or not)."""
        row = self.db.execute("SELECT connected FROM push WHERE feed=?", (feed,)).fetchone()
        changed = row is None or bool(row[0]) != connected
        self.db.execute(
            "INSERT INTO push (feed, connected, what, since) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (feed) DO UPDATE SET connected=excluded.connected, what=excluded.what, "
            "since=CASE WHEN push.connected=excluded.connected THEN push.since ELSE "
            "excluded.since END, reconnects=push.reconnects + "
            "(excluded.connected AND NOT push.connected)",
            (feed, int(connected), what, now),
        )
        return changed

    def clear_pushes(self) -> None:
        """A daemon starting: what an earlier one had connected is not connected now."""
        self.db.execute("DELETE FROM push")

    def pushes(self) -> dict[str, tuple[bool, str, float, int]]:
        """Feed → (connected, what, since, reconnects) of its push channel."""
        rows = self.db.execute("SELECT feed, connected, what, since, reconnects FROM push")
        return {feed: (bool(up), what, since, n) for feed, up, what, since, n in rows}

    def polled(self) -> dict[str, float]:
        """Each feed's last good poll."""
        return {**dict(self.db.execute("SELECT feed, polled_at FROM feeds")), **self._polled}

    def steps(self, statuses: Sequence[str], sink: str | None = None) -> list[StepView]:
        """Steps in one of ``statuses`` (deliveries to ``sink`` only, if given), oldest first."""
        marks = ",".join("?" * len(statuses))
        where = f"status IN ({marks})" + (" AND kind='deliver' AND target=?" if sink else "")
        rows = self.db.execute(
            "SELECT id, status, kind, target, rule, feed, item_id, attempts, due_at, "
            f"last_error, created_at, reason, batch FROM steps WHERE {where} ORDER BY seq",
            (*statuses, *([sink] if sink else [])),
        )
        return [StepView(*row) for row in rows]

    def step_ids(self, prefix: str, limit: int = 3) -> list[tuple[str, str]]:
        """Up to ``limit`` (id, status) of the steps whose id starts with ``prefix`` (hex)."""
        rows = self.db.execute(
            "SELECT id, status FROM steps WHERE id>=? AND id<? ORDER BY id LIMIT ?",
            (prefix, prefix + "g", limit),
        )
        return [(sid, status) for sid, status in rows]

    def retry_steps(self, ids: Sequence[str], *, now: float) -> int:
        """Make pending steps due now, and failed ones pending and due now (with the
        actions their failure cancelled); returns how many steps changed."""
        with self.transaction() as db:
            changed = 0
            for sid in ids:
                failed = db.execute(
                    "SELECT feed, item_id, rule FROM steps WHERE id=? AND status=? AND kind=?",
                    (sid, FAILED, "deliver"),
                ).fetchone()
                changed += db.execute(
                    "UPDATE steps SET status=?, due_at=min(due_at, ?), done_at=NULL, "
                    "batch_at=CASE WHEN batch IS NULL THEN NULL ELSE ? END, "
                    "reason=CASE WHEN reason IS NULL THEN NULL ELSE ? END "
                    "WHERE id=? AND status IN (?, ?)",
                    (PENDING, now, now, FORCED, sid, PENDING, FAILED),
                ).rowcount
                if failed:  # cancel_actions left no error on the actions it cancelled
                    db.execute(
                        "UPDATE steps SET status=?, done_at=NULL WHERE feed=? AND item_id=? "
                        "AND rule=? AND kind='act' AND status=? AND last_error IS NULL AND NOT "
                        "EXISTS (SELECT 1 FROM steps d WHERE d.feed=steps.feed AND d.item_id="
                        "steps.item_id AND d.rule=steps.rule AND d.kind='deliver' AND d.status "
                        "IN (?, ?))",  # while another delivery of the rule failed, they wait
                        (PENDING, *failed, CANCELLED, FAILED, DROPPED),
                    )
        return changed

    def drop_steps(self, ids: Sequence[str], *, now: float) -> int:
        """End unfinished steps on purpose; a dropped delivery cancels its rule's actions."""
        with self.transaction() as db:
            changed = 0
            for sid in ids:
                row = db.execute(
                    "SELECT feed, item_id, rule, kind FROM steps WHERE id=? AND status IN "
                    "(?, ?, ?)",
                    (sid, PENDING, HELD, FAILED),
                ).fetchone()
                if row is None:
                    continue
                db.execute("UPDATE steps SET status=?, done_at=? WHERE id=?", (DROPPED, now, sid))
                changed += 1
                if row[3] == "deliver":
                    self.cancel_actions(row[0], row[1], row[2], now=now)
        return changed

    def due_now(self, sink: str, *, now: float) -> int:
        """Pending deliveries to ``sink`` waiting for a retry become due now."""
        return self.db.execute(
            "UPDATE steps SET due_at=? WHERE status=? AND kind='deliver' AND target=? AND due_at>?",
            (now, PENDING, sink, now),
        ).rowcount


def _initial(step: NewStep) -> str:
    """A new step's status: actions held until their batch is planned; an unrendered
    step failed (``inboxbot retry`` renders it again)."""
    return FAILED if step.error else HELD if step.kind == "act" else PENDING
