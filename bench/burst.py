"""Items/s for a burst of new mail (default 100 accounts x 100 mails, 20 rules, one of which
matches everything and notifies a webhook): inboxbot's pipeline against a bare aiohttp loop
doing the same requests. Simulator and receiver each run in a child process.

    .venv/bin/python bench/burst.py [--accounts 100] [--per-account 100] [--rules both] [--quick]

``--rules summary``: every rule and template reads only what the list holds (sender,
subject, …), so the bare loop fetches no detail. ``--rules body``: some rules read the body,
so every mail's detail is needed, by both.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
from common import Hook, Sim, cpu_seconds, hook_receiver, mailtd_sim, row, write_config

from bot.app import load, running

PAGE_SIZE = 30
IN_FLIGHT = 8  # POSTs in flight at once, as inboxbot's bound per sink
SUMMARY_NO_MATCH = [  # 19 rules on the list's fields that match none of the simulator's mails
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
    "{sender: {regex: '^security@'}}",
    "{subject: {endswith: '[SPAM]'}}",
    "{subject: {eq: weekly digest}}",
    "{raw.size: {gt: 10000000}}",
    "{all: [{sender: {endswith: github.com}}, {subject: {contains: invoice}}]}",
    "{sender: {contains: noreply@casino}}",
    "{subject: {regex: '(?i)lottery|winner'}}",
    "{all: [{unread: true}, {subject: {startswith: 'Re: Re: Re:'}}]}",
    "{recipient: {contains: nobody@}}",
]
BODY_NO_MATCH = [  # the same with four that read the body (so every detail is fetched)
    *SUMMARY_NO_MATCH[:15],
    "{text: {contains: wire transfer}}",
    "{attachments: {endswith: .exe}}",
    "{links: {regex: 'https?://[^/]*\\.ru/'}}",
    "{html: {contains: '<blink>'}}",
]
SUMMARY_NOTIFY = (
    "{sink: hooks, title: '{{ item.sender }}: {{ item.subject | truncate(80) }}', "
    "message: 'Code {{ code }} from {{ item.sender }}', priority: high}"
)
BODY_NOTIFY = "{sink: hooks, template: email, priority: high}"  # the template reads item.text


def rules(kind: str) -> str:
    no_match = SUMMARY_NO_MATCH if kind == "summary" else BODY_NO_MATCH
    notify = SUMMARY_NOTIFY if kind == "summary" else BODY_NOTIFY
    return "".join(
        f"- name: never-{n}\n  when: {when}\n  notify: [{{sink: hooks, title: x, message: x}}]\n"
        for n, when in enumerate(no_match)
    ) + (
        "- name: every-mail\n  when: {kind: email}\n"
        "  extract: {code: {from: subject, regex: '\\b(\\d{6})\\b'}}\n"
        f"  notify: [{notify}]\n"
    )


async def inboxbot(sim: Sim, hook: Hook, folder: Path, kind: str) -> tuple[int, float, float]:
    """(items polled, wall s, CPU s) from the first poll to the last delivery."""
    sinks = f'  hooks: {{type: webhook, url: "{hook.url}"}}\n'
    extra = "backlog: notify\nmax_actions_per_poll: 1000000\n"
    loaded = load(write_config(folder, sim, rules=rules(kind), sinks=sinks, extra=extra))
    async with running(loaded, folder / "state.db") as pipeline:
        cpu, wall = cpu_seconds(), time.perf_counter()
        added = await asyncio.gather(*(pipeline.poll(feed) for feed in loaded.feeds()))
        await pipeline.flush()
        return sum(added), time.perf_counter() - wall, cpu_seconds() - cpu


async def _fetch(session: aiohttp.ClientSession, url: str, token: str) -> Any:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        resp.raise_for_status()
        return await resp.json()


async def _account(
    session: aiohttp.ClientSession, base: str, token: str, details: bool, hook: Hook,
    posting: asyncio.Semaphore,
) -> int:  # fmt: skip
    """Every list page (each mail's detail when the rules need it), then one POST per new
    mail in order, at most IN_FLIGHT POSTs in flight over all accounts."""
    seen: dict[str, None] = {}
    summaries, page = [], 1
    while True:
        batch = (await _fetch(session, f"{base}?page={page}", token))["messages"]
        summaries += [m for m in batch if m["id"] not in seen]
        seen.update((m["id"], None) for m in batch)
        if len(batch) < PAGE_SIZE:
            break
        page += 1
    if details:
        summaries = [{**m, **await _fetch(session, f"{base}/{m['id']}", token)} for m in summaries]
    for mail in summaries:
        title = f"{mail['from']}: {mail['subject'][:80]}"
        body = {"id": mail["id"], "title": title, "message": mail.get("text_body") or "",
                "item": mail, "account": base, "item_id": mail["id"]}  # fmt: skip
        headers = {"Idempotency-Key": mail["id"]}
        async with posting, session.post(hook.url, json=body, headers=headers) as resp:
            resp.raise_for_status()
    return len(summaries)


async def bare(sim: Sim, hook: Hook, details: bool) -> tuple[int, float, float]:
    """The same shape: accounts side by side, each posting its mails in order."""
    posting = asyncio.Semaphore(IN_FLIGHT)
    async with aiohttp.ClientSession() as session:
        cpu, wall = cpu_seconds(), time.perf_counter()
        counts = await asyncio.gather(
            *(_account(session, f"{sim.base_url}/api/accounts/{address}/messages", token,
                       details, hook, posting)
              for address, token in sim.accounts)
        )  # fmt: skip
        return sum(counts), time.perf_counter() - wall, cpu_seconds() - cpu


def order_kept(hook: Hook, state: Path) -> bool:
    """Whether each account's notifications arrived in the order inboxbot planned them."""
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT feed, item_id FROM steps WHERE kind='deliver' ORDER BY seq")
        planned: dict[str, list[str]] = defaultdict(list)
        for feed, item_id in rows:
            planned[feed.split("/")[0]].append(item_id)
    arrived: dict[str, list[str]] = defaultdict(list)
    for account, item_id in hook.order():
        arrived[account].append(item_id)
    return dict(planned) == dict(arrived)


def run(kind: str, accounts: int, per: int) -> None:
    expected = accounts * per
    with (
        mailtd_sim(accounts=accounts, messages=per) as sim,
        hook_receiver() as hook,
        tempfile.TemporaryDirectory() as tmp,
    ):
        details = kind == "body"
        sim.reset()
        bare_items, bare_wall, bare_cpu = asyncio.run(bare(sim, hook, details))
        bare_got, bare_dups = hook.count()
        bare_counts = sim.counts()
        hook.reset()
        sim.reset()
        items, wall, cpu = asyncio.run(inboxbot(sim, hook, Path(tmp), kind))
        got, dups = hook.count()
        counts = sim.counts()
        kept = order_kept(hook, Path(tmp) / "state.db")
    print(
        f"burst: [{kind}] {expected} new mails over {accounts} accounts, 20 rules reading {kind} "
        f"fields; webhook got bare {bare_got}/{expected} ({bare_dups} duplicates), inboxbot "
        f"{got}/{expected} ({dups} duplicates); inboxbot's per-account order kept: {kept}"
    )
    row("burst", f"[{kind}] items/s (goal: ratio >= 0.6)", bare_items / bare_wall,
        items / wall, "{:.0f}")  # fmt: skip
    row("burst", f"[{kind}] seconds", bare_wall, wall, "{:.2f}")
    row("burst", f"[{kind}] CPU s per 1,000 items", bare_cpu / bare_items * 1000,
        cpu / max(1, items) * 1000)  # fmt: skip
    row("burst", f"[{kind}] list GETs", bare_counts["list"], counts["list"], "{:.0f}")
    row("burst", f"[{kind}] detail GETs", bare_counts["detail"], counts["detail"], "{:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--per-account", type=int, default=100)
    parser.add_argument("--rules", choices=("summary", "body", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="20 accounts x 50 mails")
    args = parser.parse_args()
    accounts, per = (20, 50) if args.quick else (args.accounts, args.per_account)
    for kind in ("summary", "body") if args.rules == "both" else (args.rules,):
        run(kind, accounts, per)


if __name__ == "__main__":
    main()
