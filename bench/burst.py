"""Items/s for a burst of new mail (default 100 accounts x 100 mails, 20 rules, one of which
matches everything and notifies a webhook): inboxbot's pipeline against a bare aiohttp loop
doing the same requests. Simulator and receiver each run in a child process.

    .venv/bin/python bench/burst.py [--accounts 100] [--per-account 100] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from common import Hook, Sim, hook_receiver, mailtd_sim, write_config

from bot.app import load, running

PAGE_SIZE = 30
NO_MATCH = [  # 19 rules that match none of the simulator's mails, in various styles
    "{sender: {endswith: '@bank.example'}}",
    "{subject: {regex: '(?i)^invoice \\d+ overdue'}}",
    "{subject: {contains: password reset}}",
    "{sender: [ceo@corp.example, boss@corp.example]}",
    "{all: [{kind: email}, {subject: {startswith: URGENT}}]}",
    "{any: [{sender: {contains: paypal}}, {subject: {contains: paypal}}]}",
    "{unread: false}",
    "{age: {gt: 30d}}",
    "{not: {kind: email}}",
    "{if: '{{ item.subject | length > 500 }}'}",
    "{text: {contains: wire transfer}}",
    "{attachments: {endswith: .exe}}",
    "{links: {regex: 'https?://[^/]*\\.ru/'}}",
    "{sender: {regex: '^security@'}}",
    "{subject: {endswith: '[SPAM]'}}",
    "{html: {contains: '<blink>'}}",
    "{subject: {eq: weekly digest}}",
    "{raw.size: {gt: 10000000}}",
    "{all: [{sender: {endswith: github.com}}, {subject: {contains: invoice}}]}",
]
RULES = "".join(
    f"- name: never-{n}\n  when: {when}\n  notify: [{{sink: hooks, title: x, message: x}}]\n"
    for n, when in enumerate(NO_MATCH)
) + (
    "- name: every-mail\n  when: {kind: email}\n"
    "  extract: {code: {from: subject, regex: '\\b(\\d{6})\\b'}}\n"
    "  notify: [{sink: hooks, template: email, priority: high}]\n"
)


async def inboxbot(sim: Sim, hook: Hook, folder: Path) -> tuple[int, float, float]:
    """(items polled, wall s, CPU s) from the first poll to the last delivery."""
    sinks = f'  hooks: {{type: webhook, url: "{hook.url}"}}\n'
    extra = "backlog: notify\nmax_actions_per_poll: 1000000\n"
    loaded = load(write_config(folder, sim, rules=RULES, sinks=sinks, extra=extra))
    async with running(loaded, folder / "state.db") as pipeline:
        cpu, wall = time.process_time(), time.perf_counter()
        added = await asyncio.gather(*(pipeline.poll(feed) for feed in loaded.feeds()))
        await pipeline.flush()
        return sum(added), time.perf_counter() - wall, time.process_time() - cpu


async def _fetch(session: aiohttp.ClientSession, url: str, token: str) -> Any:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        resp.raise_for_status()
        return await resp.json()


async def _account(session: aiohttp.ClientSession, base: str, token: str) -> list[Any]:
    """Every list page, then each mail's detail (what inboxbot's webhook rule needs)."""
    summaries, page = [], 1
    while True:
        batch = (await _fetch(session, f"{base}?page={page}", token))["messages"]
        summaries += batch
        if len(batch) < PAGE_SIZE:
            break
        page += 1
    return [{**m, **await _fetch(session, f"{base}/{m['id']}", token)} for m in summaries]


async def bare(sim: Sim, hook: Hook) -> tuple[int, float, float]:
    """The same shape: accounts side by side, then one POST per mail, one after another."""
    async with aiohttp.ClientSession() as session:
        cpu, wall = time.process_time(), time.perf_counter()
        accounts = await asyncio.gather(
            *(_account(session, f"{sim.base_url}/api/accounts/{address}/messages", token)
              for address, token in sim.accounts)
        )  # fmt: skip
        for mail in (m for mails in accounts for m in mails):
            title = f"{mail['from']}: {mail['subject'][:80]}"
            body = {"id": mail["id"], "title": title, "message": mail["preview_text"], "item": mail}
            headers = {"Idempotency-Key": mail["id"]}
            async with session.post(hook.url, json=body, headers=headers) as resp:
                resp.raise_for_status()
        count = sum(len(mails) for mails in accounts)
        return count, time.perf_counter() - wall, time.process_time() - cpu


def report(name: str, hook: Hook, expected: int, result: tuple[int, float, float]) -> float:
    items, wall, cpu = result
    received, dups = hook.count()
    print(
        f"burst: {name} {items / wall:.0f} items/s ({items} items in {wall:.2f} s, "
        f"{cpu / items * 1000:.2f} CPU-s/1000 items; webhook got {received}/{expected}, "
        f"{dups} duplicates)"
    )
    hook.reset()
    return items / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--per-account", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="20 accounts x 50 mails")
    args = parser.parse_args()
    accounts, per = (20, 50) if args.quick else (args.accounts, args.per_account)
    expected = accounts * per
    with (
        mailtd_sim(accounts=accounts, messages=per) as sim,
        hook_receiver() as hook,
        tempfile.TemporaryDirectory() as tmp,
    ):
        bare_rate = report("bare aiohttp", hook, expected, asyncio.run(bare(sim, hook)))
        ours_rate = report("inboxbot", hook, expected, asyncio.run(inboxbot(sim, hook, Path(tmp))))
    print(
        f"burst: {expected} mails over {accounts} accounts, 20 rules: inboxbot {ours_rate:.0f} "
        f"items/s, bare aiohttp {bare_rate:.0f} items/s, ratio {bare_rate / ours_rate:.2f}"
    )


if __name__ == "__main__":
    main()
