"""Outage: the webhook answers 503 for M minutes, then refuses connections for M more,
while mail keeps arriving; then it recovers. The same for the upstream (the Mail.td
simulator answering 503, then its port closed). Counted on the receiver and the
simulator; ``/healthz`` polled every second throughout. The two run side by side, each
with its own daemon, simulator and receiver."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.delivery import BACKOFF_CAP
from bot.polling import FEED_REST_CAP
from bot.sim.mailtd import SimAccount
from proof.common import (
    RATE,
    CountingMailTd,
    CountingReceiver,
    Inboxbot,
    Result,
    add_mail,
    until,
    write_config,
)

RULES = """\
- name: new-mail
  when: {kind: email}
  notify: [{sink: hooks, template: email}]
"""
ACCOUNTS = 3
TARGET = re.compile(r'target=("[^"]*"|\S+)')
SETTLE = 180.0  # seconds allowed after recovery for the queue to drain


@dataclass
class World:
    sim: CountingMailTd
    hook: CountingReceiver
    bot: Inboxbot
    accounts: list[SimAccount]
    rng: random.Random
    sent: dict[str, list[str]] = field(default_factory=dict)  # per account, in arrival order
    health: list[int] = field(default_factory=list)

    def all_sent(self) -> set[str]:
        return {i for ids in self.sent.values() for i in ids}

    async def feed(self, stop: asyncio.Event) -> None:
        """1–3 mails a second to one account (several within one second, on purpose)."""
        while not stop.is_set():
            account = self.rng.choice(self.accounts)
            for _ in range(self.rng.randint(1, 3)):
                mail = add_mail(self.sim, account, f"outage {time.monotonic():.3f}")
                self.sent.setdefault(account.address, []).append(mail)
            await asyncio.sleep(1.0)

    async def watch_health(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.health.append((await self.bot.get("/healthz"))[0])
            await asyncio.sleep(1.0)


Step = Callable[[World, int], Awaitable[None]]


async def run(tmp: Path, *, minutes: float, seed: int) -> list[Result]:
    """The sink's outage and the upstream's, side by side (one daemon each)."""
    (tmp / "sink").mkdir()
    (tmp / "upstream").mkdir()
    return list(await asyncio.gather(
        _world(tmp / "sink", minutes, seed, "webhook", _sink_down, _sink_up),
        _world(tmp / "upstream", minutes, seed + 1, "Mail.td", _upstream_down, _upstream_up),
    ))  # fmt: skip


async def _world(tmp: Path, minutes: float, seed: int, what: str, down: Step,
                 up: Callable[[World], Awaitable[None]]) -> Result:  # fmt: skip
    world = World(CountingMailTd(rate_limit=20), CountingReceiver(), None, [], random.Random(seed))  # type: ignore[arg-type]
    await world.sim.start()
    await world.hook.start()
    world.accounts = [world.sim.add_account(f"out{n}@mail.td") for n in range(ACCOUNTS)]
    for account in world.accounts:
        account.rate_limit = 20
    config = write_config(tmp, world.sim, world.accounts, world.hook.url, RULES)
    world.bot = Inboxbot(config, tmp / "outage.log")
    await world.bot.start()
    stop_health = asyncio.Event()
    health = asyncio.create_task(world.watch_health(stop_health))
    try:
        await asyncio.sleep(3)
        result = await _phase(world, minutes, what, down, up)
    finally:
        stop_health.set()
        await health
        status = await world.bot.stop()
        await world.hook.stop()
        await world.sim.stop()
    result.counts["final exit"] = status
    result.passed = result.passed and status == 0
    return result


async def _sink_down(world: World, stage: int) -> None:
    if stage == 0:
        world.hook.unavailable = True
    else:
        await world.hook.close()


async def _sink_up(world: World) -> None:
    world.hook.unavailable = False
    await world.hook.start()


async def _upstream_down(world: World, stage: int) -> None:
    if stage == 0:
        world.sim.set_down(True)
    else:
        await world.sim.stop()


async def _upstream_up(world: World) -> None:
    world.sim.set_down(False)
    await world.sim.start()


async def _phase(world: World, minutes: float, what: str, down: Step,
                 up: Callable[[World], Awaitable[None]]) -> Result:  # fmt: skip
    log_start = world.bot.log.stat().st_size
    health_start = len(world.health)
    received_start = len(world.hook.received)
    stop = asyncio.Event()
    feeder = asyncio.create_task(world.feed(stop))
    await down(world, 0)
    await asyncio.sleep(minutes * 60)
    await down(world, 1)
    await asyncio.sleep(minutes * 60)
    stop.set()
    await feeder
    during = len(world.hook.received) - received_start
    await up(world)
    recovered = time.monotonic()
    wanted = world.all_sent()
    delivered = await until(lambda: _delivered(world.hook) >= wanted, SETTLE)
    after = world.hook.times[received_start:]
    drain = (min(after, default=recovered) - recovered, max(after, default=recovered) - recovered)
    await asyncio.sleep(3)  # nothing more may come
    return _verdict(world, what, minutes, log_start, health_start, during, delivered, drain)


def _delivered(hook: CountingReceiver) -> set[str]:
    return {str(b["item_id"]) for b in hook.received}


def _order_breaks(world: World) -> int:
    """Pairs of one account's mails delivered in another order than they arrived."""
    first = world.hook.first_delivery()
    breaks = 0
    for ids in world.sent.values():
        times = [first[i] for i in ids if i in first]
        breaks += sum(1 for a, b in itertools.pairwise(times) if b < a)
    return breaks


def _bounds(world: World, what: str) -> tuple[float, float]:
    """How soon after recovery the first and the last delivery must come: the sink's backoff
    cap; the upstream's rest cap, plus, for the last, one detail request per mail that
    arrived meanwhile at the feed's rate (the busiest account's)."""
    if what == "webhook":
        return BACKOFF_CAP + 5, BACKOFF_CAP + 10
    fetches = max(len(ids) for ids in world.sent.values()) / RATE
    return FEED_REST_CAP + 5, FEED_REST_CAP + 10 + fetches


def _verdict(world: World, what: str, minutes: float, log_start: int, health_start: int,
             during: int, delivered: bool, drain: tuple[float, float]) -> Result:  # fmt: skip
    sent = world.all_sent()
    got = _delivered(world.hook)
    with world.bot.log.open("rb") as f:
        f.seek(log_start)
        lines = f.read().decode(errors="replace").splitlines()
    target = 'target="sink hooks"' if what == "webhook" else "target=box"
    about = [ln for ln in lines if target in ln]  # failing, recovered, and anything else
    targets = Counter(m.group(1) for ln in about if (m := TARGET.search(ln)))
    worst = max(targets.values(), default=0)
    bound = _bounds(world, what)
    unhealthy = sum(1 for s in world.health[health_start:] if s != 200)
    counts = {
        "mails": len(sent), "delivered %": round(100 * len(sent & got) / max(len(sent), 1), 1),
        "delivered while down": during, "duplicates": world.hook.duplicates(),
        "unknown items": len(got - sent), "order breaks": _order_breaks(world),
        "healthz not 200": f"{unhealthy}/{len(world.health) - health_start}",
        "log lines about it (most per target)": f"{len(about)} ({worst})",
        "recovery → first delivery s": round(drain[0], 1),
        "recovery → last delivery s": round(drain[1], 1),
        "bound s": round(bound[1], 1),
    }  # fmt: skip
    passed = (delivered and counts["duplicates"] == counts["unknown items"] == 0
              and counts["order breaks"] == 0 and unhealthy == 0
              and worst <= 2 and drain[0] <= bound[0] and drain[1] <= bound[1])  # fmt: skip
    notes = [] if worst <= 2 else [f"log: {ln[:200]}" for ln in about[:4]]
    tried = (f"{what} answers 503 for {minutes:g} min, then refuses connections for "
             f"{minutes:g} min, 1–3 mails a second to {ACCOUNTS} accounts; "
             "then it recovers: the first delivery within its retry cap + 5 s, the last within "
             "the cap + 10 s, plus for the upstream one detail request per waiting mail at the "
             f"feed's rate of {RATE}/s")  # fmt: skip
    name = "outage (sink)" if what == "webhook" else "outage (upstream)"
    return Result(name, tried, counts, passed, notes)
