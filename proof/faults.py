"""Fault matrix, upstream half: for each HTTP upstream feed kind (e621 DMails and comments,
Mail.td, MinuteMail, Rocket.Chat), one ``inboxbot run`` against that upstream's simulator
runs every cell in turn: a fault queued on its list request (and on its detail or page-2
request), a real message added during the fault and one after it. Verdicts rest on what
the simulator was asked and the webhook receiver got. IMAP is not in this matrix:
tests/test_imap_source.py covers its faults against Dovecot."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from proof.common import TEMPLATE, CountingReceiver, Inboxbot, Result, until
from proof.faultcells import Cell, cells
from proof.upstreams import Upstream, all_upstreams, mailtd, rocketchat

BOUND = 20.0  # seconds from the fault's end to a message's delivery
SETTLE = 1.5  # seconds after the last delivery in which nothing more may come
CHECKS = ("crash", "false new", "state change", "inside Retry-After", "not recovered")
QUICK = ("timeout", "429 Retry-After 3 s", "truncated JSON", "duplicate ids in one page",
         "detail: 429 Retry-After 3 s", "list: rid as object")  # fmt: skip


@dataclass
class Tally:
    cells: int = 0
    passed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


@dataclass
class World:
    up: Upstream
    hook: CountingReceiver
    bot: Inboxbot
    rng: random.Random
    tally: Tally = field(default_factory=Tally)
    expected: set[str] = field(default_factory=set)  # real new items, each to come once
    maybe: set[str] = field(default_factory=set)  # deleted meanwhile: once at most

    def delivered(self) -> Counter[str]:
        return Counter(str(b.get("item_id")) for b in self.hook.received)


async def run(tmp: Path, *, seed: int, quick: bool = False) -> list[Result]:
    print(f"faults: seed {seed}", flush=True)
    rng = random.Random(seed)
    ups = [await mailtd(rng), await rocketchat(rng)] if quick else await all_upstreams(rng)
    try:
        worlds = [await _world(tmp, up, rng) for up in ups]
        results = await asyncio.gather(*(_matrix(w, quick) for w in worlds))
    finally:
        for up in ups:
            await up.sim.stop()
    results[0].notes.append("IMAP is not in this matrix: tests/test_imap_source.py covers it.")
    return list(results)


async def _world(tmp: Path, up: Upstream, rng: random.Random) -> World:
    home = tmp / up.name.replace(" ", "-").replace(".", "").lower()
    (home / "templates").mkdir(parents=True, exist_ok=True)
    (home / "templates" / "email.j2").write_text(TEMPLATE)
    (home / "rules.yaml").write_text(
        f"- name: new\n  when: {{kind: {up.kind}}}\n  notify: [{{sink: hooks, template: email}}]\n"
    )
    hook = CountingReceiver()
    await hook.start()
    config = home / "inboxbot.yaml"
    config.write_text(
        f'accounts:\n{up.account}sinks:\n  hooks: {{type: webhook, url: "{hook.url}"}}\n'
        "rules: [rules.yaml]\ntemplates: [templates]\nbacklog: notify\n"
    )
    return World(up, hook, Inboxbot(config, home / "inboxbot.log"), rng)


async def _matrix(w: World, quick: bool) -> Result:
    started = time.monotonic()
    todo = cells(w.up)
    w.rng.shuffle(todo)
    if quick:
        todo = [c for c in todo if c.name in QUICK]
    w.expected |= {w.up.add(f"baseline {n}") for n in range(3)}
    await w.bot.start()
    try:
        if not await until(lambda: set(w.delivered()) >= w.expected, 30):
            w.tally.notes.append("baseline: the existing messages were not all delivered")
        else:
            for cell in todo:
                await _cell(w, cell)
    finally:
        status = await w.bot.stop()
        await w.hook.stop()
    t = w.tally
    took = round(time.monotonic() - started)
    counts: dict[str, Any] = {"cells": t.cells, "passed": t.passed,
                              **{c: t.failures[c] for c in CHECKS}, "took s": took,
                              "exit": status}  # fmt: skip
    tried = (f"{len(todo)} cells, each queued on one request: timeouts, resets, 5xx, 429 with "
             "Retry-After (seconds, HTTP-date), its own rate answers, truncated/HTML/empty "
             "bodies, wrong types, missing and duplicate ids"
             + (", shifting pages" if w.up.page else "")
             + "; a message during the fault, one after")  # fmt: skip
    passed = t.cells == t.passed == len(todo) and status == 0 and not t.notes
    return Result(f"faults ({w.up.name})", tried, counts, passed, t.notes)


async def _cell(w: World, cell: Cell) -> None:
    up, sim = w.up, w.up.sim
    log_at, asked_at, got_at = w.bot.log.stat().st_size, len(sim.requests), len(w.hook.received)
    params, until_wall = dict(cell.params), 0.0
    if cell.date_in:
        until_wall = float(int(time.time()) + cell.date_in + 1)
        stamp = format_datetime(datetime.fromtimestamp(until_wall, UTC), usegmt=True)
        params["headers"] = {"Retry-After": stamp}
    during = up.add_many(up.page + 5) if cell.shift else []
    if cell.shift:
        params["fn"] = _shifter(w, cell.shift, during)
    sim.inject(cell.kind, path=cell.path, method="GET", count=2 if cell.shift else 1, **params)
    fault = sim.faults[-1]
    if not cell.shift:
        during = [up.add(f"{cell.name} during")]
    w.expected |= set(during)
    why: dict[str, str] = {}
    if not await until(lambda: all(f is not fault for f in sim.faults), 10):
        sim.faults[:] = [f for f in sim.faults if f is not fault]
        why["not recovered"] = "the fault was never reached"
    wanted = set(during) - w.maybe
    if not await until(lambda: set(w.delivered()) >= wanted, BOUND):
        why["not recovered"] = f"{len(wanted - set(w.delivered()))} during-fault items missing"
    after = up.add(f"{cell.name} after")
    w.expected.add(after)
    if not await until(lambda: after in w.delivered(), BOUND):
        why["not recovered"] = "the message after the fault not delivered"
    await asyncio.sleep(SETTLE)
    _judge(w, cell, why, log_at, asked_at, got_at, until_wall)
    if "not recovered" in why or "crash" in why:  # so that the next cells start afresh
        await w.bot.stop()
        await w.bot.start()
        wanted = w.expected - w.maybe
        await until(lambda: set(w.delivered()) >= wanted, BOUND)
        w.tally.notes.append(f"{cell.name}: the daemon was restarted after it")


def _shifter(w: World, how: str, listed: list[str]) -> Callable[[Any], None]:
    """Between the page-1 and the page-2 request: 3 new items, or 2 of page 1 deleted."""
    calls = 0

    def fn(request: Any) -> None:
        nonlocal calls
        calls += 1
        if calls != 2:
            return
        if how == "inserted":
            w.expected |= {w.up.add(f"inserted {n}") for n in range(3)}
            return
        # page 1 holds the newest (offset pages) or the lowest above the cursor (e621)
        gone = listed[:2] if w.up.name.startswith("e621") else listed[-2:]
        for item in gone:
            w.up.remove(item)
        w.maybe |= set(gone)

    return fn


def _judge(w: World, cell: Cell, why: dict[str, str], log_at: int, asked_at: int,
           got_at: int, until_wall: float) -> None:  # fmt: skip
    sim = w.up.sim
    with w.bot.log.open("rb") as f:
        f.seek(log_at)
        tail = f.read().decode(errors="replace")
    if w.bot.proc is None or w.bot.proc.returncode is not None or "Traceback" in tail:
        why["crash"] = "daemon exited" if "Traceback" not in tail else "a Traceback in the log"
    counts = w.delivered()
    twice = [i for i, n in counts.items() if n > 1]
    foreign = {str(b.get("item_id")) for b in w.hook.received[got_at:]} - w.expected - w.maybe
    if twice or foreign:
        why["false new"] = f"{len(twice)} delivered twice, {len(foreign)} not real new items"
    asked = sim.requests[asked_at:]
    writes = [r for r in asked if r.method not in ("GET", "HEAD")]
    if writes:
        why["state change"] = f"{len(writes)} write requests ({writes[0].method} {writes[0].path})"
    inside = _inside_wait(w.up, cell, asked, until_wall)
    if inside:
        why["inside Retry-After"] = inside
    w.tally.cells += 1
    if not why:
        w.tally.passed += 1
        return
    for check, reason in why.items():
        w.tally.failures[check] += 1
        w.tally.notes.append(f"{cell.name}: {check}: {reason}")


def _hits(pattern: str, path: str) -> bool:
    return path.endswith(pattern[:-1]) if pattern.endswith("$") else pattern in path


def _inside_wait(up: Upstream, cell: Cell, asked: list[Any], until_wall: float) -> str:
    """The requests that came between an answer asking to wait and the end of that wait."""
    if not (cell.wait or until_wall):
        return ""
    told = next((r for r in asked if r.status in (429, 503) and _hits(cell.path, r.path)), None)
    if told is None:
        return ""
    offset = time.time() - up.sim.clock()  # the simulator's clock to wall time
    end = told.time + cell.wait if cell.wait else until_wall - offset
    early = [r for r in asked if told.time < r.time < end - 0.05]
    if not early:
        return ""
    first = early[0]
    return (f"{len(early)} requests within the wait (first {first.time - told.time:.1f} s "
            f"after, of {end - told.time:.1f} s: {first.method} {first.path})")  # fmt: skip
