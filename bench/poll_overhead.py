"""CPU seconds per 1,000 polls of a Mail.td feed with nothing new: inboxbot's pipeline against
a bare aiohttp loop doing the same GETs, both against one simulator in a child process.

    .venv/bin/python bench/poll_overhead.py [--polls 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from common import Sim, mailtd_sim, write_config

from bot.app import load, running

RULES = """\
- name: everything
  when: {kind: email}
  notify: [{sink: screen, template: email}]
"""
MESSAGES = 5  # one list page; all of them seen at the first poll
BARE_ROUNDS = 5


async def inboxbot(sim: Sim, polls: int, folder: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``polls`` polls after a first one that saw the inbox."""
    config = write_config(
        folder, sim, rules=RULES, sinks="  screen: {type: console}\n", extra="backlog: skip\n"
    )
    loaded = load(config)
    (feed,) = loaded.feeds()
    async with running(loaded, folder / "state.db") as pipeline:
        await pipeline.poll(feed)  # the backlog: marked seen
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(polls):
            if await pipeline.poll(feed):
                raise RuntimeError("a poll found something new")
        return time.process_time() - cpu, time.perf_counter() - wall


async def bare(sim: Sim, polls: int) -> tuple[float, float]:
    """The same GET of the list's first page with the same Bearer token, JSON decoded;
    (CPU s, wall s) of the median of BARE_ROUNDS rounds, as one round is short and noisy."""
    address, token = sim.accounts[0]
    url = f"{sim.base_url}/api/accounts/{address}/messages?page=1"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(url) as resp:  # warm the connection, like inboxbot's first poll
            await resp.json()
        rounds = []
        for _ in range(BARE_ROUNDS):
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(polls):
                async with session.get(url) as resp:
                    resp.raise_for_status()
                    if len((await resp.json())["messages"]) != MESSAGES:
                        raise RuntimeError("unexpected list")
            rounds.append((time.process_time() - cpu, time.perf_counter() - wall))
        return sorted(rounds)[len(rounds) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="200 polls")
    args = parser.parse_args()
    polls = 200 if args.quick else args.polls
    with mailtd_sim(accounts=1, messages=MESSAGES) as sim, tempfile.TemporaryDirectory() as tmp:
        ours_cpu, ours_wall = asyncio.run(inboxbot(sim, polls, Path(tmp)))
        bare_cpu, bare_wall = asyncio.run(bare(sim, polls))
    per = 1000 / polls
    print(
        f"poll_overhead: inboxbot {ours_cpu * per:.3f} CPU-s/1000 polls, "
        f"bare aiohttp {bare_cpu * per:.3f} CPU-s/1000 polls, ratio {ours_cpu / bare_cpu:.2f}"
    )
    print(
        f"poll_overhead: wall inboxbot {ours_wall:.1f} s for {polls} polls "
        f"({polls / ours_wall:.1f} polls/s, account rate: 50 req/s), "
        f"bare {bare_wall:.1f} s ({polls / bare_wall:.0f} polls/s, no limiter, median of "
        f"{BARE_ROUNDS} rounds)"
    )


if __name__ == "__main__":
    main()
