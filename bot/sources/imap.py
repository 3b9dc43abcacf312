"""IMAP mailboxes (Dovecot, Fastmail, Gmail, Posteo with an app password): one feed per folder.

    home:
      type: imap
      host: mail.example.org          # 993 with TLS; `tls: starttls` on 143; `tls: none`: 127.0.0.1
      username: me@example.org
      password: ${file:/run/secrets/imap-password}
      folders: [INBOX, Lists/alerts]  # default [INBOX]; each folder is a feed of that name
      idle: true                      # default: when the server announces IDLE
      delete: {expunge: false}        # delete moves to the \\Trash folder; true: expunge

The cursor of a folder is ``UIDVALIDITY:highest UID``; a poll SELECTs the folder and, only
when UIDNEXT says something is new, fetches flags, size, date and headers of the new UIDs
(the body, ``BODY.PEEK[]``, only when a rule needs it: reading marks nothing seen). A
changed UIDVALIDITY re-baselines the folder without notifying what it holds. One connection
is kept for polls, details and actions; ``watch`` keeps its own in IDLE (``imapwatch``).
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar

import aiohttp
from pydantic import Field, SecretStr, field_validator, model_validator

from bot.config import AccountConfig, FeedConfig, Interval, Section
from bot.errors import GoneError, PermanentError
from bot.http import Limiters
from bot.item import File, Item
from bot.logs import fields
from bot.sources import imapmail
from bot.sources.base import Known, PollResult, Report, Source, Wake, nothing_known
from bot.sources.imapconn import ImapConnection, KeptConnection, Mailbox
from bot.sources.imapwatch import RENEW, Watching, watch_folder
from bot.yamlfile import Path_

log = logging.getLogger("inboxbot.sources.imap")
T = TypeVar("T")
FIRST_POLL = 100  # a first poll lists the folder's last 100 UIDs (backlog: decides on them)
MAX_PER_POLL = 500  # UIDs a poll lists at most; more new mail is listed by the next polls
SUMMARY = "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER])"
LOCAL = ("127.0.0.1", "::1", "localhost")


class DeleteConfig(Section):
    expunge: bool = False  # remove at once (\Deleted + UID EXPUNGE) instead of moving to Trash


class ImapAccount(AccountConfig):
    type: Literal["imap"]
    base_url: str = ""
    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    tls: Literal["tls", "starttls", "none"] = "tls"
    tls_verify: bool = True
    username: str = Field(min_length=1)
    password: SecretStr
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    idle: bool | None = None
    delete: DeleteConfig = DeleteConfig()
    every: Interval = timedelta(minutes=1)

    @property
    def imap_port(self) -> int:
        return self.port or (993 if self.tls == "tls" else 143)

    @model_validator(mode="before")
    @classmethod
    def _folders_are_feeds(cls, data: Any) -> Any:
        """Every folder is a feed; ``feeds:`` may set a folder's ``every`` or ``backlog``."""
        if isinstance(data, dict) and isinstance(data.get("feeds", {}) or {}, dict):
            folders = data.get("folders", ["INBOX"])
            names = folders if isinstance(folders, list) else []
            named: dict[str, Any] = {f: {} for f in names if isinstance(f, str)}
            data = {**data, "feeds": {**named, **(data.get("feeds") or {})}}
        return data

    @field_validator("feeds")
    @classmethod
    def _known_feeds(cls, feeds: dict[str, FeedConfig]) -> dict[str, FeedConfig]:
        return feeds  # checked against folders below, once both are read

    @field_validator("base_url")
    @classmethod
    def _no_url(cls, value: str) -> str:
        raise ValueError("an imap account takes host: (and port:, tls:), not base_url")

    @model_validator(mode="after")
    def _consistent(self) -> ImapAccount:
        extra = sorted(set(self.feeds) - set(self.folders))
        if extra:
            raise ValueError(
                f"feeds: {extra[0]!r} is not one of folders: {', '.join(self.folders)}"
            )
        if len(set(self.folders)) != len(self.folders):
            raise ValueError("folders: a folder is named twice")
        if self.tls == "none" and self.host not in LOCAL:
            raise ValueError(
                "tls: none sends the password in clear, allowed only for 127.0.0.1; "
                "use tls (port 993) or starttls (port 143)"
            )
        return self

    def cautions(self) -> list[tuple[Path_, str]]:
        if self.tls_verify or self.tls == "none":
            return []
        return [(("tls_verify",), "false accepts any certificate, so anyone "
                 "between here and the server can read the password and the mail")]  # fmt: skip


class ImapSource(Source):
    type_name = "imap"
    config_model = ImapAccount
    feed_kinds: ClassVar[Mapping[str, str]] = {"INBOX": "email"}
    actions: ClassVar[Mapping[str, frozenset[str]]] = {
        "email": frozenset({"mark_read", "mark_unread", "flag", "delete", "move"})
    }
    batch_actions = frozenset({"mark_read", "mark_unread", "flag", "delete", "move"})
    default_feeds = ("INBOX",)

    def __init__(
        self, name: str, config: AccountConfig, session: aiohttp.ClientSession, limiters: Limiters
    ) -> None:
        super().__init__(name, config, session, limiters)
        assert isinstance(config, ImapAccount)
        self.account = config
        self._kept = KeptConnection(config, name)
        self.max_per_poll = MAX_PER_POLL
        self.idle_renew = RENEW  # seconds an IDLE lasts before it is renewed (RFC 2177: < 29 min)

    # --- polling ---------------------------------------------------------------------

    async def poll(self, feed: str, cursor: str | None, known: Known = nothing_known) -> PollResult:
        return await self._with(lambda conn: self._poll(conn, feed, cursor))

    async def _poll(self, conn: ImapConnection, feed: str, cursor: str | None) -> PollResult:
        box = await conn.select(feed)
        validity, highest = parse_cursor(cursor)
        if validity is not None and validity != box.uidvalidity:
            log.warning("UIDVALIDITY changed: folder re-baselined, its mail not notified",
                        extra=fields(feed=f"{self.name}/{feed}", was=validity,
                                     now=box.uidvalidity))  # fmt: skip
            return PollResult([], await self._baseline(conn, box))
        if validity is None:
            highest = max(0, (box.uidnext or 1) - 1 - FIRST_POLL)
        elif box.uidnext is not None and box.uidnext - 1 <= highest:
            return PollResult([], cursor)  # nothing new: the SELECT was the whole poll
        # UIDs only grow: a range below UIDNEXT holds all it ever will, so the rest of a big
        # delivery is listed by the next polls, the cursor at the range's end
        last = (box.uidnext or 0) - 1
        most = self.max_per_poll
        stop = highest + most if last > highest + most else None
        records = await conn.fetch(f"{highest + 1}:{stop or '*'}", SUMMARY)
        new = sorted((r for r in records if r.uid > highest), key=lambda r: r.uid)
        items = [self._summary(feed, box.uidvalidity, r) for r in new]
        top = stop or max([highest, last, *(r.uid for r in new)])
        return PollResult(items, f"{box.uidvalidity}:{top}")

    async def _baseline(self, conn: ImapConnection, box: Mailbox) -> str:
        if box.uidnext is not None:
            return f"{box.uidvalidity}:{box.uidnext - 1}"
        records = await conn.fetch("*", "(UID)")
        return f"{box.uidvalidity}:{max((r.uid for r in records), default=0)}"

    def _summary(self, folder: str, validity: int, r: imapmail.Fetched) -> Item:
        message = imapmail.parse(r.data)
        headers = imapmail.headers(message)
        raw = {"folder": folder, "uidvalidity": validity, "uid": r.uid, "flags": list(r.flags),
               "size": r.size, "headers": headers}  # fmt: skip
        return Item(
            account=self.name, feed=folder, kind="email", upstream="imap",
            id=f"{validity}:{r.uid}", created_at=r.received or datetime.now(UTC),
            sender=imapmail.addresses(message, "from"),
            recipient=imapmail.addresses(message, "to"),
            subject=headers.get("subject", ""), unread="\\Seen" not in r.flags,
            url=None, raw=raw, complete=False,
        )  # fmt: skip

    # --- detail ----------------------------------------------------------------------

    async def complete(self, item: Item) -> Item:
        if item.complete:
            return item
        message = imapmail.parse(await self._body(item))
        return replace(item, **imapmail.body(message), complete=True)

    async def files(self, item: Item, max_size: int) -> list[File]:
        return imapmail.files(imapmail.parse(await self._body(item)), max_size)

    async def _body(self, item: Item) -> bytes:
        async def fetch(conn: ImapConnection) -> bytes:
            uids = await self._uids(conn, item.feed, [item])
            records = await conn.fetch(str(uids[0]), "(UID BODY.PEEK[])") if uids else []
            if not records:
                raise GoneError(f"message {item.id} is not in {item.feed} any more",
                                service=self.name)  # fmt: skip
            return records[0].data

        return await self._with(fetch)

    # --- actions ---------------------------------------------------------------------

    async def act(self, action: str, args: Mapping[str, Any], items: Sequence[Item]) -> None:
        by_folder: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            by_folder[item.feed].append(item)
        for folder, batch in by_folder.items():
            await self._with(functools.partial(self._act, action=action, args=args,
                                               folder=folder, items=batch))  # fmt: skip

    async def _act(self, conn: ImapConnection, action: str, args: Mapping[str, Any],
                   folder: str, items: list[Item]) -> None:  # fmt: skip
        uids = await self._uids(conn, folder, items)
        if not uids:
            raise GoneError(f"the messages are not in {folder} any more", service=self.name)
        ids = imapmail.uid_set(uids)
        flags = {"mark_read": "+FLAGS.SILENT (\\Seen)", "mark_unread": "-FLAGS.SILENT (\\Seen)",
                 "flag": "+FLAGS.SILENT (\\Flagged)"}  # fmt: skip
        if action in flags:
            await conn.uid("store", ids, flags[action])
        elif action == "move":
            await self._move(conn, ids, str(args.get("to") or ""))
        elif action == "delete":
            trash = None if self.account.delete.expunge else await conn.trash()
            if trash and trash != folder:
                await self._move(conn, ids, trash)
            else:
                await conn.uid("store", ids, "+FLAGS.SILENT (\\Deleted)")
                await conn.expunge(ids)
        else:
            raise PermanentError(f"IMAP cannot {action}", service=self.name)

    async def _move(self, conn: ImapConnection, ids: str, to: str) -> None:
        if not to:
            raise PermanentError("move needs a folder: {move: {to: Archive}}", service=self.name)
        what = f"move to {to!r}"
        if conn.has("MOVE"):
            await conn.uid("move", ids, imapmail.folder_name(to), what=what)
            return
        await conn.uid("copy", ids, imapmail.folder_name(to), what=what)
        await conn.uid("store", ids, "+FLAGS.SILENT (\\Deleted)")
        await conn.expunge(ids)

    async def _uids(self, conn: ImapConnection, folder: str, items: Sequence[Item]) -> list[int]:
        """The items' UIDs, once the folder is selected: none of a past UIDVALIDITY."""
        box = await conn.select(folder)
        return [int(i.raw["uid"]) for i in items if i.raw.get("uidvalidity") == box.uidvalidity]

    async def _with(self, step: Callable[[ImapConnection], Awaitable[T]]) -> T:
        return await self._kept.run(step)

    async def close(self) -> None:
        await self._kept.close()

    # --- push ------------------------------------------------------------------------

    def pushes(self, feed: str) -> bool:
        return self.account.idle is not False

    async def watch(self, feed: str, wake: Wake, report: Report) -> None:
        every = next((f.every for f in self.feeds(self.name, self.account) if f.name == feed),
                     self.account.every)  # fmt: skip
        await watch_folder(
            self.account, self.name, feed, Watching(wake, report, every, self.idle_renew)
        )

    # --- samples, that `check` renders templates on -----------------------------------

    sample_raw: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "email": {
            "folder": "INBOX", "uidvalidity": 1733300000, "uid": 42, "flags": [], "size": 2048,
            "headers": {"from": "Alice <alice@example.org>", "to": "bob@example.org",
                        "subject": "Your code 123456", "message-id": "<1@example.org>",
                        "list-id": "<alerts.example.org>", "x-priority": "1"},
        },
    }  # fmt: skip
    sample_blank: ClassVar[Mapping[str, Mapping[str, Any]]] = {"email": {"url": None}}


def parse_cursor(cursor: str | None) -> tuple[int | None, int]:
    """``UIDVALIDITY:UID`` → the two numbers; (None, 0) for a first poll or a foreign cursor."""
    try:
        validity, uid = (cursor or "").split(":")
        return int(validity), int(uid)
    except ValueError:
        return None, 0
