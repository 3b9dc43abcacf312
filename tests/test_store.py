"""The store: dedup across polls, resumable steps, and pruning that keeps what dedup needs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bot.item import Item
from bot.store import DONE, NewStep, Store

T = 1_000_000.0


def item(n: int) -> Item:
    return Item(
        account="a", feed="f", kind="email", id=f"m{n}", created_at=datetime(2026, 1, 1, tzinfo=UTC)
    )


def step(n: int, kind: str = "deliver") -> NewStep:
    return NewStep(
        f"s{n}-{kind}", "rule", kind, "sink" if kind == "deliver" else "mark_read", {"n": n}, T
    )


def test_a_poll_stores_only_unseen_items_and_moves_the_cursor(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.record_poll("a/f", [item(1), item(2)], "c1", now=T, skip=False) == 2
    assert store.record_poll("a/f", [item(2), item(3)], "c2", now=T, skip=False) == 1
    assert store.cursor("a/f") == (True, "c2")
    assert [i.id for i in store.new_items("a/f")] == ["m1", "m2", "m3"]


def test_pruning_drops_old_bodies_and_steps_but_keeps_ids_for_dedup(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.record_poll("a/f", [item(1), item(2)], None, now=T, skip=False)
    store.save_plan("a/f", item(1), [step(1)], now=T)
    store.save_plan("a/f", item(2), [step(2)], now=T)
    store.finish_step("s1-deliver", now=T, status=DONE)  # item 1 finished, item 2 still pending
    store.prune(before=T + 10, forget_before=T - 10)
    assert store.item("a/f", "m1") is None  # its body is gone…
    assert store.record_poll("a/f", [item(1)], None, now=T + 20, skip=False) == 0  # …not its id
    assert store.item("a/f", "m2") is not None  # pending work keeps its item
    assert [s.id for s in store.pending_steps("deliver")] == ["s2-deliver"]
    store.prune(before=T + 10, forget_before=T + 10)
    assert store.record_poll("a/f", [item(1)], None, now=T + 30, skip=False) == 1  # forgotten


def test_steps_survive_a_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.record_poll("a/f", [item(1)], None, now=T, skip=False)
    store.save_plan("a/f", item(1), [step(1), step(1, "act")], now=T)
    store.release_actions("a/f", 10, now=T)
    store.close()
    again = Store(tmp_path / "s.db")
    assert [s.id for s in again.pending_steps("deliver")] == ["s1-deliver"]
    assert again.pending_steps("act") == []  # waits for its delivery
    again.finish_step("s1-deliver", now=T)
    assert [s.id for s in again.pending_steps("act")] == ["s1-act"]


def test_feed_summary_counts_unread_items_not_yet_marked_read(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.feed_summary("a/f") == (0, None)
    unread = [replace(item(n), unread=True, subject=f"s{n}") for n in (1, 2, 3)]
    store.record_poll("a/f", [*unread, replace(item(4), unread=False)], None, now=T, skip=False)
    store.save_plan("a/f", unread[0], [step(1), step(1, "act")], now=T)
    assert store.feed_summary("a/f")[0] == 3
    store.finish_step("s1-act", now=T)  # mark_read done on item 1
    count, last = store.feed_summary("a/f")
    assert count == 2 and last is not None and last.id == "m4"
