"""Mail.td temporary mailboxes: new mail in one account's inbox.

    signup:
      type: mailtd
      account_id: 0b6b7b06-0000-4000-8000-000000000000   # or the address itself
      token: ${MAILTD_TOKEN}                              # a td_… API token (Bearer)
      every: 30s
      rate: 4/s                                           # 4/s free, 10/s Pro (4 alone: per second)

The list gives 30 summaries a page, newest first; a poll reads pages until one holds a
mail the feed has seen, so when nothing is new it is one request. Bodies come from the
detail, fetched only when a rule or template needs them. 410 on a detail means the
message expired: the item is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import aiohttp
from pydantic import Field, SecretStr

from bot.config import AccountConfig, AccountRate, HttpUrl, Interval, show_rate
from bot.errors import GoneError, PermanentError, QuotaError, RemoteError, TransientError
from bot.http import HttpClient, Limiters, Response, classify, digest, retry_after
from bot.item import Attachment, File, Item
from bot.sources.base import Known, PollResult, Source, nothing_known
from bot.text import find_links, html_to_text

PAGE_SIZE = 30
BATCH = 200
# Mail can be listed a little later than its created_at. When no listed mail is known (all
# deleted, say), paging stops past this look-back before the cursor.
LOOKBACK = timedelta(hours=1)
QUOTA_RETRY = 3600.0


class MailTdAccount(AccountConfig):
    type: Literal["mailtd"]
    base_url: HttpUrl = "https://api.mail.td"
    account_id: str = Field(min_length=1)
    token: SecretStr
    every: Interval = timedelta(seconds=30)
    rate: AccountRate = (4, 1.0)  # 4/s free, 10/s Pro
    feed_names: ClassVar[tuple[str, ...]] = ("messages",)

    def poll_budget(self) -> tuple[float, str]:
        count, period = self.rate
        return count * 60 / period, f"rate: {show_rate(self.rate)} (Mail.td: 4/s free, 10/s Pro)"


class MailTdSource(Source):
    type_name = "mailtd"
    config_model = MailTdAccount
    feed_kinds: ClassVar[Mapping[str, str]] = {"messages": "email"}
    actions: ClassVar[Mapping[str, frozenset[str]]] = {"email": frozenset({"mark_read", "delete"})}
    batch_actions = frozenset({"mark_read"})
    default_feeds = ("messages",)

    def __init__(
        self, name: str, config: AccountConfig, session: aiohttp.ClientSession, limiters: Limiters
    ) -> None:
        super().__init__(name, config, session, limiters)
        assert isinstance(config, MailTdAccount)
        self.account = config
        self.http = HttpClient(
            session,
            config.base_url,
            service=name,
            headers={"Authorization": f"Bearer {config.token.get_secret_value()}"},
            # the service counts per user (token): accounts sharing a token share the budget
            limiter=limiters.get(f"mailtd:{digest(config.token)}", *config.rate),
            timeout=config.timeout.total_seconds(),
            heed=True,  # details are fetched outside the poll: a Retry-After holds both
        )
        self.prefix = f"/api/accounts/{quote(config.account_id, safe='@')}/messages"

    async def poll(self, feed: str, cursor: str | None, known: Known = nothing_known) -> PollResult:
        """Pages, newest first, up to the first page holding a mail the feed has seen (so
        one request when nothing is new), else to a short page or past the look-back.
        Mail listed late is found on that page, not below it: one older than a whole page
        of mail seen before it was listed would be missed, a risk taken for one request."""
        since = datetime.fromisoformat(cursor) - LOOKBACK if cursor else None
        listed: dict[str, Item] = {}
        page = 1
        while True:
            batch = await self._page(page)
            for item in batch:  # new mail shifts the pages: an entry may come twice
                listed.setdefault(item.id, item)
            if len(batch) < PAGE_SIZE or known([i.id for i in batch]):
                break
            if since and batch[-1].created_at < since:
                break
            page += 1
        items = list(reversed(listed.values()))  # oldest first; same-second ties as listed
        newest = max((i.created_at for i in items), default=None)
        return PollResult(items, newest.isoformat() if newest else cursor)

    async def _page(self, page: int) -> list[Item]:
        data = await self._json("GET", f"{self.prefix}?page={page}")
        # the documented key is `messages`; one SDK README says `data`; accept a bare list too
        messages = data.get("messages", data.get("data")) if isinstance(data, dict) else data
        if not isinstance(messages, list):
            raise TransientError(f"page {page}: no messages list in the answer", service=self.name)
        return [self._summary(m) for m in messages]

    def _summary(self, m: Mapping[str, Any]) -> Item:
        """A list entry as an item. Without an id it cannot be tracked: the answer is broken.
        A missing or odd time must not block the feed: the time it was seen stands in."""
        if not isinstance(m, Mapping) or not (isinstance(m.get("id"), str) and m["id"]):
            raise TransientError("a listed message has no id", service=self.name)
        try:
            created = parse_time(str(m["created_at"]))
        except (KeyError, ValueError):
            created = datetime.now(UTC)
        try:
            return Item(
                account=self.name,
                feed="messages",
                kind="email",
                upstream="mailtd",
                id=str(m["id"]),
                created_at=created,
                sender=str(m.get("from") or m.get("sender") or ""),
                recipient=self.account.account_id if "@" in self.account.account_id else "",
                subject=str(m.get("subject") or ""),
                text=str(m.get("preview_text") or ""),
                unread=not m["is_read"] if isinstance(m.get("is_read"), bool) else None,
                raw=dict(m),
                complete=False,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise TransientError(f"malformed message in list: {err!r}", service=self.name) from None

    async def complete(self, item: Item) -> Item:
        if item.complete:
            return item
        d = await self._json("GET", f"{self.prefix}/{quote(item.id)}")
        if not isinstance(d, dict):
            raise TransientError("message detail is not an object", service=self.name)
        html = d.get("html_body") or None
        text = d.get("text_body") or (html_to_text(html) if html else "")
        attachments = tuple(
            Attachment(str(a.get("filename") or f"attachment-{a.get('index')}"),
                       str(a.get("content_type") or "application/octet-stream"), a.get("size"))
            for a in d.get("attachments") or () if isinstance(a, dict)
        )  # fmt: skip
        return replace(
            item,
            text=text,
            html=html,
            attachments=attachments,
            links=find_links(text, html),
            recipient=str(d.get("address") or item.recipient),
            raw={**item.raw, **d},
            complete=True,
        )

    async def files(self, item: Item, max_size: int) -> list[File]:
        found = []
        for a in item.raw.get("attachments") or ():
            if not isinstance(a, dict) or a.get("index") is None or (a.get("size") or 0) > max_size:
                continue
            path = f"{self.prefix}/{quote(item.id)}/attachments/{quote(str(a['index']))}"
            resp = await self._call("GET", path)
            kind = resp.headers.get("Content-Type") or str(a.get("content_type") or "")
            name = str(a.get("filename") or f"attachment-{a['index']}")
            found.append(File(name, kind.split(";")[0] or "application/octet-stream", resp.body))
        return [f for f in found if len(f.data) <= max_size]

    async def act(self, action: str, args: Mapping[str, Any], items: Sequence[Item]) -> None:
        if action == "mark_read" and len(items) > 1:
            for start in range(0, len(items), BATCH):
                ids = [i.id for i in items[start : start + BATCH]]
                await self._json("PUT", f"{self.prefix}/read", json={"ids": ids})
            return
        for item in items:
            if action == "mark_read":
                await self._call("PUT", f"{self.prefix}/{quote(item.id)}/read")
            elif action == "delete":
                await self._call("DELETE", f"{self.prefix}/{quote(item.id)}")
            else:
                raise PermanentError(f"Mail.td cannot {action}", service=self.name)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._call(method, path, **kwargs)).json(self.name)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Response:
        resp = await self.http.request(method, path, **kwargs)
        if not resp.ok:
            raise self._error(resp)
        return resp

    def _error(self, resp: Response) -> RemoteError:
        code = resp.error_code("error", "code")
        if resp.status == 429 and code in ("quota_exceeded", "ops_quota_exceeded"):
            return QuotaError("monthly operations quota exhausted", service=self.name,
                              status=429, retry_after=QUOTA_RETRY)  # fmt: skip
        if resp.status == 429:  # no Retry-After is documented; one a proxy sends is kept
            return TransientError("rate limit exceeded", service=self.name, status=429,
                                  retry_after=retry_after(resp.headers) or 1.0)  # fmt: skip
        if resp.status in (404, 410) and "/messages/" in resp.path:
            state = "expired" if resp.status == 410 else "not found"
            return GoneError(f"{resp.what}: message {state}", service=self.name, status=resp.status)
        return classify(resp, self.name, code or ("HTML page" if not resp.is_json() else ""))

    # --- a sample record, that `check` renders templates on ---------------------------

    sample_raw: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "email": {  # the list entry and, once the body is needed, the detail
            "id": "1", "sender": "alice@example.org", "from": "Alice <alice@example.org>",
            "subject": "Your code 123456", "preview_text": "Use 123456", "size": 2048,
            "is_read": False, "created_at": "2024-05-01T12:00:00Z", "address": "bob@mail.td",
            "text_body": "Use 123456", "html_body": "<p>Use 123456</p>",
            "attachments": [{"index": 0, "filename": "invoice.pdf",
                             "content_type": "application/pdf", "size": 2048}],
        },
    }  # fmt: skip


def parse_time(value: str) -> datetime:
    """RFC 3339 with or without fractions or ``Z``; naive times are taken as UTC."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
