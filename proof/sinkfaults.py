"""Fault matrix, sink side: for each sink kind that speaks HTTP, one daemon sends a new
mail's notification through each fault in turn (a timeout, resets, 5xx pages and JSON,
429 with Retry-After in seconds and as an HTTP-date, the service's own rate signal, a 200
that is no answer of the service's, an empty body, a closed port). Verdicts rest on what
the simulators saw: delivered after the fault within ``BOUND``, once (a second copy only
where the first attempt may have reached the service), no request inside a wait the
service asked for, no crash or traceback, at most two log lines about the sink."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bot.sim.base import SimRequest
from bot.sim.mailtd import MailTdSim, SimAccount
from proof.common import TEMPLATE, Inboxbot, Result, add_mail, until
from proof.sinkcells import CELLS, Cell, Plan
from proof.sinkfakes import KINDS, TIMEOUT, Kind

BOUND = 15.0  # s from the fault's end (or the end of the wait asked for) to delivery
TOLERANCE = 0.05  # s: clocks read on either side of one request
RULES = "- name: faults\n  when: {kind: email}\n  notify: [{sink: out, template: email}]\n"
QUICK_KINDS = ("ntfy", "telegram")
QUICK_CELLS = ("reset mid-body", "429 Retry-After date", "HTML with 200")
CHECKS = ("crash", "traceback", "delivered", "once", "waited", "log lines")


@dataclass
class Outcome:
    cell: str
    tag: str
    failed: list[str] = field(default_factory=list)  # "check: why"
    copies: int = 0
    delay: float | None = None  # s from the fault's end to the delivery
    margin: float | None = None  # s from the end of a wait asked for to the next request
    lines: int = 0  # log lines about the sink


def write_config(tmp: Path, sim: MailTdSim, account: SimAccount, sink: str) -> Path:
    """One Mail.td feed polled every second, one rule, one sink ``out``."""
    (tmp / "templates").mkdir(parents=True, exist_ok=True)
    (tmp / "templates" / "email.j2").write_text(TEMPLATE)
    (tmp / "rules.yaml").write_text(RULES)
    config = tmp / "inboxbot.yaml"
    config.write_text(
        f"accounts:\n  box:\n    type: mailtd\n    base_url: {sim.base_url}\n"
        f"    account_id: {account.address}\n    token: {account.token}\n"
        f"    every: 1s\n    timeout: 3s\n    rate: 10\n"
        f"sinks:\n  out: {sink}\nrules: [rules.yaml]\ntemplates: [templates]\nbacklog: notify\n"
    )
    return config


async def run(tmp: Path, *, seed: int, quick: bool = False) -> list[Result]:
    print(f"sinkfaults seed={seed}", flush=True)
    rng = random.Random(seed)
    names = QUICK_KINDS if quick else tuple(KINDS)
    cells = [c for c in CELLS if not quick or c.name in QUICK_CELLS]
    sim = MailTdSim(rate_limit=50, clock=time.time)
    await sim.start()
    try:
        for name in names:
            (tmp / name).mkdir(parents=True, exist_ok=True)
        orders = {name: rng.sample(cells, len(cells)) for name in names}
        return list(await asyncio.gather(
            *(_one_kind(tmp / name, sim, name, orders[name]) for name in names)))  # fmt: skip
    finally:
        await sim.stop()


def _applies(kind: Kind, cell: Cell) -> bool:
    if cell.needs_json and not kind.answers_json:
        return False  # any 2xx is a webhook receiver's acceptance
    return cell.name != "own rate signal" or kind.own is not None


async def _one_kind(tmp: Path, sim: MailTdSim, name: str, cells: list[Cell]) -> Result:
    kind = await KINDS[name]()
    account = sim.add_account(f"faults-{name}@mail.td")
    account.rate_limit = 50
    bot = Inboxbot(write_config(tmp, sim, account, kind.sink), tmp / "inboxbot.log")
    started = time.monotonic()
    outcomes: list[Outcome] = []
    try:
        await bot.start()
        await asyncio.sleep(2.0)  # started, first poll done
        for n, cell in enumerate(cells):
            if _applies(kind, cell):
                outcomes.append(await _cell(kind, bot, sim, account, cell, f"c{n:02d}q"))
        await asyncio.sleep(2.0)  # late copies show up
    finally:
        await bot.stop()
        await kind.fake.stop()
    for outcome in outcomes:  # copies counted at the end: a late one counts too
        _count_copies(kind, outcome, next(c for c in cells if c.name == outcome.cell))
    skipped = [c.name for c in cells if not _applies(kind, c)]
    return _verdict(kind, outcomes, skipped, time.monotonic() - started)


async def _cell(kind: Kind, bot: Inboxbot, sim: MailTdSim, account: SimAccount, cell: Cell,
                tag: str) -> Outcome:  # fmt: skip
    outcome, log_at, seen = Outcome(cell.name, tag), bot.log.stat().st_size, len(kind.fake.requests)
    if cell.name != "port refused":
        plan = await cell.apply(kind)
        add_mail(sim, account, f"{tag} {cell.name}")
    else:
        add_mail(sim, account, f"{tag} {cell.name}")
        plan = await cell.apply(kind)
    delivered = await until(lambda: _copies(kind, tag) >= 1, BOUND + 25, step=0.1)
    delivered_at = time.time()
    await until(lambda: not kind.fake.faults, 10)
    kind.fake.faults.clear()
    await _settled(bot)
    requests = kind.fake.requests[seen:]
    end = _fault_end(plan, requests)
    if bot.proc is None or bot.proc.returncode is not None:
        outcome.failed.append("crash: the daemon exited")
    lines = _log_since(bot.log, log_at)
    if any("Traceback" in ln for ln in lines):
        outcome.failed.append("traceback: in the log")
    if not delivered:
        outcome.failed.append(f"delivered: not within {BOUND + 25:g} s")
    elif end is not None:
        outcome.delay = round(delivered_at - end, 2)
        if outcome.delay > BOUND:
            outcome.failed.append(f"delivered: {outcome.delay:.1f} s after the fault ended")
    outcome.failed += _waited(plan, requests, outcome)
    about = [ln for ln in lines if _about_sink(ln)]
    outcome.lines = len(about)
    if len(about) > 2:
        outcome.failed.append(f"log lines: {len(about)} about the sink: " + " | ".join(
            ln[:160] for ln in about[:4]))  # fmt: skip
    return outcome


def _copies(kind: Kind, tag: str) -> int:
    return sum(1 for text in kind.texts() if tag in text)


def _count_copies(kind: Kind, outcome: Outcome, cell: Cell) -> None:
    outcome.copies = _copies(kind, outcome.tag)
    if outcome.copies > 1 and not cell.may_repeat:
        outcome.failed.append(f"once: delivered {outcome.copies} times")


async def _settled(bot: Inboxbot, seconds: float = 25.0) -> None:
    """Until the daemon's outbox is empty (pacing only: verdicts rest on the fakes)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, text = await bot.get("/metrics")
        found = re.search(r"^inboxbot_outbox_depth (\S+)", text, re.M)
        if status == 200 and found and float(found.group(1)) == 0:
            return
        await asyncio.sleep(0.2)


def _fault_end(plan: Plan, requests: list[SimRequest]) -> float | None:
    """When the fault was over: the faulted request's answer, the end of the wait it
    asked for, or the port's reopening."""
    if plan.reopened is not None:
        return plan.reopened
    if not requests:
        return None
    first = requests[0].time
    return max(first + plan.latency + (plan.wait or 0.0), plan.until or 0.0)


def _waited(plan: Plan, requests: list[SimRequest], outcome: Outcome) -> list[str]:
    """No request between a 429 (or 503) and the end of the wait it asked for."""
    if plan.wait is None and plan.until is None:
        return []
    refused = next((r for r in requests if r.status == plan.refused), None)
    if refused is None:
        return [f"waited: the {plan.refused} was never answered"]
    end = plan.until if plan.until is not None else refused.time + (plan.wait or 0.0)
    after = [r for r in requests if r.time > refused.time]
    if after:
        outcome.margin = round(after[0].time - end, 2)
    early = [r for r in after if r.time < end - TOLERANCE]
    if early:
        return [f"waited: a request {end - early[0].time:.2f} s before the wait's end"]
    return []


def _log_since(log: Path, offset: int) -> list[str]:
    with log.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").splitlines()


def _about_sink(line: str) -> bool:
    """A log line about the sink ``out``, other than a delivery's."""
    return ('"sink out"' in line or "sink=out" in line) and "event=delivered" not in line


def _verdict(kind: Kind, outcomes: list[Outcome], skipped: list[str], seconds: float) -> Result:
    failures: Counter[str] = Counter()
    for outcome in outcomes:
        failures.update({f.partition(":")[0] for f in outcome.failed})
    passed = sum(1 for o in outcomes if not o.failed)
    duplicates = sum(max(0, o.copies - 1) for o in outcomes)
    counts: dict[str, object] = {
        "cells": len(outcomes), "passed": passed, "duplicates (allowed)": duplicates,
        **{f"failed {check}": failures[check] for check in CHECKS if failures[check]},
        "slowest delivery after a fault s": max((o.delay for o in outcomes if o.delay is not None),
                                                 default=None),
        "least margin after a wait s": min((o.margin for o in outcomes if o.margin is not None),
                                           default=None),
        "most log lines per cell": max((o.lines for o in outcomes), default=0),
        "wall s": round(seconds, 1),
    }  # fmt: skip
    notes = [f"{o.cell}: {'; '.join(o.failed)}" for o in outcomes if o.failed]
    notes += [f"{o.cell}: {o.copies} copies" for o in outcomes if o.copies > 1 and not o.failed]
    if skipped:
        notes.append(f"not tried: {', '.join(skipped)} (to a webhook any 2xx is the receiver's "
                     "acceptance, and it has no rate signal of its own)")  # fmt: skip
    tried = (f"{kind.name} sink through " + ", ".join(o.cell for o in outcomes)
             + f"; `timeout: {TIMEOUT:g}s`, `rate: 600/min` (its own pacing aside), one new "
             "mail per cell, one daemon")  # fmt: skip
    return Result(f"faults (sink {kind.name})", tried, counts, passed == len(outcomes), notes)
