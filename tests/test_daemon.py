"""The daemon as a user runs it: `inboxbot once`, `inboxbot run` stopped by SIGTERM, and
killed by SIGKILL at random moments during a burst of mail."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Setup

STOP_BOUND = 10.0


async def inboxbot(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config), *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "INBOXBOT_LOG_LEVEL": "info", "INBOXBOT_LISTEN": ""},
        cwd=config.parent,  # the default state file is ./state.db
    )  # fmt: skip


async def until(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return False


def mails(setup: Setup, n: int) -> list[str]:
    return [
        setup.sim.add_message(
            setup.account, sender="s@example.com", subject=f"burst {random.random()}", text_body="b"
        )
        for _ in range(n)
    ]


async def test_once_delivers_and_exits_0_then_1_when_a_feed_fails(setup: Setup) -> None:
    ids = mails(setup, 3)
    config = setup.write()
    proc = await inboxbot(config, "once")
    assert await proc.wait() == 0
    assert sorted(b["item_id"] for b in setup.hook.received) == sorted(ids)
    assert all(setup.sim.message(i).is_read for i in ids)
    setup.sim.set_down(True)
    proc = await inboxbot(config, "once")
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"event=failing" in err and setup.account.token.encode() not in err


async def test_sigterm_stops_within_the_bound_with_work_in_flight(setup: Setup) -> None:
    ids = mails(setup, 20)
    setup.hook.delay = 0.5  # deliveries are in flight when the signal comes
    config = setup.write()
    proc = await inboxbot(config, "run")
    assert await until(lambda: len(setup.hook.received) >= 2, 20)
    setup.sim.inject("latency", seconds=5.0, count=5)  # and a poll hangs past its timeout
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), STOP_BOUND + 5)
    took = time.monotonic() - started
    assert proc.returncode == 0, err.decode()
    assert took <= STOP_BOUND + 1.5, f"stopping took {took:.1f}s"
    assert b"event=stopped" in err
    # what was in flight resumes at the next start: every mail once
    setup.hook.delay = 0.0
    setup.sim.faults.clear()
    proc = await inboxbot(config, "run")
    assert await until(lambda: {b["item_id"] for b in setup.hook.received} >= set(ids), 30)
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    assert setup.hook.duplicates() <= 1  # at most the one delivery cut by the signal


KILLS = 24


@pytest.mark.slow
async def test_sigkill_at_random_moments_loses_nothing(setup: Setup) -> None:
    """Several hundred mails arrive while the daemon is killed 24 times. At the end
    every mail was notified; a duplicate can only come from a delivery the receiver
    accepted just before a kill and before the store recorded it, at most one per
    kill (deliveries to one sink go one at a time)."""
    rng = random.Random(2026)
    setup.account.rate_limit = 10  # a Pro account: the details of 300 mails take 30 s, not 80
    config = setup.write(extra="max_actions_per_poll: 10000\n", rate=10)
    sent: list[str] = []
    t0 = time.monotonic()
    for _ in range(KILLS):
        sent += mails(setup, 14)
        proc = await inboxbot(config, "run")
        await asyncio.sleep(rng.uniform(0.3, 3.0))
        proc.kill()
        await proc.wait()
    print(f"\nkills done at {time.monotonic() - t0:.1f}s")
    proc = await inboxbot(config, "run")
    done = await until(lambda: {b["item_id"] for b in setup.hook.received} >= set(sent), 120)
    assert await until(lambda: all(setup.sim.message(i).is_read for i in sent), 30)
    print(f"all delivered at {time.monotonic() - t0:.1f}s")
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    duplicates = setup.hook.duplicates()
    print(
        f"\ncrash test: {KILLS} kills, {len(sent)} mails, {len(setup.hook.received)} received, {duplicates} duplicates (bound: {KILLS})"
    )
    assert done, f"missing: {len(set(sent) - {b['item_id'] for b in setup.hook.received})}"
    assert duplicates <= KILLS


async def test_the_demo_shows_notifications_and_ends_by_itself() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "demo", "--duration", "8",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, err.decode()
    for feed in ("demo/messages", "mm/mails", "fur/dmails", "fur/comments", "chat/dms"):
        assert f"── {feed} ".encode() in out, feed  # all five feeds, from their seeded inboxes
    assert b"level=error" not in err
