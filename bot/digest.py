"""Digests: several held notifications for one sink sent as one.

A digest template is a template file like any other (blocks ``title`` and ``message``)
that sees ``items`` (each item's fields, its extractions by name, and the notification's
``title`` and ``message``), ``count``, ``more`` (how many are counted but not listed),
``group`` (the ``by`` values), ``rule``, ``now`` and ``format``. Without one, the
default layout lists each notification's title, one a line, in the sink's format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from markupsafe import Markup

from bot.item import Item
from bot.render import Fields, NamedTemplate
from bot.sinks import Notification, Sink

PRIORITIES = ("min", "low", "default", "high", "urgent")
BULLETS = {"text": "• ", "markdown": "- ", "html": "• "}


def digest_id(batch: str, batch_at: float) -> str:
    """Stable across retries and restarts, different for each send of a group."""
    return hashlib.sha256(f"digest\x1f{batch}\x1f{batch_at!r}".encode()).hexdigest()[:32]


def entries(payloads: Sequence[Mapping[str, Any]]) -> list[Fields]:
    """What a digest template sees of each notification."""
    listed = []
    for p in payloads:
        values = {**p.get("extract", {}), **p.get("item", {})}  # a field wins over a name
        values.update(title=p["title"], message=Markup(p["message"]), rule=p["rule"])
        listed.append(Fields("items[]", values))
    return listed


def context(
    payloads: Sequence[Mapping[str, Any]], *, listed: int, group: Mapping[str, str],
    now: datetime, fmt: str,
) -> dict[str, Any]:  # fmt: skip
    rules = {p["rule"] for p in payloads}
    return {
        "items": entries(payloads[:listed]), "count": len(payloads),
        "more": max(0, len(payloads) - listed), "group": dict(group),
        "rule": rules.pop() if len(rules) == 1 else "", "now": now, "format": fmt,
    }  # fmt: skip


def default_layout(sink: Sink, ctx: Mapping[str, Any]) -> tuple[str, str]:
    """(title, message) without a digest template: the titles, one a line."""
    scope = ", ".join(f"{k} {v}" for k, v in ctx["group"].items() if v)
    title = f"{ctx['rule'] or 'inboxbot'}: {ctx['count']} notifications"
    title += f" ({scope})" if scope else ""
    bullet = BULLETS.get(sink.format, "• ")
    lines = [bullet + (sink.escape(i["title"]) if i["title"] else _first_line(i["message"]))
             for i in ctx["items"]]  # fmt: skip
    if ctx["more"]:
        lines.append(f"and {ctx['more']} more")
    return title, "\n".join(lines)


def _first_line(message: str) -> str:
    return next((line for line in message.splitlines() if line.strip()), "")


def build(
    sink: Sink, payloads: Sequence[Mapping[str, Any]], *, batch: str, batch_at: float,
    listed: int, group: Mapping[str, str], template: NamedTemplate | None, now: datetime,
) -> Notification:  # fmt: skip
    """One notification for all of ``payloads`` (already rendered for ``sink``)."""
    ctx = context(payloads, listed=listed, group=group, now=now, fmt=sink.format)
    title, message = template.render(ctx, sink.escape) if template else default_layout(sink, ctx)
    first = payloads[0]
    same = {k: first[k] if all(p[k] == first[k] for p in payloads) else ""
            for k in ("account", "feed")}  # fmt: skip
    options = {k: v for k, v in first.get("options", {}).items() if k != "attach"}
    return Notification(
        digest_id(batch, batch_at), ctx["rule"] or "digest", same["account"], same["feed"],
        "digest", "", title, message, None, top_priority(payloads), {}, {}, options,
        items=tuple(_summary(p) for p in payloads),
    )  # fmt: skip


def samples(items: Sequence[Item], extract: Sequence[str], rule: str, now: datetime) -> list[Any]:
    """Three notifications as a digest of ``items`` (check's samples) would hold them."""
    found = []
    for n in range(3):
        item = items[n % len(items)]
        values = {k: v for k, v in item.fields(now).items() if k != "raw"}
        found.append({
            "id": f"sample{n}", "rule": rule, "account": item.account, "feed": item.feed,
            "kind": item.kind, "item_id": item.id, "title": f"Sample {n + 1}",
            "message": "A sample notification", "url": item.url, "priority": "default",
            "item": values, "extract": dict.fromkeys(extract, "123456"),
        })  # fmt: skip
    return found


def top_priority(payloads: Sequence[Mapping[str, Any]]) -> str:
    return str(max((p["priority"] for p in payloads), key=PRIORITIES.index))


def _summary(p: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("id", "rule", "account", "feed", "kind", "item_id", "title", "message", "url",
            "priority", "item", "extract")  # fmt: skip
    return {k: p[k] for k in keys if k in p}
