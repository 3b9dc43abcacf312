"""The contract of an upstream: poll a feed, complete an item's detail, act on items."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, cast

import aiohttp

from bot.config import AccountConfig
from bot.http import Limiters
from bot.item import Attachment, File, Item, Kind

Known = Callable[[Sequence[str]], set[str]]  # which of these item ids the feed has seen
Wake = Callable[[], None]  # a push channel says something may be new: poll the feed now
Report = Callable[[bool, str], None]  # (connected, what: "IDLE on INBOX" | why not) for status


def nothing_known(ids: Sequence[str]) -> set[str]:
    """The seen ledger of a feed polled for the first time, or of ``explain``."""
    return set()


@dataclass(frozen=True)
class PollResult:
    """A complete poll: every item listed, and the cursor to store with them."""

    items: list[Item]
    cursor: str | None


@dataclass(frozen=True)
class Feed:
    account: str
    name: str
    every: timedelta
    backlog: str | None

    @property
    def key(self) -> str:
        return f"{self.account}/{self.name}"


class Source(ABC):
    """One account at one upstream. Subclasses set the class-level description below.

    ``poll`` must raise (never return a partial list) when any request failed, so that
    a failed poll changes no state.
    """

    type_name: ClassVar[str]
    config_model: ClassVar[type[AccountConfig]]
    feed_kinds: ClassVar[Mapping[str, str]]  # feed name → item kind
    actions: ClassVar[Mapping[str, frozenset[str]]]  # item kind → actions
    batch_actions: ClassVar[frozenset[str]] = frozenset()  # actions taking many items per call
    default_feeds: ClassVar[tuple[str, ...]]

    def __init__(
        self, name: str, config: AccountConfig, session: aiohttp.ClientSession, limiters: Limiters
    ) -> None:
        self.name = name
        self.config = config
        self.session = session
        self.limiters = limiters

    @classmethod
    def feeds(cls, account: str, config: AccountConfig) -> list[Feed]:
        """The account's enabled feeds, with their intervals."""
        wanted = config.feeds or dict.fromkeys(cls.default_feeds, None)
        feeds = []
        for name, feed in wanted.items():
            if feed is None or feed.enabled:
                every = (feed.every if feed else None) or config.every
                feeds.append(Feed(account, name, every, feed.backlog if feed else None))
        return feeds

    @abstractmethod
    async def poll(self, feed: str, cursor: str | None, known: Known = nothing_known) -> PollResult:
        """Everything new since ``cursor``; paging stops at the first page holding an id
        ``known`` (the store's seen ledger) says the feed has seen."""

    async def files(self, item: Item, max_size: int) -> list[File]:
        """The complete item's attachments of at most ``max_size`` bytes, downloaded now
        (larger ones are left out); upstreams without attachments have none."""
        return []

    async def complete(self, item: Item) -> Item:
        """The item with its detail fields fetched; sources whose list is complete keep this."""
        return item

    async def close(self) -> None:  # noqa: B027 (most sources keep nothing open)
        """Let go of what the source keeps open (an IMAP connection)."""

    def pushes(self, feed: str) -> bool:
        """Whether the upstream can tell when ``feed`` has something new (IMAP IDLE, a
        WebSocket stream): then the daemon runs ``watch`` beside the polls."""
        return False

    async def watch(self, feed: str, wake: Wake, report: Report) -> None:
        """Hold the push channel of ``feed`` open until cancelled: call ``wake()`` when it
        signals something new and after every (re)connect (the poll it starts catches up
        on what came meanwhile; the seen ledger makes a pushed item and a polled one the
        same); ``report(True, "…")`` when connected, ``report(False, why)`` when not (then
        the feed is polled at its ``every`` until it is again). Reconnects with backoff on
        its own; never raises but CancelledError. Only called when ``pushes(feed)``; an
        upstream without a push channel says so and leaves the feed to its polls."""
        report(False, f"{self.type_name} has no push channel: polling")

    @abstractmethod
    async def act(self, action: str, args: Mapping[str, Any], items: Sequence[Item]) -> None:
        """Apply ``action`` to ``items`` (several only for ``batch_actions``).

        A GoneError means the item is not there any more: the action is moot."""

    # --- samples, that `check` renders every template on -----------------------------

    sample_raw: ClassVar[Mapping[str, Mapping[str, Any]]] = {}  # kind → a record as listed
    # kind → the fields this upstream never fills for it, with the value a real item has
    # (``html: None`` for a chat message): a template reading them unguarded fails at check
    sample_blank: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def samples(cls, account: str) -> dict[str, Item]:
        """An item of each kind this upstream gives, every field filled and typed as on a
        real one, ``raw`` as the upstream's own record."""
        created = datetime.now(UTC) - timedelta(minutes=5)
        upstream, raws = cls.type_name, cls.sample_raw
        return {
            kind: replace(SAMPLE, account=account, feed=feed, kind=cast(Kind, kind),
                          created_at=created, raw=raws.get(kind, {}), upstream=upstream,
                          sender="alice@example.org" if kind == "email" else "alice",
                          **cls.sample_blank.get(kind, {}))
            for feed, kind in cls.feed_kinds.items()
        }  # fmt: skip


_LINK = "https://example.org/verify?code=123456"
SAMPLE = Item(
    account="", feed="", kind="email", id="1", created_at=datetime.now(UTC),
    sender="alice", recipient="bob@example.org", subject="Your code 123456",
    text=f"Use 123456, or confirm at {_LINK}", html=f'<p>Use <a href="{_LINK}">123456</a></p>',
    unread=True, url="https://example.org/item/1",
    attachments=(Attachment("invoice.pdf", "application/pdf", 2048),), links=(_LINK,),
)  # fmt: skip
