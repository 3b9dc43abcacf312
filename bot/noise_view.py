"""Noise control in words, for ``explain`` and ``test-rules``: what applies to a rule's
notification to a sink, and what would happen to it at a given moment.

The verdict follows the hold stage's order (``bot.noise``): a mute, then the group, then
the sink's quiet hours (unless the priority breaks through). A limit depends on what was
sent before, so it is named, not judged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from bot.config import SinkConfig, show_rate
from bot.held import Mute, matches
from bot.rules import Notify, Rule
from bot.windows import clock_label


def applies(
    rule: Rule, notify: Notify, sink: SinkConfig, payload: Mapping[str, Any],
    mutes: Sequence[Mute],
) -> list[str]:  # fmt: skip
    """Each piece of noise control that applies, one line each (none: nothing)."""
    lines = []
    if notify.group:
        lines.append(notify.group.describe())
    if sink.quiet:
        lines.append(sink.quiet.describe())
    if sink.limit:
        lines.append(f"sink limit {show_rate(sink.limit)}: the rest of a window in one digest")
    if rule.limit:
        lines.append(f"rule limit {show_rate(rule.limit)} per sink")
    lines += [f"mute {m.id} ({m.scope()})" for m in mutes if _silences(m, rule, notify, payload)]
    return lines


def outcome(
    rule: Rule, notify: Notify, sink: SinkConfig, payload: Mapping[str, Any],
    mutes: Sequence[Mute], now: datetime,
) -> str:  # fmt: skip
    """``sent``, ``grouped``, ``muted`` or ``held until 07:00 Europe/Berlin`` at ``now``."""
    mute = next((m for m in mutes if _silences(m, rule, notify, payload)), None)
    if mute is not None and mute.defer and mute.until is not None:
        return f"held until {datetime.fromtimestamp(mute.until).astimezone():%Y-%m-%d %H:%M}"
    if mute is not None:
        return "muted"
    if notify.group:
        return "grouped"
    end = sink.quiet.until(now) if sink.quiet else None
    if sink.quiet and end and not sink.quiet.breaks_through(notify.priority):
        return f"held until {clock_label(end, sink.quiet.tz)}"
    return "sent"


def _silences(mute: Mute, rule: Rule, notify: Notify, payload: Mapping[str, Any]) -> bool:
    step = SimpleNamespace(rule=rule.name, target=notify.sink, payload=payload)
    return matches(mute, step, str(payload.get("account", "")))
