"""The commands that help write rules, templates and sinks: ``explain``, ``render``,
``test-rules``, ``send-test``.

None of them changes anything upstream: ``explain`` polls with an in-memory store and acts
on nothing; ``render`` and ``test-rules`` only read files; ``send-test`` sends one
notification to one sink and records nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from bot.app import Loaded, build, resources
from bot.config import SinkConfig
from bot.detail import verdict
from bot.errors import AuthError, ConfigError, PermanentError, RemoteError
from bot.held import Held, Mute
from bot.item import Attachment, Item, Kind
from bot.noise_view import applies, outcome
from bot.pipeline import Pipeline
from bot.push import SAFETY_NET
from bot.render import Renderer
from bot.rules import Notify, Rule, plan
from bot.sinks import SINKS, Notification, Sink
from bot.sources import Feed, Source
from bot.store import Store


async def explain(loaded: Loaded, only: str | None, mutes: Sequence[Mute] = ()) -> int:
    """Poll each feed (or ``only``), show for every listed item which rules fire and why,
    and what noise control (groups, quiet hours, limits, ``mutes``) does to each
    notification now."""
    feeds = [f for f in loaded.feeds() if only in (None, f.key, f.account)]
    if not feeds:
        raise ConfigError(f"no feed {only!r}; feeds: {', '.join(f.key for f in loaded.feeds())}")
    failed = 0
    async with resources(Path(":memory:")) as res:
        pipeline = build(loaded, res)
        for feed in feeds:
            failed += not await _explain_feed(pipeline, feed, mutes)
    return 1 if failed else 0


def mutes_in(state: Path) -> list[Mute]:
    """The mutes in force in the daemon's state (none when it has not run)."""
    if not state.exists():
        return []
    store = Store(state)
    try:
        return Held(store).active_mutes(time.time())
    finally:
        store.close()


async def _explain_feed(pipeline: Pipeline, feed: Feed, mutes: Sequence[Mute]) -> bool:
    source = pipeline.sources[feed.account]
    try:
        result = await source.poll(feed.name, None)
    except RemoteError as err:
        print(f"{feed.key}: poll failed: {err}")
        return False
    print(f"{feed.key}: {len(result.items)} items listed (each explained as if new)")
    print(f"  {_cadence(source, feed)}")
    for item in result.items:
        await _explain_item(pipeline, item, mutes)
    return True


def _cadence(source: Source, feed: Feed) -> str:
    """Whether the feed is pushed or polled, and the requests an hour when nothing is new
    (one a poll: README's table)."""
    every = feed.every.total_seconds()
    if source.pushes(feed.name):
        net = max(every, SAFETY_NET.total_seconds())
        return (f"pushed (the upstream tells when something is new; polled at every {every:g}s "
                f"while not connected); while connected polled every {net:g}s as a safety net: "
                f"{3600 / net:g} requests an hour when nothing is new")  # fmt: skip
    return f"polled every {every:g}s: {3600 / every:g} requests an hour when nothing is new"


async def _explain_item(pipeline: Pipeline, item: Item, mutes: Sequence[Mute]) -> None:
    listed = pipeline.clock.now()
    summary = {"item": item.fields(listed), "account": item.account, "now": listed}
    try:
        planned = await pipeline.plan_item(item)
    except RemoteError as err:
        print(f"  {item.id}: detail failed: {err}")
        return
    if planned is None:
        print(f"  {item.id}: gone upstream")
        return
    full, steps = planned
    print(f"  {full.id} {full.subject or full.text[:60]!r} from {full.sender or '?'}")
    now = pipeline.clock.now()
    context = {"item": full.fields(now), "account": full.account, "now": now}
    matched = {m.rule.name: m for m in plan(pipeline.rules, full, context)}
    for rule in pipeline.rules:
        if full.account not in rule.accounts:
            continue
        detail = (
            verdict(rule.detail, rule.when, item.raw, summary)
            if not item.complete
            else "detail: no (the list gives the whole item)"
        )
        if rule.name not in matched:
            why = ", ".join(rule.when.failing(context)) or "an earlier rule stopped"
            print(f"    - {rule.name}: no ({why})\n        {detail}")
            continue
        extract = " ".join(f"{k}={v!r}" for k, v in matched[rule.name].extract.items())
        print(f"    + {rule.name}: yes{f' ({extract})' if extract else ''}\n        {detail}")
        delivers = iter(rule.notify)
        for step in (s for s in steps if s.rule == rule.name):
            what = step.payload.get("title") if step.kind == "deliver" else step.payload["args"]
            print(f"        {step.kind} {step.target}: {what!r}")
            if step.kind == "deliver":
                _explain_noise(pipeline, rule, next(delivers), step.payload, mutes, now)


def _explain_noise(
    pipeline: Pipeline, rule: Rule, notify: Notify, payload: dict[str, Any],
    mutes: Sequence[Mute], now: datetime,
) -> None:  # fmt: skip
    sink = pipeline.config.sinks[notify.sink]
    for line in applies(rule, notify, sink, payload, mutes):
        print(f"          {line}")
    print(f"          now: {outcome(rule, notify, sink, payload, mutes, now)}")


BUSY = "the target is down or busy; try again later"
WHAT_TO_DO = {
    AuthError: "credentials refused: fix the sink's configuration",
    PermanentError: "refused for good: check the sink's settings (room, chat, channel, address)",
}


def sink_config(loaded: Loaded, name: str) -> SinkConfig:
    config = loaded.config.sinks.get(name)
    if config is None:
        raise ConfigError(f"no sink {name!r}; sinks: {', '.join(loaded.config.sinks) or 'none'}")
    return config


async def send_test(loaded: Loaded, name: str) -> int:
    """Send one test notification to sink ``name``; print the outcome, exit 0 when sent."""
    config = sink_config(loaded, name)
    label = f"sink {name} ({config.type})"
    async with aiohttp.ClientSession() as session:
        sink = SINKS[config.type](name, config, session)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        test = Notification(
            id=f"send-test-{name}-{now}", rule="send-test", account="inboxbot", feed="test",
            kind="test", item_id="", title="inboxbot test notification",
            message=sink.escape(f"If you read this, {label} works. Sent at {now}."),
            url=None, priority="default",
        )  # fmt: skip
        try:
            await sink.start()
            await sink.send(test)
        except RemoteError as err:
            hint = next((v for k, v in WHAT_TO_DO.items() if isinstance(err, k)), BUSY)
            print(f"{label}: not sent: {err} ({hint})")
            return 1
        finally:
            await sink.close()
    print(f"{label}: sent")
    return 0


async def render_for(loaded: Loaded, template: str, item_file: Path, name: str) -> str:
    """``render`` as sink ``name`` gets it: in its format, item values escaped for it."""
    config = sink_config(loaded, name)
    async with aiohttp.ClientSession() as session:  # unused: the sink only escapes here
        sink = SINKS[config.type](name, config, session)
        return render(loaded.renderer, template, item_file, sink)


def render(renderer: Renderer, template: str, item_file: Path, sink: Sink | None = None) -> str:
    """``template`` (a name in the template folders, or a .j2 file) applied to an item."""
    try:
        data = json.loads(item_file.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{item_file}: not JSON: {err}") from None
    try:
        item = item_from(data)
    except BadItem as err:
        raise BadItem(f"{item_file}: {err}", err.loc) from None
    if template.endswith(".j2"):
        path = Path(template)
        renderer, template = Renderer([path.parent]), path.stem
    named = renderer.load(template)
    context = renderer.context(item, now=datetime.now(UTC), rule="render", extract={})
    context["format"] = sink.format if sink else "text"
    title, message = named.render(context, sink.escape if sink else None)
    return f"{title}\n\n{message}"


class BadItem(ValueError):
    """An item file that is not an item; ``loc`` is the path of the first problem in it."""

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


class _Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    name: str
    content_type: str
    size: int | None = None


class _Item(BaseModel):
    """An item as a user writes one for ``render`` and ``test-rules``: any of its fields."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    account: str = "example"
    feed: str = "example"
    kind: Kind = "email"
    id: str = "1"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    sender: str = ""
    recipient: str = ""
    subject: str = ""
    text: str = ""
    html: str | None = None
    unread: bool | None = None
    url: str | None = None
    attachments: list[_Attachment] = []
    links: list[str] = []
    raw: dict[str, Any] = {}
    upstream: str = ""

    @field_validator("created_at")
    @classmethod
    def _aware(cls, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


ITEM_FIELDS = frozenset(_Item.model_fields)


def item_from(data: Any) -> Item:
    """An item from JSON or YAML: a webhook payload, its ``item``, or just some fields.
    Raises BadItem naming each problem: ``attachments[0]: content_type missing``."""
    if not isinstance(data, Mapping):
        raise BadItem("an item is a mapping of its fields (subject, text, …)")
    fields = dict(data["item"]) if isinstance(data.get("item"), Mapping) else dict(data)
    fields.pop("age", None)
    fields.pop("complete", None)  # a webhook payload's: rendering takes the item as given
    unknown = sorted(set(fields) - ITEM_FIELDS)
    if unknown:
        known = ", ".join(sorted(ITEM_FIELDS))
        raise BadItem(f"unknown item fields {unknown}; known: {known}", (unknown[0],))
    try:
        typed = _Item.model_validate(fields)
    except ValidationError as err:
        problems = err.errors(include_url=False)
        raise BadItem("; ".join(map(_problem, problems)), problems[0]["loc"]) from None
    values = typed.model_dump()
    values["attachments"] = tuple(Attachment(**a) for a in values["attachments"])
    values["links"] = tuple(values["links"])
    return Item(**values)


def _problem(error: ErrorDetails) -> str:
    *parent, last = error["loc"]
    if error["type"] == "missing":
        return f"{_path(parent)}: {last} missing" if parent else f"{last} missing"
    value = error["input"]
    shown = f" (got {value!r})" if isinstance(value, str | int | float | None) else ""
    return f"{_path(error['loc'])}: {error['msg']}{shown}"


def _path(loc: Sequence[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
