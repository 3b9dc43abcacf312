"""What running for weeks needs (found by the proof's soak): the state pruned on the
retention's own schedule, and a task count an operator can watch for a leak."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import time
from datetime import timedelta

from bot.daemon import prune_trigger
from tests.conftest import Daemon, Setup


def test_a_short_retention_is_pruned_four_times_a_period_a_long_one_every_6_hours() -> None:
    assert prune_trigger(timedelta(days=30)).interval == timedelta(hours=6)
    assert prune_trigger(timedelta(hours=8)).interval == timedelta(hours=2)
    assert prune_trigger(timedelta(seconds=20)).interval == timedelta(seconds=5)
    assert prune_trigger(timedelta(0)).interval == timedelta(seconds=1)


def _finished_rows(setup: Setup) -> int:
    with sqlite3.connect(f"file:{setup.tmp / 'state.db'}?mode=ro", uri=True) as db:
        (steps,) = db.execute("SELECT count(*) FROM steps WHERE status='done'").fetchone()
        (bodies,) = db.execute("SELECT count(*) FROM items WHERE data IS NOT NULL").fetchone()
    return int(steps) + int(bodies)


async def test_the_daemon_prunes_what_is_older_than_a_short_retention(
    setup: Setup, daemon: Daemon
) -> None:
    """Pruning ran every 6 hours whatever the retention: a `retention: 2s` kept its rows."""
    setup.write(extra="retention: 2s\n")
    setup.sim.add_message(setup.account, sender="a@example.com", subject="hi", text_body="x")
    await daemon.start()
    await daemon.wait_for("event=delivered")
    deadline = time.monotonic() + 20
    while _finished_rows(setup) == 0:  # the delivery, the mark_read, the item's body
        assert time.monotonic() < deadline, "never stored"
        await asyncio.sleep(0.1)
    deadline = time.monotonic() + 8  # 2 s of retention, then a prune within 1 s
    while _finished_rows(setup):
        assert time.monotonic() < deadline, "not pruned after the retention"
        await asyncio.sleep(0.2)
    assert len(setup.hook.received) == 1  # pruned, not forgotten: the mail is not new again
    await asyncio.sleep(2.5)
    assert len(setup.hook.received) == 1
    daemon.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(daemon.proc.wait(), 15) == 0


async def test_metrics_count_the_daemons_asyncio_tasks(daemon: Daemon) -> None:
    await daemon.start()
    await daemon.wait_for("READY=1")
    _, metrics = await daemon.get("/metrics")
    match = re.search(r"^inboxbot_tasks (\S+)$", metrics, re.M)
    assert match and float(match.group(1)) >= 1, metrics[:500]
