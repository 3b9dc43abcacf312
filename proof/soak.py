"""Soak: a week of polling compressed into minutes. Many Mail.td feeds at ``every: 1s``,
mail arriving all the time, a webhook and ``then:`` actions (mark_read, a delayed delete),
a SIGHUP reload every 30 s, the webhook flapping (down 10 s a minute: 503, then refusing)
and a retention of 20 s. Sampled from outside every 2 s: RSS, fds and threads (/proc),
asyncio tasks and poll durations (/metrics), the state database's size on disk. The
deliveries and actions are counted on the receiver and the simulator."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.sim.e621 import E621Sim
from bot.sim.mailtd import SimAccount, SimMessage
from proof.common import (
    CountingMailTd,
    CountingReceiver,
    Inboxbot,
    Result,
    add_mail,
    until,
    write_config,
)
from proof.soak_figures import Pace, Sample, Windows, verdict

RULES = """\
- name: new-mail
  when: {kind: email}
  notify: [{sink: hooks, template: email}]
  then: [mark_read, {delete: {after: 3s}}]
- name: new-dmail
  when: {kind: dmail}
  notify: [{sink: hooks, template: email}]
"""
ART = """\
  art:
    type: e621
    base_url: {url}
    username: {user.name}
    api_key: {user.api_key}
    feeds: {{dmails: {{every: 2s}}}}
"""
ACCOUNTS = 34  # 34 feeds at 1 s poll as often in 5 min as one feed at `every: 1m` in a week
MAILS_PER_SECOND = 3.0
DMAILS_PER_SECOND = 0.2  # and e621 DMails to one more feed (e621 asks for 1 request/s)
SETTLE = 60.0  # seconds allowed at the end for the last deliveries and actions


class IndexedMailTd(CountingMailTd):
    """The counting simulator with each mailbox's messages at hand: its list otherwise
    scans every message ever sent to any mailbox, a cost that grows over the soak and would
    show as a slower poll of inboxbot's."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inboxes: dict[str, list[SimMessage]] = {}

    def add_message(self, account: SimAccount | str, **kwargs: Any) -> str:
        message_id = super().add_message(account, **kwargs)
        message = self.messages[message_id]
        self.inboxes.setdefault(message.account_id, []).append(message)
        return message_id

    def _visible(self, account: SimAccount) -> list[SimMessage]:
        inbox = self.inboxes[account.id] = [
            m for m in self.inboxes.get(account.id, []) if not m.deleted
        ]
        return sorted(inbox, key=lambda m: (m.created_at, m.id), reverse=True)


@dataclass
class World:
    sim: IndexedMailTd
    hook: CountingReceiver
    bot: Inboxbot
    accounts: list[SimAccount]
    rng: random.Random
    pace: Pace
    e621: E621Sim = field(default_factory=E621Sim)
    sent: list[str] = field(default_factory=list)
    dmails: list[str] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # s since the start, as sent
    samples: list[Sample] = field(default_factory=list)
    closes: list[float] = field(default_factory=list)  # when the receiver's port was closed
    reloads: int = 0
    started: float = 0.0

    async def feed(self, stop: asyncio.Event) -> None:
        """Mail at random moments (Poisson, MAILS_PER_SECOND) to random accounts."""
        while not stop.is_set():
            await asyncio.sleep(self.rng.expovariate(MAILS_PER_SECOND))
            account = self.rng.choice(self.accounts)
            self.sent.append(add_mail(self.sim, account, f"soak {len(self.sent)}"))
            self.arrived.append(time.monotonic() - self.started)

    async def dmail(self, stop: asyncio.Event) -> None:
        artist, friend = self.e621.user_named("soak_artist"), self.e621.user_named("friend")
        assert artist and friend
        while not await _wait(stop, self.rng.expovariate(DMAILS_PER_SECOND)):
            n = len(self.dmails)
            self.dmails.append(str(self.e621.send_dmail(friend, artist, f"dm {n}", "hello")))

    async def reload(self, stop: asyncio.Event) -> None:
        """SIGHUP with a changed configuration (a harmless value toggled)."""
        config = self.bot.config
        while not await _wait(stop, self.pace.reload_every):
            text = config.read_text()
            old, new = ("100000", "100001") if ": 100000\n" in text else ("100001", "100000")
            config.write_text(text.replace(f"poll: {old}\n", f"poll: {new}\n"))
            assert self.bot.proc is not None
            self.bot.proc.send_signal(signal.SIGHUP)
            self.reloads += 1

    async def flap(self, stop: asyncio.Event) -> None:
        """Every ``flap_every`` the webhook answers 503 for half of ``flap_down``, then its
        port refuses connections for the other half."""
        while not await _wait(stop, self.pace.flap_every - self.pace.flap_down):
            self.hook.unavailable = True
            await asyncio.sleep(self.pace.flap_down / 2)
            self.closes.append(time.monotonic())
            await self.hook.close()
            await asyncio.sleep(self.pace.flap_down / 2)
            self.hook.unavailable = False
            await self.hook.start()

    async def sample(self, stop: asyncio.Event) -> None:
        self.started = time.monotonic()
        while True:
            self.samples.append(await self.take_sample())
            if await _wait(stop, self.pace.sample_every):
                return

    async def take_sample(self) -> Sample:
        assert self.bot.proc is not None
        at = time.monotonic() - self.started
        rss_kb, threads, fds = _process(self.bot.proc.pid)
        _, metrics = await self.bot.get("/metrics")
        return Sample(
            at=at, rss_kb=rss_kb, threads=threads, fds=fds,
            tasks=_metric(metrics, "inboxbot_tasks"),
            db_bytes=_db_bytes(self.bot.config.parent / "state.db"),
            poll_s=_metric(metrics, "inboxbot_poll_duration_seconds_sum"),
            polls=_metric(metrics, "inboxbot_poll_duration_seconds_count"),
        )  # fmt: skip


def _process(pid: int) -> tuple[int, int, int]:
    """RSS (kB), threads and open fds of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    return _status(status, "VmRSS"), _status(status, "Threads"), len(os.listdir(f"/proc/{pid}/fd"))


def _db_bytes(db: Path) -> int:
    """The database on disk: its file and its write-ahead log."""
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop``; whether it stopped."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


def _status(text: str, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+)", text, re.M)
    return int(match.group(1)) if match else 0


def _metric(text: str, name: str) -> float:
    """The sum over all label sets of ``name`` in a Prometheus exposition."""
    pattern = re.compile(rf"^{name}(?:{{[^}}]*}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


async def run(tmp: Path, *, minutes: float, seed: int) -> list[Result]:
    pace = Pace(minutes * 60)
    world = World(IndexedMailTd(rate_limit=20), CountingReceiver(), None, [],  # type: ignore[arg-type]
                  random.Random(seed), pace)  # fmt: skip
    await world.sim.start()
    await world.hook.start()
    await world.e621.start()
    artist = world.e621.add_user("soak_artist")
    world.e621.add_user("friend")
    world.accounts = [world.sim.add_account(f"soak{n}@mail.td") for n in range(ACCOUNTS)]
    for account in world.accounts:
        account.rate_limit = 20
    extra = (f"state: state.db\nretention: {pace.retention:g}s\n"
             "max_actions_per_poll: 100000\n")  # fmt: skip
    config = write_config(tmp, world.sim, world.accounts, world.hook.url, RULES, extra=extra)
    art = ART.format(url=world.e621.base_url, user=artist)
    config.write_text(config.read_text().replace("sinks:\n", art + "sinks:\n", 1))
    world.bot = Inboxbot(config, tmp / "soak.log")
    try:
        await world.bot.start()
        if not await until(lambda: world.sim.counts["messages.list"] >= ACCOUNTS, 30):
            raise RuntimeError(f"inboxbot did not start polling; see {world.bot.log}")
        status, settled = await _soak(world)
        _write_samples(tmp / "samples.csv", world.samples)
    finally:
        await world.bot.kill()
        await world.hook.stop()
        await world.sim.stop()
        await world.e621.stop()
    return [_result(world, status, settled, db_rows(tmp / "state.db", pace.retention))]


async def _soak(world: World) -> tuple[int, bool]:
    stop = asyncio.Event()
    sampler = asyncio.create_task(world.sample(stop))
    others = [
        asyncio.create_task(w(stop)) for w in (world.feed, world.dmail, world.reload, world.flap)
    ]
    await asyncio.sleep(world.pace.seconds)
    stop.set()
    await asyncio.gather(sampler, *others)
    settled = await until(lambda: _settled(world), SETTLE)
    world.samples.append(await world.take_sample())
    return await world.bot.stop(), settled


def _settled(world: World) -> bool:
    delivered = {str(b["item_id"]) for b in world.hook.received}
    mails = all(i in delivered and world.sim.message(i).deleted for i in world.sent)
    return mails and delivered >= set(world.dmails)


def _write_samples(path: Path, samples: list[Sample]) -> None:
    """The figures over time, for a look at a run kept with ``--keep``."""
    names = list(Sample.__dataclass_fields__)
    rows = [",".join(str(getattr(s, n)) for n in names) for s in samples]
    path.write_text("\n".join([",".join(names), *rows]) + "\n")


def db_rows(path: Path, retention: float) -> int:
    """Rows the retention should have removed by now (finished steps and item bodies older
    than twice the retention: one retention plus the prune interval, with slack)."""
    before = time.time() - 2 * retention
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        (steps,) = db.execute("SELECT count(*) FROM steps WHERE status NOT IN ('pending', "
                              "'held') AND done_at<?", (before,)).fetchone()  # fmt: skip
        (bodies,) = db.execute("SELECT count(*) FROM items WHERE data IS NOT NULL AND "
                               "state!='new' AND seen_at<?", (before,)).fetchone()  # fmt: skip
    return int(steps) + int(bodies)


def _result(world: World, status: int, settled: bool, stale_rows: int) -> Result:
    log = world.bot.log.read_text(errors="replace")
    windows = Windows(world.samples, world.pace.seconds)
    return verdict(
        windows, sent=world.sent, dmails=world.dmails, arrived=world.arrived,
        hook=world.hook, sim=world.sim, closes=world.closes,
        reloads=(world.reloads, log.count("event=reloaded")), tracebacks=log.count("Traceback"),
        stale_rows=stale_rows, settled=settled, status=status, pace=world.pace,
        accounts=ACCOUNTS,
    )  # fmt: skip
