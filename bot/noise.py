"""The hold stage: when, and as what, a planned notification goes out.

It sits between planning and delivery and drops nothing: a delivery goes out now, or
waits in a batch until a time (its group's send, the end of quiet hours, of a limit's
window, of a deferring mute) and then goes out with the rest of its batch as one
digest, or is recorded as muted. A waiting step is a pending outbox step with a
reason, so ``status`` and ``outbox`` show it and a crash resumes it.

A group is set when the delivery is planned (``group``); the rest is decided each
time deliveries fall due (``admit``), in this order: a mute; the sink's quiet hours,
unless the priority breaks through; the sink's and the rule's limits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from bot.config import show_rate
from bot.digest import build, top_priority
from bot.held import Held, Mute, deferred_batch, matches
from bot.metrics import Metrics
from bot.rules import Group, Notify, Rule
from bot.sinks import Notification, Sink
from bot.store import FORCED, NewStep, StepRecord, Store
from bot.windows import clock_label

GROUPED = "grouped"
SEP = "\x1f"


@dataclass(frozen=True)
class Unit:
    """What one send delivers: one step, or a batch's due steps as one digest."""

    steps: tuple[StepRecord, ...]

    @property
    def due_at(self) -> float:
        return min(s.due_at for s in self.steps)

    @property
    def account(self) -> str:
        """The account whose order the unit keeps ("" for a digest of several)."""
        accounts = {s.feed.split("/", 1)[0] for s in self.steps}
        return accounts.pop() if len(accounts) == 1 else ""


def group_key(rule: str, index: int, sink: str, group: Group, payload: Mapping[str, Any]) -> str:
    """The group a delivery joins: its rule's notify and the values of ``group.by``."""
    values = {**payload.get("extract", {}), **payload.get("item", {})}
    by = [str(values.get(name, "")) for name in group.by]
    return SEP.join(("group", rule, str(index), sink, json.dumps(by)))


def _group_of(key: str, rules: Sequence[Rule]) -> tuple[Notify, dict[str, str]] | None:
    """The notify a group key names, with its ``by`` values; None when its rule changed."""
    _, rule, index, _, by = key.split(SEP)
    found = next((r for r in rules if r.name == rule), None)
    notify = found.notify[int(index)] if found and int(index) < len(found.notify) else None
    if notify is None or notify.group is None:
        return None
    return notify, dict(zip(notify.group.by, json.loads(by), strict=False))


class Hold:
    def __init__(self, store: Store, metrics: Metrics, rules: Callable[[], Sequence[Rule]]):
        self.held = Held(store)
        self.metrics = metrics
        self.rules = rules  # the rules running now (a reload replaces them)

    # --- at planning: groups -------------------------------------------------------

    def group(self, steps: Sequence[NewStep], now: float) -> list[NewStep]:
        """Give each grouped delivery its batch's send time: an open group's, else one
        ``interval`` after the group last went out, else ``wait`` from now."""
        opened: dict[str, float] = {}
        placed = []
        for step in steps:
            if step.batch is None or step.batch_at is not None:
                placed.append(step)
                continue
            found = _group_of(step.batch, self.rules())
            if found is None or found[0].group is None:
                placed.append(replace(step, batch=None))
                continue
            if step.batch not in opened:
                opened[step.batch] = self._send_time(step.batch, found[0].group, now)
            at = opened[step.batch]
            self.metrics.noise.labels(step.target, GROUPED).inc()
            placed.append(replace(step, batch_at=at, due_at=at, reason=GROUPED))
        return placed

    def _send_time(self, batch: str, group: Group, now: float) -> float:
        interval = float(group.interval.total_seconds())
        pending = self.held.latest_pending(batch)
        if pending is not None:
            return pending if pending > now else pending + interval
        sent = self.held.last_sent(batch)
        if sent is not None and now < sent + interval:
            return sent + interval
        return now + float(group.wait.total_seconds())

    # --- at delivery: mutes, quiet hours, limits -----------------------------------

    def admit(self, sink: Sink, steps: Sequence[StepRecord], now: float) -> list[Unit]:
        """The units to send to ``sink`` now or after a retry wait, in order; what must
        wait is held (or muted) in the store and left out."""
        waiting = [s for s in steps if s.due_at <= now or not s.reason]
        due = [s for s in waiting if s.due_at <= now and s.reason != FORCED]
        mutes = self.held.active_mutes(now) if due else []
        silenced = {s.id for s in due if self._muted(sink, s, mutes, now)}
        units = _units([s for s in waiting if s.id not in silenced])
        limited = sink.config.limit or any(r.limit for r in self.rules())
        windows = self.held.windows() if limited and due else {}
        return [u for u in units if self._goes(sink, u, now, windows)]

    def _goes(
        self, sink: Sink, unit: Unit, now: float, windows: dict[str, tuple[float, int]]
    ) -> bool:
        """Whether ``unit`` goes (or waits for its retry) rather than being held."""
        if unit.due_at > now or any(s.reason == FORCED for s in unit.steps):
            return True
        return not self._quiet(sink, unit, now) and not self._limited(sink, unit, now, windows)

    def _muted(self, sink: Sink, step: StepRecord, mutes: Sequence[Mute], now: float) -> bool:
        mute = next((m for m in mutes if matches(m, step, step.feed.split("/", 1)[0])), None)
        if mute is None:
            return False
        until = f"until {_local(mute.until, now)}" if mute.until else "until unmuted"
        said = f': "{mute.comment}"' if mute.comment else ""
        if mute.defer and mute.until is not None:
            reason = f"muted by {mute.id} ({until}, then sent as one digest){said}"
            self.held.hold([step.id], deferred_batch(mute.id, sink.name), mute.until, reason)
        else:
            self.held.mute_steps([step.id], f"muted by {mute.id} ({until}){said}", now=now)
        self.metrics.noise.labels(sink.name, "muted").inc()
        return True

    def _quiet(self, sink: Sink, unit: Unit, now: float) -> bool:
        quiet = sink.config.quiet
        end = quiet.until(datetime.fromtimestamp(now, UTC)) if quiet else None
        if quiet is None or end is None or quiet.breaks_through(top_priority(_payloads(unit))):
            return False
        reason = f"quiet hours until {clock_label(end, quiet.tz)}"
        first = unit.steps[0]
        if quiet.digest:
            batch: str | None = SEP.join(("quiet", sink.name, first.rule))
        else:
            batch = first.batch  # one by one: a group stays one digest
        self.held.hold([s.id for s in unit.steps], batch, end.timestamp(), reason)
        self.metrics.noise.labels(sink.name, "held").inc(len(unit.steps))
        return True

    def _limited(
        self, sink: Sink, unit: Unit, now: float, windows: dict[str, tuple[float, int]]
    ) -> bool:
        """Count the unit against the sink's and its rules' limits; hold it when one is
        reached (until that window ends, as one digest)."""
        limits = [(SEP.join(("limit", sink.name)), sink.config.limit)]
        for rule in self.rules():
            if rule.limit and rule.name in {s.rule for s in unit.steps}:
                limits.append((SEP.join(("limit", sink.name, rule.name)), rule.limit))
        counted = []
        for key, limit in limits:
            if limit is None:
                continue
            count, period = limit
            since, sent = windows.get(key, (now, 0))
            if now >= since + period:
                since, sent = now, 0
            if sent >= count:
                reason = f"limit {show_rate(limit)} reached, sends at {_local(since + period, now)}"
                self.held.hold([s.id for s in unit.steps], key, since + period, reason)
                self.metrics.noise.labels(sink.name, "limited").inc(len(unit.steps))
                return True
            counted.append((key, since, sent))
        if unit.steps[0].attempts == 0:  # a retry was counted when it was first tried
            for key, since, sent in counted:
                windows[key] = (since, sent + 1)
                self.held.count(key, since, sent + 1)
        return False

    def notification(self, sink: Sink, unit: Unit, now: float) -> Notification:
        """What to send for ``unit``: a step's own notification, or their digest."""
        if len(unit.steps) == 1:
            return Notification(**unit.steps[0].payload)
        first = unit.steps[0]
        assert first.batch is not None and first.batch_at is not None
        found = _group_of(first.batch, self.rules()) if first.batch.startswith("group") else None
        notify, by = found if found else (None, {})
        group = notify.group if notify else None
        return build(
            sink, _payloads(unit), batch=first.batch, batch_at=first.batch_at,
            listed=group.max if group else 25, group=by,
            template=notify.digest if notify else None, now=datetime.fromtimestamp(now, UTC),
        )  # fmt: skip


def _units(steps: Sequence[StepRecord]) -> list[Unit]:
    """Steps in order, a batch's steps of one send time together at its first."""
    batches: dict[tuple[str, float | None], list[StepRecord]] = {}
    order: list[list[StepRecord]] = []
    for step in steps:
        if step.batch is None:
            order.append([step])
            continue
        key = (step.batch, step.batch_at)
        if key not in batches:
            batches[key] = []
            order.append(batches[key])
        batches[key].append(step)
    return [Unit(tuple(members)) for members in order]


def _payloads(unit: Unit) -> list[dict[str, Any]]:
    return [s.payload for s in unit.steps]


def _local(at: float, now: float) -> str:
    """A time as the machine's clock shows it: ``18:00``, with the date when not ``now``'s."""
    moment = datetime.fromtimestamp(at).astimezone()
    today = datetime.fromtimestamp(now).astimezone().date()
    return f"{moment:%H:%M}" if moment.date() == today else f"{moment:%Y-%m-%d %H:%M}"
