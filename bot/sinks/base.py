"""The contract of a notification target: send one rendered notification, or say why not.

``send`` returns when the target accepted the notification and raises from the
``bot.errors`` tree otherwise: TransientError (retry, with the target's hint),
AuthError (the user must fix credentials), PermanentError (never retry).

A sink's message arrives already in its ``format`` (the config's ``format:``, else the
target's natural one): template text as written, item content escaped with ``escape``.
The title is plain text; a sink that puts it into markup escapes it itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

import aiohttp
from pydantic import ValidationError

from bot.config import Model, SinkConfig
from bot.errors import PermanentError, TransientError
from bot.http import Response
from bot.item import File
from bot.markup import ESCAPERS

__all__ = ["FeedState", "File", "Notification", "Sink", "answered", "read_options"]

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class Notification:
    id: str  # stable across retries and restarts: the idempotency key
    rule: str
    account: str
    feed: str
    kind: str
    item_id: str
    title: str
    message: str
    url: str | None
    priority: str  # min | low | default | high | urgent
    item: Mapping[str, Any] = field(default_factory=dict)  # normalized fields, without raw
    extract: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    items: Sequence[Mapping[str, Any]] = ()  # a digest's notifications (kind "digest")

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("item", "extract", "options"):
            data[key] = dict(data[key])
        if self.items:
            data["items"] = [dict(i) for i in self.items]
        else:
            del data["items"]
        return data


@dataclass(frozen=True)
class FeedState:
    """What a feed holds now, for sinks that show it (Home Assistant sensors)."""

    account: str
    feed: str
    unread: int  # items seen unread and not since marked read or deleted by inboxbot
    last: Mapping[str, Any] | None  # the newest item's id, subject, sender, created_at, url


def read_options(model: type[M], notification: Notification, service: str) -> M:
    """A notification's ``options:`` as the sink's model. ``check`` validated them; a
    notification queued before the model changed is refused for good."""
    try:
        return model.model_validate(dict(notification.options))
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(part) for part in ("options", *first["loc"]))
        raise PermanentError(f"{where}: {first['msg']}", service=service) from None


def answered(resp: Response, service: str, key: str) -> None:
    """A 2xx from a service that answers a send with a JSON object holding ``key``: any
    other body (a proxy's or captive portal's page, an empty or cut one) is not the
    service's answer, so the notification may not have reached it: a TransientError."""
    body = resp.json(service)  # an HTML page or invalid JSON raises TransientError
    if not isinstance(body, dict) or key not in body:
        raise TransientError(f"{resp.what} → HTTP {resp.status} without the service's answer "
                             f"(no {key!r})", service=service, status=resp.status)  # fmt: skip


class Sink(ABC):
    type_name: ClassVar[str]
    config_model: ClassVar[type[SinkConfig]]
    wants_feed_state: ClassVar[bool] = False  # whether it is given FeedState after polls
    options_model: ClassVar[type[Model]] = Model  # what a rule's `options:` may hold
    default_rate: ClassVar[str | None] = None  # the service's documented limit, e.g. "20/min"

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.config = config
        self.session = session

    @classmethod
    def fetches_detail(cls, config: SinkConfig) -> bool:
        """Whether every item this sink gets is fetched whole (its detail) first. A sink that
        sends the whole item sends what it holds (``complete: false`` when only its summary
        was listed) unless its configuration says ``detail: true``."""
        return False

    @property
    def max_file_size(self) -> int:
        """Bytes of attached files a notification may carry; 0: the sink sends no files."""
        return 0

    @property
    def format(self) -> str:
        return self.config.format or "text"

    def escape(self, text: str) -> str:
        """``text`` (item content) made inert in this sink's format."""
        return ESCAPERS[self.format](text)

    async def start(self) -> None:  # noqa: B027 - most sinks hold no connection
        """Connect where the target keeps a connection (MQTT); called once before sends."""

    @abstractmethod
    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None: ...

    async def feed_state(self, states: Sequence[FeedState]) -> None:  # noqa: B027
        """Show the feeds' state; only called when ``wants_feed_state``."""

    async def close(self) -> None:  # noqa: B027 - most sinks hold nothing of their own
        """Release connections the sink holds beyond the shared HTTP session."""
