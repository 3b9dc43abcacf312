"""The plan stage: turn each stored new item into its rendered steps, saved in the outbox.

The rules say which steps an item gets; the item's detail is fetched first only when a
rule reads it. A step whose template fails is kept unrendered (its error visible in
``inboxbot outbox``) and rendered again by ``rerender`` when it is due.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bot.errors import GoneError, RemoteError, RenderError
from bot.item import Item
from bot.logs import fields
from bot.noise import Hold, group_key
from bot.parts import Parts
from bot.rules import Match, Notify, Step, plan, wants_detail
from bot.sinks import Notification, Sink
from bot.sources import Feed
from bot.store import NewStep, StepRecord

log = logging.getLogger("inboxbot.pipeline.planning")

PLAN_CHUNK = 20  # items planned per transaction: 2 s of detail requests at 10 a second
UNRENDERED = "unrendered"  # the payload key of a step whose template failed: its notify index


class Planning:
    def __init__(self, parts: Parts, hold: Hold) -> None:
        self.parts = parts
        self.hold = hold  # gives grouped deliveries their group's send time
        # feeds whose stored items are all planned: only a poll with new items plans then
        # (the first poll of each feed also plans what a crash or a failed detail left)
        self._planned: set[str] = set()

    async def plan_polled(self, feed: Feed, added: int) -> None:
        """After a poll of ``feed`` that added ``added`` items: plan when it added some or
        when the feed may still have unplanned ones."""
        if added or feed.key not in self._planned:
            await self.plan_new(feed)

    async def plan_new(self, feed: Feed) -> None:
        """Plan every stored item of ``feed`` not planned yet (also those a crash left), saved
        PLAN_CHUNK items a transaction (deliveries start while later details are fetched);
        then release the actions, within the per-poll limit."""
        p = self.parts
        details = f"{feed.key} details"
        plans: list[tuple[Item, list[NewStep], bool]] = []
        complete = True
        for item in p.store.new_items(feed.key):
            try:
                planned = await self.plan_item(item)
            except RemoteError as err:
                # the item stays new and is planned after a later poll; so are the rest
                p.health.failed(details, err)
                complete = False
                break
            p.health.ok(details)
            if planned is not None:
                plans.append((planned[0], planned[1], planned[0] is not item))
            if len(plans) >= PLAN_CHUNK:
                self._save(feed, plans)
                plans = []
        self._save(feed, plans)
        if complete:
            self._planned.add(feed.key)
        else:
            self._planned.discard(feed.key)
        limit = p.config.max_actions_per_poll
        refused = p.store.release_actions(feed.key, limit, now=p.clock.time())
        for rule, count in sorted(refused.items()):
            log.error(
                "actions refused",
                extra=fields(rule=rule, feed=feed.key, items=count, max_actions_per_poll=limit),
            )

    def _save(self, feed: Feed, plans: list[tuple[Item, list[NewStep], bool]]) -> None:
        """Record ``plans`` in one transaction, grouped deliveries given their send time."""
        p = self.parts
        placed = iter(self.hold.group([s for _, steps, _ in plans for s in steps], p.clock.time()))
        plans = [(item, [next(placed) for _ in steps], changed) for item, steps, changed in plans]
        p.store.save_plans(feed.key, plans, now=p.clock.time())

    async def plan_item(self, item: Item) -> tuple[Item, list[NewStep]] | None:
        """The item (with its detail when a rule needs it) and its rendered steps;
        None when the item went away upstream meanwhile."""
        p = self.parts
        now = p.clock.now()
        values = item.fields(now)
        context = {"item": values, "account": item.account, "now": now}
        if not item.complete and wants_detail(p.rules, item, context):
            try:
                item = await p.sources[item.account].complete(item)
            except GoneError as err:
                log.info(
                    "item gone",
                    extra=fields(
                        feed=f"{item.account}/{item.feed}", item=item.id, reason=err.message
                    ),
                )
                p.store.drop_item(f"{item.account}/{item.feed}", item.id)
                return None
            now = p.clock.now()
            values = item.fields(now)
            context = {"item": values, "account": item.account, "now": now}
        steps: list[NewStep] = []
        for match in plan(p.rules, item, context):
            p.metrics.matched(match.rule.name).inc()
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
        ctx = self.parts.renderer.context(
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
            payload = _payload(self.parts, step, extract, item, ctx)
        except RenderError as err:
            log.error("render failed", extra=fields(rule=step.rule, item=item.id, error=str(err)))
            payload = {UNRENDERED: step.index}
            return NewStep(step.id, step.rule, step.kind, step.target, payload, due, str(err))
        group = step.notify.group if step.notify else None
        batch = group_key(step.rule, step.index, step.target, group, payload) if group else None
        return NewStep(step.id, step.rule, step.kind, step.target, payload, due, batch=batch)


def rerender(parts: Parts, record: StepRecord) -> StepRecord:
    """A step kept unrendered, rendered with the rules and templates running now; any
    other step as it is. Raises RenderError when it still cannot be rendered."""
    index = record.payload.get(UNRENDERED)
    if index is None:
        return record
    item = parts.store.item(record.feed, record.item_id)
    rule = next((r for r in parts.rules if r.name == record.rule), None)
    steps = [s for m in plan([rule], item, _context(parts, item)) for s in m.steps
             if s.id == record.id] if rule and item else []  # fmt: skip
    if item is None or rule is None or not steps:
        raise RenderError(f"rule {record.rule!r} no longer has this step or its item")
    now = parts.clock.now()
    extract = {name: ex.apply(item.fields(now)) for name, ex in rule.extract.items()}
    ctx = parts.renderer.context(item, now=now, rule=rule.name, extract=extract)
    return dataclasses.replace(record, payload=_payload(parts, steps[0], extract, item, ctx))


def _payload(
    parts: Parts, step: Step, extract: Mapping[str, str], item: Item, ctx: dict[str, Any]
) -> dict[str, Any]:
    if step.notify is not None:
        n = step.notify
        sink = parts.sinks[n.sink]
        title, message = render_for(sink, n, {**ctx, "format": sink.format})
        return Notification(
            step.id, step.rule, item.account, item.feed, item.kind, item.id, title,
            message, item.url, n.priority, _public(item), dict(extract), dict(n.options),
        ).to_json()  # fmt: skip
    assert step.action is not None
    a = step.action
    return {"args": dict(a.args), "message": a.message.render(ctx) if a.message else None}


def _context(parts: Parts, item: Item) -> dict[str, Any]:
    now = parts.clock.now()
    return {"item": item.fields(now), "account": item.account, "now": now}


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
