"""A big delivery whose details are fetched one by one (the rule reads the body) starts
going out while later details are still being fetched: after an upstream outage the
first notification must not wait for the last detail (found by the proof's outage: 46 s
from the upstream's return to the first delivery, 1,213 mails at 10 requests a second)."""

from __future__ import annotations

from pathlib import Path

from proof.common import (
    CountingMailTd,
    CountingReceiver,
    Inboxbot,
    add_mail,
    until,
    write_config,
)

RULES = """\
- name: new-mail
  when: {kind: email}
  notify: [{sink: hooks, template: email}]
"""


async def test_deliveries_start_before_the_last_detail_is_fetched(tmp_path: Path) -> None:
    sim, hook = CountingMailTd(rate_limit=20), CountingReceiver()
    await sim.start()
    await hook.start()
    bot = None
    try:
        account = sim.add_account("big@mail.td")
        sent = {add_mail(sim, account, f"mail {n}") for n in range(80)}  # 8 s of details
        bot = Inboxbot(write_config(tmp_path, sim, [account], hook.url, RULES), tmp_path / "log")
        await bot.start()
        assert await until(lambda: set(hook.first_delivery()) >= sent, 60)
        details = [r.time for r in sim.requests if "/messages/" in r.path]
        assert len(details) >= 80
        assert min(hook.times) < max(details) - 3, "the first delivery waited for the details"
        assert hook.duplicates() == 0
    finally:
        if bot is not None:
            await bot.stop()
        await hook.stop()
        await sim.stop()
