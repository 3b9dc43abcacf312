"""The normalized item: one message from any upstream, as rules and templates see it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Literal

Kind = Literal["dmail", "comment", "email", "chat"]
KINDS: tuple[str, ...] = ("dmail", "comment", "email", "chat")

# Fields whose values some upstreams only give in a second request (a mail's body).
DETAIL_FIELDS = frozenset({"text", "html", "attachments", "links"})


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    size: int | None = None


@dataclass(frozen=True)
class File:
    """An attachment's content, downloaded when a sink is to send it (``attach: true``)."""

    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Item:
    account: str
    feed: str
    kind: Kind
    id: str
    created_at: datetime
    sender: str = ""
    recipient: str = ""
    subject: str = ""
    text: str = ""
    html: str | None = None
    unread: bool | None = None
    url: str | None = None
    attachments: tuple[Attachment, ...] = ()
    links: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)
    upstream: str = ""  # the account's type (mailtd, e621, …), set by its source
    # False while the detail fields above are not fetched yet (see Source.complete).
    complete: bool = True

    def age(self, now: datetime) -> timedelta:
        return now - self.created_at

    def fields(self, now: datetime, *, with_raw: bool = True) -> dict[str, Any]:
        """The item as rules and templates see it: plain values, plus ``age``. A new dict
        each call (built once per item, copied shallowly)."""
        data = dict(self._plain)
        if not with_raw:
            del data["raw"]
        data["age"] = self.age(now)
        return data

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe form, for the store and the webhook payload (shallow: no deep copy)."""
        return dict(self._json)

    # An item is immutable, so its two forms are built at most once (instances keep them in
    # their ``__dict__``; they are not dataclass fields, so equality and repr ignore them).

    @cached_property
    def _plain(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _NAMES if name != "complete"}
        data["attachments"] = [dataclasses.asdict(a) for a in self.attachments]
        data["links"] = list(self.links)
        return data

    @cached_property
    def _json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _NAMES}
        data["created_at"] = self.created_at.isoformat()
        data["attachments"] = self._plain["attachments"]
        data["links"] = self._plain["links"]
        data["raw"] = dict(self.raw)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Item:
        values = dict(data)
        values["created_at"] = datetime.fromisoformat(values["created_at"])
        values["attachments"] = tuple(Attachment(**a) for a in values.get("attachments", ()))
        values["links"] = tuple(values.get("links", ()))
        return cls(**values)


_NAMES = tuple(f.name for f in dataclasses.fields(Item))
