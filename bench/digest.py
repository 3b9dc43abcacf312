"""Noise control's figures: deliveries for a mailbox of N newsletters (default 40) with and
without grouping, and the CPU the hold stage adds per 1,000 items (grouped, and in quiet
hours) against the same pipeline without noise control. In-process: the Mail.td simulator
and a webhook receiver on 127.0.0.1, the pipeline with a clock moved by hand.

    .venv/bin/python bench/digest.py [--mails 40] [--burst 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.app import load, running
from bot.parts import Clock
from bot.sim.mailtd import MailTdSim
from bot.sim.webhook import HookReceiver
from bot.sources import Feed

FEED = Feed("inbox", "messages", timedelta(seconds=1), None)
NOTIFY = '{sink: hooks, title: "{{ item.subject }}", message: "from {{ item.sender }}"'
GROUP = ", group: {by: [account], wait: 30s, interval: 10m, max: 25}"
QUIET = ', quiet: {from: "00:00", to: "23:59", tz: UTC}'


class Moved(Clock):
    def __init__(self) -> None:
        self.t = datetime(2026, 12, 4, 10, 0, tzinfo=UTC).timestamp()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def time(self) -> float:
        return self.t


async def run(mails: int, group: str, sink: str) -> tuple[int, float]:
    """(deliveries after the group's wait, CPU seconds of the polls and flushes)."""
    sim, hook = MailTdSim(rate_limit=10_000), HookReceiver()
    await sim.start()
    await hook.start()
    try:
        account = sim.add_account("bench@mail.td")
        for n in range(mails):
            sim.add_message(account, sender="news@example.com", subject=f"Issue {n}",
                            text_body="…")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "inboxbot.yaml"
            (Path(tmp) / "rules.yaml").write_text(
                f"- name: news\n  when: {{kind: email}}\n  notify: [{NOTIFY}{group}}}]\n"
            )
            config.write_text(
                f"accounts:\n  inbox: {{type: mailtd, base_url: {sim.base_url}, "
                f"account_id: {account.address}, token: {account.token}, rate: 1000}}\n"
                f'sinks:\n  hooks: {{type: webhook, url: "{hook.url}", rate: 100000/s{sink}}}\n'
                "rules: [rules.yaml]\nbacklog: notify\n"
            )
            clock = Moved()
            async with running(load(config), Path(tmp) / "state.db", clock) as pipe:
                started = time.process_time()
                await pipe.poll(FEED)
                await pipe.flush()
                clock.t += 31
                await pipe.flush()
                cpu = time.process_time() - started
        return len(hook.received), cpu
    finally:
        await hook.stop()
        await sim.stop()


async def main(mails: int, burst: int) -> None:
    plain, _ = await run(mails, "", "")
    grouped, _ = await run(mails, GROUP, "")
    print(f"digest: {mails} newsletters, deliveries    without grouping {plain:6}  "
          f"with group {{by: [account], wait: 30s}} {grouped:6}")  # fmt: skip
    _, bare = await run(burst, "", "")
    _, with_group = await run(burst, GROUP, "")
    _, quiet = await run(burst, "", QUIET)
    per = 1000 / burst
    print(f"digest: CPU s per 1,000 items               plain {bare * per:6.3f}  "
          f"grouped {with_group * per:6.3f} ({with_group / bare:.2f}x)  "
          f"quiet hours {quiet * per:6.3f} ({quiet / bare:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=40)
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.mails, args.burst))
