"""The soak's figures and verdict: what the samples taken from outside show after the
warm-up (the first WARM_UP of the run), comparing the window right after it with the last
window of the run, and what the receiver and the simulator saw."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proof.common import CountingMailTd, CountingReceiver, Result

WARM_UP = 0.2  # of the run: caches, pools and the database's pages fill
WINDOW = 0.2  # of the run: the window right after the warm-up, and the last one
RSS_GROWTH = 0.05
SLOWDOWN = 1.5
FD_SLACK, TASK_SLACK, THREAD_SLACK = 4, 4, 2
# The retention prunes bodies and finished steps; an item's id stays for the dedup horizon
# (bot.pipeline.DEDUP_HORIZON, a year) so that a mail listed again is not new. So after the
# warm-up the database may grow by at most this much per mail that arrived since.
ID_BYTES = 1024
# A run shorter than this ends within the write-ahead log's first cycles (it grows to ~4 MB
# before SQLite checkpoints it), so its database size says nothing of the retention: only
# the rows the retention should have removed are checked then.
DB_MEASURABLE = 120.0
CLOSE_WINDOW = 2.0  # s: a POST accepted this shortly before the port closed may be sent again
DAY_POLLS = 1440  # one feed at `every: 1m` polls 1,440 times a day


@dataclass(frozen=True)
class Pace:
    """The run's clock: at full size (5 min) a reload every 30 s, a 10 s flap a minute, a
    20 s retention; a shorter run scales them down so each still happens a few times."""

    seconds: float

    @property
    def reload_every(self) -> float:
        return min(30.0, self.seconds / 4)

    @property
    def flap_every(self) -> float:
        return min(60.0, self.seconds / 3)

    @property
    def flap_down(self) -> float:
        return self.flap_every / 6

    @property
    def retention(self) -> float:
        return min(20.0, self.seconds / 10)

    @property
    def sample_every(self) -> float:
        return min(2.0, self.seconds / 30)


@dataclass(frozen=True)
class Sample:
    at: float  # s since the soak started
    rss_kb: int
    threads: int
    fds: int
    tasks: float
    db_bytes: int
    poll_s: float  # sums over all feeds of the poll duration histogram
    polls: float


class Windows:
    def __init__(self, samples: Sequence[Sample], seconds: float) -> None:
        start, width = WARM_UP * seconds, WINDOW * seconds
        self.all = list(samples)
        self.post = [s for s in samples if start <= s.at < start + width]
        self.last = [s for s in samples if seconds - width <= s.at <= seconds]
        self.after = [s for s in samples if s.at >= start]

    def median(self, name: str, window: Sequence[Sample]) -> float:
        return statistics.median(getattr(s, name) for s in window) if window else 0.0

    @staticmethod
    def poll_ms(window: Sequence[Sample]) -> float:
        """The mean poll duration within ``window`` (ms), from the histogram's sum and count."""
        if len(window) < 2 or window[-1].polls <= window[0].polls:
            return 0.0
        return 1000 * (window[-1].poll_s - window[0].poll_s) / (window[-1].polls - window[0].polls)


def deliveries(sent: Sequence[str], dmails: Sequence[str], hook: CountingReceiver,
               sim: CountingMailTd, closes: Sequence[float]) -> dict[str, Any]:  # fmt: skip
    """What the receiver and the simulator saw of each mail (and DMail, which has no
    actions)."""
    first = hook.first_delivery()
    wanted = {*sent, *dmails}
    times: dict[str, list[float]] = {}
    for body, moment in zip(hook.received, hook.times, strict=True):
        times.setdefault(str(body["item_id"]), []).append(moment)
    again = [t for ts in times.values() for t in ts[:-1]]  # acceptances sent once more
    outside = sum(1 for t in again if not any(0 <= c - t <= CLOSE_WINDOW for c in closes))
    acted = {(action, i) for action, i, _ in sim.acted}
    early = sum(1 for _, i, moment in sim.acted if i not in first or moment < first[i])
    return {
        "mails": len(sent),
        "dmails": len(dmails),
        "delivered %": round(100 * len(wanted & set(first)) / max(len(wanted), 1), 2),
        "duplicates (same key)": hook.duplicates(),
        "duplicates outside a flap": outside,
        "dup new key": sum(len(keys) - 1 for keys in hook.item_keys.values()),
        "unknown items": len(set(first) - wanted),
        "actions missing": sum((a, i) not in acted for i in sent for a in ("mark_read", "delete")),
        "actions before delivery": early,
    }


def verdict(w: Windows, *, sent: Sequence[str], dmails: Sequence[str], arrived: Sequence[float],
            hook: CountingReceiver, sim: CountingMailTd, closes: Sequence[float],
            reloads: tuple[int, int], tracebacks: int, stale_rows: int, settled: bool,
            status: int, pace: Pace,
            accounts: int) -> Result:  # fmt: skip
    polls = int(w.all[-1].polls)
    rss = (w.median("rss_kb", w.post), w.median("rss_kb", w.last))
    growth = 100 * (rss[1] - rss[0]) / rss[0] if rss[0] else 0.0
    fds = (w.median("fds", w.post), w.median("fds", w.last))
    tasks = (w.median("tasks", w.post), w.median("tasks", w.last))
    threads = (max(s.threads for s in w.post), max(s.threads for s in w.last))
    base = max(s.db_bytes for s in w.post)
    later = sum(1 for t in arrived if t >= w.post[0].at)
    db_max = max(s.db_bytes for s in w.after)
    poll_ms = (w.poll_ms(w.post), w.poll_ms(w.last))
    got = deliveries(sent, dmails, hook, sim, closes)
    counts: dict[str, Any] = {
        "feeds": f"{accounts} + 1", "polls": polls, "feed-days at 1m": round(polls / DAY_POLLS, 1),
        "days per feed": round(polls / (accounts + 1) / DAY_POLLS, 2),
        "reloads": f"{reloads[1]}/{reloads[0]}", "flaps": len(closes), "samples": len(w.all),
        "RSS MB": f"{rss[0] / 1024:.1f} → {rss[1] / 1024:.1f} ({growth:+.1f} %)",
        "fds": f"{fds[0]:g} → {fds[1]:g}", "tasks": f"{tasks[0]:g} → {tasks[1]:g}",
        "threads": f"{threads[0]} → {threads[1]}",
        "db MB warm/max/bound": f"{base / 1e6:.2f}/{db_max / 1e6:.2f}/"
        f"{(base + later * ID_BYTES) / 1e6:.2f}",
        "db B per later mail": round((db_max - w.median("db_bytes", w.post)) / max(later, 1)),
        "rows past retention": stale_rows,
        "poll ms": f"{poll_ms[0]:.1f} → {poll_ms[1]:.1f}", **got,
        "tracebacks": tracebacks, "final exit": status,
    }  # fmt: skip
    checks = {
        "RSS growth": growth <= 100 * RSS_GROWTH,
        "fd growth": fds[1] <= fds[0] + FD_SLACK,
        "task growth": tasks[1] <= tasks[0] + TASK_SLACK,
        "thread growth": threads[1] <= threads[0] + THREAD_SLACK,
        "database bound": stale_rows == 0
        and (db_max <= base + later * ID_BYTES or pace.seconds < DB_MEASURABLE),
        "poll slowdown": poll_ms[1] <= SLOWDOWN * poll_ms[0],
        "delivered": settled and got["delivered %"] == 100 and got["actions missing"] == 0,
        "duplicates": got["duplicates outside a flap"] == got["dup new key"] == 0,
        "unknown": got["unknown items"] == got["actions before delivery"] == 0,
        "reloads": reloads[0] == reloads[1] > 0,
        "clean": tracebacks == 0 and status == 0,
    }
    failed = [name for name, ok in checks.items() if not ok]
    notes = [f"failed: {', '.join(failed)}"] if failed else []
    if pace.seconds < DB_MEASURABLE:
        notes.append(f"database size not checked: a run under {DB_MEASURABLE:g} s is too short")
    return Result("soak", tried(pace, accounts), counts, not failed, notes)


def tried(pace: Pace, accounts: int) -> str:
    return (f"{pace.seconds / 60:g} min: {accounts} Mail.td feeds at `every: 1s`, ~3 mails/s, "
            "webhook then mark_read + delete after 3 s; an e621 DMail feed at `every: 2s`, "
            "a DMail each ~5 s; SIGHUP every "
            f"{pace.reload_every:g} s; webhook down {pace.flap_down:g} s every "
            f"{pace.flap_every:g} s (503, then refusing); retention {pace.retention:g} s; "
            f"warm-up the first {WARM_UP:.0%}, windows of {WINDOW:.0%}")  # fmt: skip
