"""CPU seconds per 1,000 polls that find nothing new: ``inboxbot run``'s daemon (in this
process: scheduler, pipeline, store, delivery job) against a bare aiohttp loop doing the
same GETs on the same schedule, both against one simulator in a child process.

    .venv/bin/python bench/poll_overhead.py [--inboxes 100] [--seconds 20] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from common import Sim, cpu_seconds, mailtd_sim, row, write_config

from bot.app import load, resources
from bot.daemon import Daemon

RULES = """\
- name: everything
  when: {kind: email}
  notify: [{sink: screen, template: email}]
"""
MESSAGES = 5  # one list page; all of them seen at the first poll
WARMUP = 3.0  # every feed polled at least once (the backlog marked seen) before measuring


async def _window(sim: Sim, seconds: float) -> tuple[float, dict[str, int]]:
    """After the warm-up, the CPU seconds and the simulator's counts of ``seconds``."""
    await asyncio.sleep(WARMUP)
    await asyncio.to_thread(sim.reset)
    cpu = cpu_seconds()
    await asyncio.sleep(seconds)
    return cpu_seconds() - cpu, await asyncio.to_thread(sim.counts)


async def inboxbot(sim: Sim, folder: Path, seconds: float) -> tuple[float, dict[str, int]]:
    """(CPU seconds, requests counted) of the daemon running ``seconds`` after a warm-up."""
    config = write_config(
        folder, sim, rules=RULES, sinks="  screen: {type: console}\n", every="1s",
        extra="backlog: skip\n",
    )  # fmt: skip
    loaded = load(config)
    async with resources(folder / "state.db") as res:
        daemon = Daemon(loaded, res)
        running = asyncio.create_task(daemon.run())
        cpu, counts = await _window(sim, seconds)
        daemon.stop()
        await running
    return cpu, counts


async def _inbox(
    session: aiohttp.ClientSession, url: str, token: str, start: float, stop: float
) -> None:
    """One inbox: a GET every second, a dict of seen ids; a new id would be a notification."""
    seen: dict[str, None] = {}
    headers = {"Authorization": f"Bearer {token}"}
    tick = start
    while tick < stop:
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
        async with session.get(url, headers=headers) as resp:
            resp.raise_for_status()
            for message in (await resp.json())["messages"]:
                seen.setdefault(message["id"], None)
        tick += 1.0


async def bare(sim: Sim, seconds: float) -> tuple[float, dict[str, int]]:
    """The same schedule: each inbox every second, the inboxes spread over the second."""
    async with aiohttp.ClientSession() as session:
        now = time.monotonic()
        n = len(sim.accounts)
        urls = [(f"{sim.base_url}/api/accounts/{a}/messages?page=1", t) for a, t in sim.accounts]
        tasks = [
            asyncio.create_task(_inbox(session, url, token, now + i / n, now + WARMUP + seconds))
            for i, (url, token) in enumerate(urls)
        ]
        cpu, counts = await _window(sim, seconds)
        await asyncio.gather(*tasks)
    return cpu, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inboxes", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="8 seconds")
    args = parser.parse_args()
    seconds = 8.0 if args.quick else args.seconds
    with mailtd_sim(accounts=args.inboxes, messages=MESSAGES) as sim:
        bare_cpu, bare_counts = asyncio.run(bare(sim, seconds))
        with tempfile.TemporaryDirectory() as tmp:
            ours_cpu, ours_counts = asyncio.run(inboxbot(sim, Path(tmp), seconds))
    print(f"poll_overhead: {args.inboxes} inboxes at every: 1s, {seconds:.0f} s measured")
    bare_polls, ours_polls = bare_counts["list"], ours_counts["list"]
    row("poll_overhead", "list GETs", bare_polls, ours_polls, "{:.0f}")
    row("poll_overhead", "detail GETs", bare_counts["detail"], ours_counts["detail"], "{:.0f}")
    row("poll_overhead", "other/refused requests", bare_counts["other"] + bare_counts["refused"],
        ours_counts["other"] + ours_counts["refused"], "{:.0f}")  # fmt: skip
    row(
        "poll_overhead", "CPU s per 1,000 empty polls",
        bare_cpu / max(1, bare_polls) * 1000, ours_cpu / max(1, ours_polls) * 1000,
    )  # fmt: skip


if __name__ == "__main__":
    main()
