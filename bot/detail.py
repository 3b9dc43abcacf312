"""Which rules need an item's detail (a mail's body), and why, read off the compiled rules.

Some upstreams list summaries (Mail.td: sender, subject, a preview of the text, `is_read`,
`size`) and give the rest in a second request per item: the body `text`, `html`,
`attachments`, `links`, and more `raw` keys. A rule needs that request only when something
it runs reads one of them: a condition, an extraction, a template (Jinja's AST tells which
`item.*` names it reads), an action's message, or a sink set to send whole items
(`detail: true`) or the item's files (`attach: true`). A template that uses `item` whole
needs everything.

`raw.<key>` reads are judged on the item as listed: a key its summary holds is read from
the summary; a key the summary lacks, or `raw` used whole, needs the detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.conditions import Compiled, Context
from bot.item import DETAIL_FIELDS
from bot.render import Renderer

_WITH_RAW = DETAIL_FIELDS | {"raw"}


@dataclass(frozen=True)
class Detail:
    """What of an item's detail one rule reads, each with who reads it."""

    reads: tuple[str, ...] = ()  # e.g. "template 'email' reads item.text"
    raw: tuple[tuple[str, str | None], ...] = ()  # (who, raw key read; None: raw whole)

    @property
    def possible(self) -> bool:
        """Whether some item's detail may be needed (raw keys depend on the summary)."""
        return bool(self.reads or self.raw)

    def needed(self, summary: Mapping[str, Any]) -> bool:
        """Whether an item listed with ``summary`` (its raw) needs the detail for this rule."""
        return bool(self.reads) or self._raw_missing(summary)

    def reasons(self, summary: Mapping[str, Any]) -> list[str]:
        """Why an item listed with ``summary`` (its raw) needs its detail; empty: it does not."""
        missing = [
            f"{who} reads item.raw" if key is None else f"{who} reads raw.{key}"
            for who, key in self.raw
            if key is None or key not in summary
        ]
        return [*self.reads, *missing]

    def unknown(self, summary: Mapping[str, Any]) -> frozenset[str]:
        """The fields a summary does not settle, for ``Compiled.ruled_out``."""
        return _WITH_RAW if self._raw_missing(summary) else DETAIL_FIELDS

    def _raw_missing(self, summary: Mapping[str, Any]) -> bool:
        return bool(self.raw) and any(key is None or key not in summary for _, key in self.raw)


@dataclass
class DetailReads:
    """Collects one rule's reads while it is compiled."""

    reads: list[str] = field(default_factory=list)
    raw: list[tuple[str, str | None]] = field(default_factory=list)

    def add(
        self, who: str, fields: frozenset[str] | None, raw: frozenset[str] | None = None
    ) -> None:
        """``who`` reads ``fields`` (None: the whole item) and, of ``raw``, these keys
        (None: raw whole)."""
        if fields is None:
            self.reads.append(f"{who} reads the whole item")
            return
        self.reads += [f"{who} reads item.{name}" for name in sorted(fields & DETAIL_FIELDS)]
        if "raw" in fields:
            self.raw += [(who, None)] if raw is None else [(who, key) for key in sorted(raw)]

    def need(self, why: str) -> None:
        self.reads.append(why)

    def build(self) -> Detail:
        return Detail(tuple(self.reads), tuple(self.raw))


def when_raw_keys(spec: Any, renderer: Renderer) -> frozenset[str] | None:
    """The `raw` keys a (checked) ``when:`` reads; None when it reads `raw` whole."""
    found: set[str] = set()
    for key, value in spec.items() if isinstance(spec, dict) else ():
        if key in ("any", "all", "not"):
            parts = value if isinstance(value, list) else [value]
            keys = [when_raw_keys(part, renderer) for part in parts]
        elif key == "if":
            keys = [renderer.condition(str(value)).raw_used]
        elif key == "raw" or key.startswith("raw."):
            keys = [frozenset(key.split(".")[1:2]) or None]
        else:
            continue
        for part in keys:
            if part is None:
                return None
            found |= part
    return frozenset(found)


def verdict(detail: Detail, when: Compiled, listed: Mapping[str, Any], context: Context) -> str:
    """``explain``'s line for one rule and an item as listed (its raw, its summary context)."""
    reasons = detail.reasons(listed)
    if not reasons:
        return "detail: no (summary is enough)"
    why, unknown = "; ".join(reasons), detail.unknown(listed)
    settled = [
        repr(key)
        for key, holds, fields in when.parts
        if fields is not None and not fields & unknown and not holds(context)
    ]  # as Compiled.ruled_out judges
    if settled:
        return f"detail: no ({why}, but {', '.join(settled)} rules it out on the summary)"
    return f"detail: yes ({why})"
