"""The pipeline: poll → store → plan → render → outbox → deliver → act.

Only this module calls sources and sinks. Each stage reads what the previous
one stored, so a crash anywhere resumes from the store: items not planned yet
are planned, steps not done yet are retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import random
import time as _time
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.config import Config, parse_rate
from bot.errors import (
    AuthError,
    GoneError,
    PermanentError,
    RemoteError,
    RenderError,
    TransientError,
)
from bot.health import Health
from bot.http import RateLimiter
from bot.item import File, Item
from bot.logs import fields
from bot.metrics import Metrics
from bot.render import Renderer
from bot.rules import Match, Notify, Rule, Step, plan, wants_detail
from bot.sinks import Notification, Sink
from bot.sinks.base import FeedState
from bot.sources import Feed, Source
from bot.store import CANCELLED, DONE, FAILED, NewStep, StepRecord, Store

log = logging.getLogger("inboxbot.pipeline")

BACKOFF_BASE = 5.0
BACKOFF_CAP = 30.0  # a target that comes back gets its queue within 30 s, whatever the outage
AUTH_RETRY_CAP = 120.0  # refused credentials: tried again within 2 min, in case they were fixed
FEED_REST_CAP = 1800.0  # a failing feed is polled at least every 30 min
BROKEN_FEED_REST = 900.0  # refused credentials, a vanished mailbox: from 15 min up to 6 h
DEDUP_HORIZON = timedelta(days=365)
IN_FLIGHT = 8  # notifications in flight at once per sink (each account's one at a time)


class Clock:
    """Wall time for records and item ages; tests pass their own."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return _time.time()


LAST_FIELDS = ("id", "subject", "sender", "created_at", "url")
UNRENDERED = "unrendered"  # the payload key of a step whose template failed: its notify index


def backoff(attempts: int, hint: float | None) -> float:
    """Exponential with jitter; a remote's own hint wins when it asks for longer."""
    delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempts, 20))
    delay *= random.uniform(0.5, 1.0)
    return max(delay, hint) if hint is not None else delay


def retry_delay(attempts: int, err: TransientError | AuthError) -> float:
    """When a refused step is tried again: refused credentials are tried again within
    ``AUTH_RETRY_CAP`` (a reload with changed ones makes it due at once)."""
    if isinstance(err, AuthError):
        return min(AUTH_RETRY_CAP, backoff(attempts, None))
    return backoff(attempts, err.retry_after)


def rest(failures: int, err: RemoteError, every: float) -> float:
    """How long a feed that failed ``failures`` times in a row waits before its next poll."""
    if isinstance(err, AuthError | PermanentError):
        return min(6 * 3600.0, BROKEN_FEED_REST * float(2 ** min(failures - 1, 5)))
    hint = err.retry_after if isinstance(err, TransientError) else None
    grown = every * float(2 ** min(failures - 1, 10) - 1)  # first retry: the next interval
    return max(hint or 0.0, min(FEED_REST_CAP, grown))


@dataclass
class Pipeline:
    config: Config
    sources: Mapping[str, Source]
    sinks: Mapping[str, Sink]
    rules: Sequence[Rule]
    renderer: Renderer
    store: Store
    clock: Clock = field(default_factory=Clock)
    health: Health = field(default_factory=Health)
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self._delivering = asyncio.Lock()
        self._acting = asyncio.Lock()
        self._resting: dict[str, tuple[int, float]] = {}  # feed → (failures in a row, until)
        self._shown: dict[tuple[str, str], FeedState] = {}  # (sink, feed) → state it shows
        self.last_success: dict[str, float] = {}  # feed → time of its last good poll
        self.health.attach(self.store)  # what fails is recorded for `inboxbot status`
        self._sink_limits = {
            name: RateLimiter(*rate, margin=0.0)
            for name, sink in self.sinks.items()
            if (rate := sink_rate(sink))
        }
        self._showing = [sink for sink in self.sinks.values() if sink.wants_feed_state]
        # feeds whose stored items are all planned: only a poll with new items plans then
        # (the first poll of each feed also plans what a crash or a failed detail left)
        self._planned: set[str] = set()

    # --- poll and plan ---------------------------------------------------------------

    async def poll(self, feed: Feed) -> int:
        """Poll one feed, store and plan its new items; raises when the poll failed.

        A failing feed rests (longer after each failure, as long as the upstream asks):
        a poll during its rest does nothing, so an upstream in trouble is not hammered."""
        failures, until = self._resting.get(feed.key, (0, 0.0))
        if until and self.clock.time() < until:
            return 0
        source = self.sources[feed.account]
        polled_before, cursor = self.store.cursor(feed.key)
        metrics = self.metrics.feed(feed.account, feed.name)
        metrics.polls.inc()
        started = _time.perf_counter()
        try:
            result = await source.poll(
                feed.name, cursor, lambda ids: self.store.known(feed.key, ids)
            )
        except RemoteError as err:
            self.metrics.poll_errors.labels(feed.account, feed.name, type(err).__name__).inc()
            wait = rest(failures + 1, err, feed.every.total_seconds())
            self._resting[feed.key] = (failures + 1, self.clock.time() + wait)
            self.health.failed(feed.key, err, retry_at=self.clock.time() + wait)
            raise
        metrics.poll_seconds.observe(_time.perf_counter() - started)
        if failures:
            del self._resting[feed.key]
        now = self.last_success[feed.key] = self.clock.time()
        metrics.last_poll.set(now)
        skip = not polled_before and (feed.backlog or self.config.backlog) == "skip"
        added = self.store.record_poll(feed.key, result.items, result.cursor, now=now, skip=skip)
        self.health.ok(feed.key)
        if added:
            metrics.new_items.inc(added)
            log.info("polled", extra=fields(feed=feed.key, new=added, backlog_skipped=skip))
        if added or feed.key not in self._planned:
            await self.plan_new(feed)
        if self._showing:
            await self.show_state(feed)
        return added

    async def show_state(self, feed: Feed) -> None:
        """Give sinks that show feeds (Home Assistant sensors) the feed's state when it
        changed."""
        showing = self._showing
        if not showing:
            return
        unread, last = self.store.feed_summary(feed.key)
        summary = {k: v for k, v in last.to_json().items() if k in LAST_FIELDS} if last else None
        state = FeedState(feed.account, feed.name, unread, summary)
        for sink in showing:
            if self._shown.get((sink.name, feed.key)) == state:
                continue  # unchanged: the sink shows it already (and again after reconnecting)
            try:
                await sink.feed_state([state])
            except RemoteError as err:  # shown again after the next poll
                log.debug("feed state not shown", extra=fields(sink=sink.name, error=str(err)))
            else:
                self._shown[sink.name, feed.key] = state

    async def plan_new(self, feed: Feed) -> None:
        """Plan every stored item of ``feed`` not planned yet (also those a crash left), saved
        together in one transaction; then release the actions, within the per-poll limit."""
        details = f"{feed.key} details"
        plans: list[tuple[Item, list[NewStep], bool]] = []
        complete = True
        for item in self.store.new_items(feed.key):
            try:
                planned = await self.plan_item(item)
            except RemoteError as err:
                # the item stays new and is planned after a later poll; so are the rest
                self.health.failed(details, err)
                complete = False
                break
            self.health.ok(details)
            if planned is not None:
                plans.append((planned[0], planned[1], planned[0] is not item))
        self.store.save_plans(feed.key, plans, now=self.clock.time())
        if complete:
            self._planned.add(feed.key)
        else:
            self._planned.discard(feed.key)
        limit = self.config.max_actions_per_poll
        refused = self.store.release_actions(feed.key, limit, now=self.clock.time())
        for rule, count in sorted(refused.items()):
            log.error(
                "actions refused",
                extra=fields(rule=rule, feed=feed.key, items=count, max_actions_per_poll=limit),
            )

    async def plan_item(self, item: Item) -> tuple[Item, list[NewStep]] | None:
        """The item (with its detail when a rule needs it) and its rendered steps;
        None when the item went away upstream meanwhile."""
        now = self.clock.now()
        values = item.fields(now)
        context = {"item": values, "account": item.account, "now": now}
        if not item.complete and wants_detail(self.rules, item, context):
            try:
                item = await self.sources[item.account].complete(item)
            except GoneError as err:
                log.info(
                    "item gone",
                    extra=fields(
                        feed=f"{item.account}/{item.feed}", item=item.id, reason=err.message
                    ),
                )
                self.store.drop_item(f"{item.account}/{item.feed}", item.id)
                return None
            now = self.clock.now()
            values = item.fields(now)
            context = {"item": values, "account": item.account, "now": now}
        steps: list[NewStep] = []
        for match in plan(self.rules, item, context):
            self.metrics.matched(match.rule.name).inc()
            log.info(
                "matched",
                extra=fields(
                    rule=match.rule.name, feed=f"{item.account}/{item.feed}", item=item.id
                ),
            )
            steps += self._render(match, item, now, values)
        return item, steps

    def _render(
        self, match: Match, item: Item, now: datetime, values: dict[str, Any]
    ) -> list[NewStep]:
        ctx = self.renderer.context(
            item, now=now, rule=match.rule.name, extract=match.extract, values=values
        )
        return [self._new_step(step, match.extract, item, ctx, now) for step in match.steps]

    def _new_step(
        self, step: Step, extract: Mapping[str, str], item: Item, ctx: dict[str, Any],
        now: datetime,
    ) -> NewStep:  # fmt: skip
        """The step as the outbox keeps it. One that cannot be rendered is kept as failed,
        with its error: visible in ``inboxbot outbox``, rendered again by ``retry``."""
        due = now.timestamp() + (step.action.after.total_seconds() if step.action and
                                 step.action.after else 0.0)  # fmt: skip
        try:
            payload = self._payload(step, extract, item, ctx)
        except RenderError as err:
            log.error("render failed", extra=fields(rule=step.rule, item=item.id, error=str(err)))
            payload = {UNRENDERED: step.index}
            return NewStep(step.id, step.rule, step.kind, step.target, payload, due, str(err))
        return NewStep(step.id, step.rule, step.kind, step.target, payload, due)

    def _payload(
        self, step: Step, extract: Mapping[str, str], item: Item, ctx: dict[str, Any]
    ) -> dict[str, Any]:
        if step.notify is not None:
            n = step.notify
            sink = self.sinks[n.sink]
            title, message = render_for(sink, n, {**ctx, "format": sink.format})
            return Notification(
                step.id, step.rule, item.account, item.feed, item.kind, item.id, title,
                message, item.url, n.priority, _public(item), dict(extract), dict(n.options),
            ).to_json()  # fmt: skip
        assert step.action is not None
        a = step.action
        return {"args": dict(a.args), "message": a.message.render(ctx) if a.message else None}

    def _rerender(self, record: StepRecord) -> StepRecord:
        """A step kept unrendered, rendered with the rules and templates running now."""
        index = record.payload.get(UNRENDERED)
        if index is None:
            return record
        item = self.store.item(record.feed, record.item_id)
        rule = next((r for r in self.rules if r.name == record.rule), None)
        steps = [s for m in plan([rule], item, self._context(item)) for s in m.steps
                 if s.id == record.id] if rule and item else []  # fmt: skip
        if item is None or rule is None or not steps:
            raise RenderError(f"rule {record.rule!r} no longer has this step or its item")
        now = self.clock.now()
        extract = {name: ex.apply(item.fields(now)) for name, ex in rule.extract.items()}
        ctx = self.renderer.context(item, now=now, rule=rule.name, extract=extract)
        return dataclasses.replace(record, payload=self._payload(steps[0], extract, item, ctx))

    def _context(self, item: Item) -> dict[str, Any]:
        now = self.clock.now()
        return {"item": item.fields(now), "account": item.account, "now": now}

    # --- deliver ---------------------------------------------------------------------

    async def deliver(self) -> None:
        """Send every due notification, each sink in its own order, sinks side by side."""
        async with self._delivering:
            queues: dict[str, list[StepRecord]] = defaultdict(list)
            for step in self.store.pending_steps("deliver"):
                queues[step.target].append(step)
            await asyncio.gather(*(self._deliver_to(name, steps) for name, steps in queues.items()))

    async def _deliver_to(self, name: str, steps: list[StepRecord]) -> None:
        """A sink's notifications, up to IN_FLIGHT at once: each account's in their order,
        accounts side by side. A failed send ends the round for the sink."""
        sink = self.sinks.get(name)
        if sink is None:
            self.health.failed(
                f"sink {name}",
                PermanentError("sink is no longer configured; its notifications wait"),
            )
            return
        by_account: dict[str, list[StepRecord]] = defaultdict(list)
        for step in steps:
            by_account[step.feed.split("/", 1)[0]].append(step)
        queues, failed = deque(by_account.values()), [False]

        async def worker() -> None:
            while queues and not failed[0]:
                failed[0] = not await self._deliver_queue(sink, queues.popleft(), failed)

        await asyncio.gather(*(worker() for _ in range(min(IN_FLIGHT, len(queues)))))

    async def _deliver_queue(self, sink: Sink, steps: list[StepRecord], failed: list[bool]) -> bool:
        """One account's notifications to ``sink`` in order; False when a send failed."""
        for step in steps:
            if failed[0] or step.due_at > self.clock.time():
                return True  # an earlier notification waits for its retry: keep the order
            if sink.name in self._sink_limits:
                await self._sink_limits[sink.name].wait()
            if not await self._send(sink, step):
                return False
        return True

    async def _send(self, sink: Sink, step: StepRecord) -> bool:
        key = f"sink {sink.name}"
        try:
            step = self._rerender(step)
        except RenderError as err:
            log.error("render failed", extra=fields(sink=sink.name, step=step.id, error=str(err)))
            self.store.finish_step(step.id, now=self.clock.time(), status=FAILED, error=str(err))
            return True
        try:
            files = await self._files(step, sink.max_file_size) if sink.max_file_size else []
            await sink.send(Notification(**step.payload), files)
        except (TransientError, AuthError) as err:
            self.metrics.notified(sink.name, "retry").inc()
            self.health.failed(key, err)
            self.store.retry_step(
                step.id, due_at=self.clock.time() + retry_delay(step.attempts, err), error=str(err)
            )
            return False
        except PermanentError as err:
            self.metrics.notified(sink.name, "failed").inc()
            log.error(
                "delivery failed",
                extra=fields(sink=sink.name, step=step.id, rule=step.rule, error=str(err)),
            )
            self.store.finish_step(step.id, now=self.clock.time(), status=FAILED, error=str(err))
            self.store.cancel_actions(step.feed, step.item_id, step.rule, now=self.clock.time())
            return True
        self.store.finish_step(step.id, now=self.clock.time())
        self.metrics.notified(sink.name, "delivered").inc()
        self.health.ok(key)
        log.info("delivered", extra=fields(sink=sink.name, rule=step.rule, item=step.item_id))
        return True

    async def _files(self, step: StepRecord, max_size: int) -> list[File]:
        """The item's attachments when the rule asks (``options: {attach: true}``); an
        upstream that no longer has them leaves them out."""
        if not step.payload["options"].get("attach"):
            return []
        item = self.store.item(step.feed, step.item_id)
        source = self.sources.get(item.account) if item else None
        if item is None or source is None:
            return []
        try:
            item = await source.complete(item)
            return await source.files(item, max_size)
        except GoneError as err:
            log.warning("attachments gone", extra=fields(item=step.item_id, error=str(err)))
            return []

    # --- act -------------------------------------------------------------------------

    async def act(self) -> None:
        """Run due actions whose rule delivered everything; batch where the source can."""
        async with self._acting:
            now = self.clock.time()
            groups: dict[tuple[str, str, str], list[StepRecord]] = defaultdict(list)
            for step in self.store.pending_steps("act"):
                if step.due_at <= now:
                    batch = step.target in self.sources[step.feed.split("/")[0]].batch_actions
                    key = (step.feed, step.target, json.dumps(step.payload) if batch else step.id)
                    groups[key].append(step)
            for (feed, action, _), steps in groups.items():
                await self._act(feed, action, steps)

    async def _act(self, feed: str, action: str, steps: list[StepRecord]) -> None:
        account = feed.split("/")[0]
        source = self.sources.get(account)
        items = [item for s in steps if (item := self.store.item(feed, s.item_id)) is not None]
        if source is None or len(items) != len(steps):
            self._finish_actions(action, steps, CANCELLED, "account or item gone")
            return
        try:
            payload = self._rerender(steps[0]).payload
        except RenderError as err:
            self._finish_actions(action, steps, FAILED, str(err))
            return
        args = {
            **payload["args"],
            **({"message": payload["message"]} if payload["message"] else {}),
        }
        try:
            await source.act(action, args, items)
        except GoneError:
            pass  # the item went away upstream: the action is moot
        except (TransientError, AuthError) as err:
            self.metrics.actions.labels(action, "retry").inc(len(steps))
            self.health.failed(f"{account} actions", err)
            for s in steps:
                due = self.clock.time() + retry_delay(s.attempts, err)
                self.store.retry_step(s.id, due_at=due, error=str(err))
            return
        except PermanentError as err:
            log.error("action failed", extra=fields(action=action, feed=feed, error=str(err)))
            self._finish_actions(action, steps, FAILED, str(err))
            return
        self.health.ok(f"{account} actions")
        self._finish_actions(action, steps, DONE, "")
        log.info("acted", extra=fields(action=action, feed=feed, items=len(steps)))

    def _finish_actions(
        self, action: str, steps: list[StepRecord], status: str, error: str
    ) -> None:
        self.metrics.actions.labels(action, status).inc(len(steps))
        for s in steps:
            self.store.finish_step(s.id, now=self.clock.time(), status=status, error=error)

    async def flush(self) -> None:
        """Deliver what is due, then act on what was delivered; with an empty outbox (the
        usual case) one query."""
        depth, oldest = self.store.outbox()
        if depth:
            await self.deliver()
            await self.act()
        await self.alert()
        if depth:
            depth, oldest = self.store.outbox()
        self.metrics.outbox_depth.set(depth)
        self.metrics.outbox_oldest.set(self.clock.time() - oldest if oldest else 0.0)

    async def alert(self) -> None:
        """Tell ``alerts_to`` about failures older than ``alerts_after`` (auth: at once), once,
        and once more when they are over. An alert that cannot go out is tried next time."""
        sink = self.sinks.get(self.config.alerts_to or "")
        if sink is None:
            return
        now = self.clock.time()
        for key, failure in self.health.due(now, self.config.alerts_after.total_seconds()):
            title = f"inboxbot: {key} is failing"
            if await self._send_alert(sink, f"{key}:{failure.since}", title, failure.reason):
                self.health.alerted.add(key)
        for key in sorted(self.health.recovered):
            if await self._send_alert(sink, f"{key}:ok:{now}", f"inboxbot: {key} recovered", ""):
                self.health.recovered.discard(key)

    async def _send_alert(self, sink: Sink, key: str, title: str, message: str) -> bool:
        alert = Notification(
            id=hashlib.sha256(key.encode()).hexdigest()[:32], rule="inboxbot-alert", account="",
            feed="", kind="alert", item_id="", title=title, message=sink.escape(message), url=None,
            priority="high",
        )  # fmt: skip
        try:
            await sink.send(alert)
        except RemoteError as err:
            log.warning("alert not sent", extra=fields(sink=sink.name, error=str(err)))
            return False
        log.info("alert sent", extra=fields(sink=sink.name, title=title))
        return True

    def prune(self) -> None:
        now = self.clock.time()
        self.store.prune(before=now - self.config.retention.total_seconds(),
                         forget_before=now - DEDUP_HORIZON.total_seconds())  # fmt: skip


def sink_rate(sink: Sink) -> tuple[int, float] | None:
    """The sink's ``rate:``, else the limit its service documents."""
    if sink.config.rate:
        return sink.config.rate
    return parse_rate(sink.default_rate) if sink.default_rate else None


def render_for(sink: Sink, n: Notify, ctx: dict[str, Any]) -> tuple[str, str]:
    """(title, message) for ``sink``: the title plain, the message in the sink's format
    with every item value escaped for it."""
    if n.template:
        return n.template.render(ctx, sink.escape)
    title = n.title.render(ctx) if n.title else ""
    return title, n.message.render(ctx, sink.escape) if n.message else ""


def _public(item: Item) -> dict[str, Any]:
    """The item as sinks send it: every field but raw; ``complete`` false when only the
    upstream's summary was fetched (no rule read the detail)."""
    data = item.to_json()
    data.pop("raw")
    return data
