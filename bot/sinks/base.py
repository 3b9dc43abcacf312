"""The contract of a notification target: send one rendered notification, or say why not.

``send`` returns when the target accepted the notification and raises from the
``bot.errors`` tree otherwise: TransientError (retry, with the target's hint),
AuthError (the user must fix credentials), PermanentError (never retry).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import aiohttp

from bot.config import SinkConfig


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

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("item", "extract", "options"):
            data[key] = dict(data[key])
        return data


class Sink(ABC):
    type_name: ClassVar[str]
    config_model: ClassVar[type[SinkConfig]]
    sends_item: ClassVar[bool] = False  # whether it sends the whole item (needs its detail)

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.config = config
        self.session = session

    @abstractmethod
    async def send(self, notification: Notification) -> None: ...

    async def close(self) -> None:  # noqa: B027 - most sinks hold nothing of their own
        """Release connections the sink holds beyond the shared HTTP session."""
