"""Blast-radius guard: a rule that would delete every mail of an account (more than
``max_actions_per_poll``) is stopped at the guard, reported once, and runs nothing: the
simulator must see no delete, the receiver no notification of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from proof.common import CountingMailTd, CountingReceiver, Inboxbot, Result, add_mail, write_config

RULES = """\
- name: delete-everything
  when: {kind: email}
  then: [delete]
"""
MAILS = 120
LIMIT = 25


async def run(tmp: Path, *, seed: int) -> Result:
    sim, hook = CountingMailTd(rate_limit=20), CountingReceiver()
    await sim.start()
    await hook.start()
    try:
        account = sim.add_account("guard@mail.td")
        ids = [add_mail(sim, account, f"keep me {n}") for n in range(MAILS)]
        config = write_config(tmp, sim, [account], hook.url, RULES,
                              extra=f"max_actions_per_poll: {LIMIT}\n")  # fmt: skip
        bot = Inboxbot(config, tmp / "guard.log")
        await bot.start()
        await asyncio.sleep(12)  # a dozen polls
        status = await bot.stop()
        await bot.start()  # and a restart: the refusal stands, nothing runs
        await asyncio.sleep(5)
        status = max(status, await bot.stop())
    finally:
        await hook.stop()
        await sim.stop()
    log = bot.log.read_text()
    reports = sum(1 for ln in log.splitlines() if "event=actions refused" in ln
                  or 'event="actions refused"' in ln)  # fmt: skip
    deletes = sum(1 for r in sim.requests if r.method == "DELETE")
    acted = len(sim.acted)
    gone = sum(1 for i in ids if sim.message(i).deleted)
    counts = {"mails": MAILS, "max_actions_per_poll": LIMIT, "reports": reports,
              "DELETE requests": deletes, "actions seen": acted, "mails deleted": gone,
              "notifications": len(hook.received), "exit": status}  # fmt: skip
    passed = reports == 1 and deletes == acted == gone == 0 and status == 0
    tried = (
        f"rule `then: [delete]` matching all {MAILS} mails of an account, "
        f"max_actions_per_poll {LIMIT}; 12 s of polling, then a restart"
    )
    return Result("guard", tried, counts, passed)
