"""``inboxbot status | outbox | retry | drop``: the outbox seen and handled by hand.

They open the daemon's state file (SQLite in WAL mode: safe while the daemon runs) and
change nothing but steps. A running daemon reads each step's due time at its next
delivery pass (every second), so a retried step goes out within a second or two,
whatever backoff it was waiting for.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.app import Loaded
from bot.errors import InboxbotError
from bot.health import Failing
from bot.held import Held, Mute
from bot.lock import holder
from bot.push import SAFETY_NET
from bot.store import (
    DROPPED,
    FAILED,
    FORCED,
    HELD,
    MUTED,
    PENDING,
    StepView,
    Store,
    StoreError,
)

COMMANDS = ("status", "outbox", "retry", "drop")  # their help: bot.cli.COMMANDS
UNFINISHED = (PENDING, HELD, FAILED)
_HEX = re.compile(r"[0-9a-f]{1,32}")


class OutboxError(InboxbotError):
    """A step id that matches no step or several, a state file that is not there."""


def add_arguments(name: str, sub: argparse.ArgumentParser) -> None:
    if name == "outbox":
        sub.add_argument("--sink", help="only the deliveries to this sink")
        sub.add_argument("--failed", action="store_true", help="only the failed steps")
        sub.add_argument("--json", action="store_true", help="one JSON object a line")
    if name == "retry":
        sub.add_argument("--sink", help="every pending and failed delivery to this sink")
    if name in ("retry", "drop"):
        sub.add_argument("steps", nargs="*", metavar="STEP", help="a step id or its start")


def main(args: argparse.Namespace, loaded: Loaded, state: Path) -> int:
    """Run one of ``COMMANDS``; 1 with the reason on stderr when it cannot."""
    return on_state(args.command, state,
                    lambda store: run(args, loaded, store, time.time(), holder(state)))  # fmt: skip


def on_state(
    command: str, state: Path, work: Callable[[Store], None], *, create: bool = False
) -> int:
    """``work`` on the state database (which must exist unless ``create``); 1 with the
    reason on stderr when it cannot."""
    try:
        if not create and not state.exists():
            raise OutboxError(
                f"{state}: no state file here (the daemon has not run yet, or --state, "
                "INBOXBOT_STATE or state: names another)"
            )
        store = Store(state)
        try:
            work(store)
        finally:
            store.close()
    except (OutboxError, StoreError) as err:
        print(f"inboxbot {command}: {err}", file=sys.stderr)
        return 1
    return 0


def run(
    args: argparse.Namespace, loaded: Loaded, store: Store, now: float, daemon: str | None
) -> None:
    """``daemon``: the PID of the daemon working on this state, if one does."""
    if args.command == "status":
        print(status(loaded, store, now, daemon))
    elif args.command == "outbox":
        listed = (FAILED,) if args.failed else (*UNFINISHED, MUTED)
        show(store.steps(listed, args.sink), now, args.json)
    elif args.command == "retry":
        print(retry(loaded, store, args.steps, args.sink, now))
    else:
        print(drop(store, args.steps, now))


# --- retry and drop -------------------------------------------------------------------


def resolve(store: Store, refs: Sequence[str], allowed: Sequence[str], verb: str) -> list[str]:
    """The full ids of ``refs`` (ids or unique starts of ids) in one of ``allowed``."""
    ids = []
    for ref in refs:
        prefix = ref.strip().lower()
        if not _HEX.fullmatch(prefix):
            raise OutboxError(f"{ref!r} is not a step id (32 hex characters, or their start)")
        found = store.step_ids(prefix)
        if not found:
            raise OutboxError(f"no step {ref} in the outbox (`inboxbot outbox` lists them)")
        if len(found) > 1:
            starts = ", ".join(sid[: len(prefix) + 4] + "…" for sid, _ in found)
            raise OutboxError(f"step {ref} is ambiguous ({starts}); give more of its id")
        ((sid, status),) = found
        if status not in allowed:
            raise OutboxError(f"step {sid} is {status}: nothing to {verb}")
        ids.append(sid)
    return ids


def retry(loaded: Loaded, store: Store, refs: Sequence[str], sink: str | None, now: float) -> str:
    if bool(refs) == bool(sink):
        raise OutboxError("retry what? give STEP ids or --sink SINK (not both)")
    if sink:
        if sink not in loaded.config.sinks and not store.steps(UNFINISHED, sink):
            raise OutboxError(f"no sink {sink!r}; sinks: {', '.join(loaded.config.sinks)}")
        ids = [s.id for s in store.steps((PENDING, FAILED), sink)]
    else:
        ids = resolve(store, refs, (PENDING, FAILED), "retry")
    changed = store.retry_steps(ids, now=now)
    if not changed:
        return f"nothing to retry for sink {sink}"
    return f"{_steps(changed)} due now (a running daemon sends them within seconds)"


def drop(store: Store, refs: Sequence[str], now: float) -> str:
    if not refs:
        raise OutboxError("drop what? give STEP ids (`inboxbot outbox` lists them)")
    changed = store.drop_steps(resolve(store, refs, UNFINISHED, "drop"), now=now)
    return f"{_steps(changed)} {DROPPED}"


def _steps(n: int) -> str:
    return f"{n} step{'s' * (n != 1)}"


# --- the outbox -----------------------------------------------------------------------


def show(steps: Sequence[StepView], now: float, as_json: bool) -> None:
    if as_json:
        for step in steps:
            print(json.dumps(step_json(step)))
        return
    if not steps:
        print("the outbox is empty")
        return
    notes = waiting(steps, now)
    rows = [("STEP", "STATUS", "RULE", "ITEM", "TARGET", "TRIES", "NEXT TRY", "NOTE")]
    rows += [
        (s.id[:12], notes[s.id].split(":")[0] if s.id in notes else s.status, s.rule,
         f"{s.feed}/{s.item_id}", _target(s), str(s.attempts), next_try(s, now),
         _short(notes.get(s.id) or s.last_error or "", 90))
        for s in steps
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for *cells, error in rows:
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=True)]
        print("  ".join([*padded, error]).rstrip())


def step_json(s: StepView) -> dict[str, Any]:
    return {
        "id": s.id, "status": s.status, "kind": s.kind, "target": s.target, "rule": s.rule,
        "feed": s.feed, "item_id": s.item_id, "attempts": s.attempts,
        "next_try": _iso(s.due_at) if s.status == PENDING else None,
        "last_error": s.last_error, "created_at": _iso(s.created_at),
        "held": s.reason if s.reason != FORCED else None,
    }  # fmt: skip


def waiting(steps: Sequence[StepView], now: float) -> dict[str, str]:
    """Why each held, grouped or muted step waits (or was not sent), by step id:
    ``held: quiet hours until 07:00 Europe/Berlin``, ``grouped: 12 items, sends at 10:42``,
    ``muted by 3 (until 18:00): "on holiday"``."""
    sizes = Counter((s.batch or "", s.due_at) for s in steps if s.status == PENDING and s.batch)
    notes = {}
    for s in steps:
        if s.status == MUTED:
            notes[s.id] = s.reason or "muted"
        elif s.status != PENDING or not s.reason or s.reason == FORCED or s.due_at <= now:
            continue
        elif s.reason == "grouped":
            n = sizes[s.batch or "", s.due_at]
            notes[s.id] = f"grouped: {n} item{'s' * (n != 1)}, sends at {_clock(s.due_at, now)}"
        elif s.reason.startswith("muted"):
            notes[s.id] = s.reason
        else:
            notes[s.id] = f"held: {s.reason}"
    return notes


def _clock(at: float, now: float) -> str:
    moment = datetime.fromtimestamp(at).astimezone()
    return f"{moment:%H:%M}" if at - now < 86400 else f"{moment:%Y-%m-%d %H:%M}"


def next_try(s: StepView, now: float) -> str:
    if s.status == FAILED:
        return "never (retry)"
    if s.status == HELD:
        return "after planning"
    if s.status == MUTED:
        return "never (muted)"
    return "now" if s.due_at <= now else f"in {span(s.due_at - now)}"


def _target(s: StepView) -> str:
    return f"sink {s.target}" if s.kind == "deliver" else s.target


def span(seconds: float) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``."""
    s = max(seconds, 0.0)
    for unit, size in (("s", 1), ("m", 60), ("h", 3600)):
        if s < 90 * size:
            return f"{s / size:.0f}{unit}"
    return f"{s / 86400:.0f}d"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _short(text: str, size: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= size else line[: size - 1] + "…"


# --- status ---------------------------------------------------------------------------


def status(loaded: Loaded, store: Store, now: float, daemon: str | None) -> str:
    failing, polled = store.failing(), store.polled()
    running = f"running, PID {daemon}" if daemon else "not running: nothing is polled or sent"
    lines = [f"daemon: {running}", "feeds:"]
    pushes = store.pushes() if daemon else {}
    for feed in loaded.feeds():
        push = pushes.get(feed.key)
        every = feed.every.total_seconds()
        every = max(every, SAFETY_NET.total_seconds()) if push and push[0] else every
        lines.append(f"  {feed.key}: " + _feed(failing.pop(feed.key, None), polled.get(feed.key),
                                              every, now) + _push(push, now))  # fmt: skip
    steps = store.steps((*UNFINISHED, MUTED))
    lines.append("sinks:")
    for name in loaded.config.sinks:
        queue = [s for s in steps if s.kind == "deliver" and s.target == name]
        lines.append(f"  {name}: " + _sink(failing.pop(f"sink {name}", None), queue, now))
    lines.append("delayed actions: " + _delayed([s for s in steps if s.kind == "act"], now))
    lines.append("mutes: " + _mutes(Held(store).active_mutes(now), steps, now))
    lines += [f"also failing: {key} since {_ago(f.since, now)}: {f.reason}"
              for key, f in sorted(failing.items())]  # fmt: skip
    return "\n".join(lines)


def _feed(failing: Failing | None, polled: float | None, every: float, now: float) -> str:
    last = f"last good poll {_ago(polled, now)}" if polled else "never polled successfully"
    if failing is None:
        return f"ok, {last}, next poll {_due((polled or now) + every, now)}"
    since, upcoming = _ago(failing.since, now), _due(failing.retry_at or now, now)
    return f"FAILING since {since}: {failing.reason}; next poll {upcoming}; {last}"


def _push(push: tuple[bool, str, float, int] | None, now: float) -> str:
    """``; pushed (IDLE on INBOX) since 3h, 2 reconnects`` for a feed with a push channel."""
    if push is None:
        return ""
    up, what, since, reconnects = push
    again = f", {reconnects} reconnect{'s' * (reconnects != 1)}" if reconnects else ""
    if up:
        return f"; pushed ({what}) since {_ago(since, now)}{again}"
    return f"; push not connected since {_ago(since, now)}: {what}; polling{again}"


def _due(at: float, now: float) -> str:
    return "due now" if at <= now else f"in {span(at - now)}"


def _sink(failing: Failing | None, queue: Sequence[StepView], now: float) -> str:
    notes = waiting(queue, now)
    pending = [s for s in queue if s.status == PENDING and s.id not in notes]
    due = sum(s.due_at <= now for s in pending)
    later = [s.due_at for s in pending if s.due_at > now]
    failed = sum(s.status == FAILED for s in queue)
    text = f"{len(pending)} queued ({due} due now, {len(later)} later"
    text += f", next in {span(min(later) - now)})" if later else ")"
    text += f", {failed} failed"
    held = Counter(note for sid, note in notes.items() if not note.startswith("muted by"))
    text += "".join(f"; {n} {note}" if not note.startswith("grouped") else f"; {note}"
                    for note, n in held.items())  # fmt: skip
    errors = [s.last_error for s in queue if s.last_error]
    if failing is not None:
        refused = "credentials refused" if failing.auth else "failing"
        text += f"; {refused.upper()} since {_ago(failing.since, now)}: {failing.reason}"
    elif errors:
        text += f"; last error: {_short(errors[-1], 200)}"
    return text


def _delayed(actions: Sequence[StepView], now: float) -> str:
    waiting = [s for s in actions if s.status == PENDING and s.due_at > now]
    if not waiting:
        return "none"
    counts = Counter(s.target for s in waiting)
    kinds = ", ".join(f"{action} ×{n}" for action, n in sorted(counts.items()))
    return f"{len(waiting)} waiting ({kinds}), next in {span(min(s.due_at for s in waiting) - now)}"


def _mutes(mutes: Sequence[Mute], steps: Sequence[StepView], now: float) -> str:
    if not mutes:
        return "none"
    counts = Counter((s.reason or "").split(" ")[2] for s in steps if s.status == MUTED or (
        s.reason or "").startswith("muted by"))  # fmt: skip
    return "; ".join(
        f"{m.id} ({m.scope()}, {_mute_end(m, now)}): {counts.get(str(m.id), 0)} silenced so far"
        for m in mutes
    )


def _mute_end(mute: Mute, now: float) -> str:
    return f"until {_clock(mute.until, now)}" if mute.until else "until unmuted"


def _ago(t: float | None, now: float) -> str:
    return f"{span(now - t)} ago" if t is not None else "never"
