"""Crash: SIGKILL at uniformly random moments while bursts of mail arrive at several
accounts, with deliveries, mark_read and a delayed delete in flight; restart after each;
then run until quiet. Counted on the receiver and the simulator, not in inboxbot's logs."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from bot.sim.mailtd import SimAccount
from proof.common import (
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
  then: [mark_read, {delete: {after: 2s}}]
"""
ACCOUNTS = 3
MOMENT = (0.3, 3.0)  # seconds from a start to its kill, drawn uniformly
# The documented window: a sink accepted the notification just before the kill, before the
# store recorded it (a write of milliseconds; 1 s allows for a loaded machine).
WINDOW = 1.0


async def run(tmp: Path, *, kills: int, seed: int) -> Result:
    rng = random.Random(seed)
    sim, hook = CountingMailTd(rate_limit=20), CountingReceiver()
    await sim.start()
    await hook.start()
    try:
        accounts = [sim.add_account(f"crash{n}@mail.td") for n in range(ACCOUNTS)]
        for account in accounts:
            account.rate_limit = 20
        config = write_config(tmp, sim, accounts, hook.url, RULES,
                              extra="max_actions_per_poll: 100000\n")  # fmt: skip
        bot = Inboxbot(config, tmp / "crash.log")
        sent: list[str] = []
        kill_times: list[float] = []
        started = time.monotonic()
        for n in range(kills):
            sent += _burst(rng, sim, accounts, f"kill {n} before")
            await bot.start()
            moment = rng.uniform(*MOMENT)
            await asyncio.sleep(moment / 2)
            sent += _burst(rng, sim, accounts, f"kill {n} during")  # arrives while it runs
            await asyncio.sleep(moment / 2)
            await bot.kill()
            kill_times.append(time.monotonic())
        killed_at = time.monotonic() - started
        await bot.start()
        wanted = set(sent)
        await until(lambda: _delivered(hook) >= wanted and _deleted(sim, sent), 300)
        await asyncio.sleep(5)  # quiet: nothing more may come
        status = await bot.stop()
        took = time.monotonic() - started
        return _verdict(sim, hook, sent, kill_times, killed_at, took, status)
    finally:
        await hook.stop()
        await sim.stop()


def _burst(rng: random.Random, sim: CountingMailTd, accounts: list[SimAccount],
           label: str) -> list[str]:  # fmt: skip
    """1–4 mails to each of 1–all accounts."""
    chosen = rng.sample(accounts, rng.randint(1, len(accounts)))
    return [add_mail(sim, a, f"{label} {i}") for a in chosen for i in range(rng.randint(1, 4))]


def _delivered(hook: CountingReceiver) -> set[str]:
    return {str(b["item_id"]) for b in hook.received}


def _deleted(sim: CountingMailTd, ids: list[str]) -> bool:
    return all(sim.message(i).deleted for i in ids)


def _outside_window(hook: CountingReceiver, kill_times: list[float]) -> int:
    """Duplicates whose first copy was not accepted within WINDOW before a kill."""
    copies: dict[str, list[float]] = {}
    for body, moment in zip(hook.received, hook.times, strict=True):
        copies.setdefault(str(body["item_id"]), []).append(moment)
    return sum(
        1
        for moments in copies.values()
        for accepted in moments[:-1]
        if not any(0 <= kill - accepted <= WINDOW for kill in kill_times)
    )


def _verdict(sim: CountingMailTd, hook: CountingReceiver, sent: list[str],
             kill_times: list[float], killed_at: float, took: float,
             status: int) -> Result:  # fmt: skip
    kills = len(kill_times)
    first = hook.first_delivery()
    lost = len(set(sent) - set(first))
    same_key = hook.duplicates()
    new_key = sum(len(keys) - 1 for keys in hook.item_keys.values())
    early = sum(1 for _, i, moment in sim.acted if i in first and moment < first[i])
    early += sum(1 for _, i, _ in sim.acted if i not in first)
    not_read = sum(1 for i in sent if not sim.message(i).is_read)
    delete_lost = sum(1 for i in sent if not sim.message(i).deleted)
    foreign = len(set(first) - set(sent))
    outside = _outside_window(hook, kill_times)
    counts = {
        "kills": kills, "mails": len(sent), "received": len(hook.received), "lost": lost,
        "dup same key": same_key,
        "dup outside the window": outside, "dup new key": new_key, "actions before delivery": early,
        "mark_read missing": not_read, "delayed deletes lost": delete_lost,
        "unknown items": foreign, "kills took s": round(killed_at), "total s": round(took),
        "final exit": status,
    }  # fmt: skip
    passed = (lost == new_key == outside == early == not_read == delete_lost == foreign == 0
              and same_key <= kills and status == 0)  # fmt: skip
    tried = (f"{kills} SIGKILLs at uniform moments in {MOMENT[0]}–{MOMENT[1]} s after each "
             f"start; bursts of 1–4 mails to 1–{ACCOUNTS} accounts before each start and midway; "
             "rule: webhook, then mark_read + delete after 2 s; then run until quiet; a duplicate "
             f"must have been accepted ≤ {WINDOW:g} s before a kill")  # fmt: skip
    return Result("crash", tried, counts, passed)
