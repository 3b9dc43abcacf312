"""MinuteMail temporary mailboxes: new mail in one mailbox.

    qa:
      type: minutemail
      api_key: ${MINUTEMAIL_API_KEY}        # mmak_… (Bearer), dashboard → API Keys
      mailbox_id: ed930b25-dd40-41b3-a712-e502fbcc5565
      every: 30s
      rate: 2                               # requests/s per key (the service documents none)

``GET /v1/mailboxes/{id}/mails`` lists every mail with its body at once: no pages,
no read flag. So "new" means "id not seen" (the store's dedup); no cursor is kept,
because a receivedAt cursor could skip mail listed late. ``unread`` is None. The body
is HTML or plain text, told apart by its tags. Attachment content is fetched only on
demand (``attachment``). Mailboxes expire after 1–60 minutes: a vanished mailbox is a
PermanentError (the pipeline rests the feed), a 429 is the call quota (QuotaError).
"""

from __future__ import annotations

import base64
import binascii
import logging
import mimetypes
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import aiohttp
from pydantic import Field, SecretStr

from bot.config import AccountConfig, AccountRate, HttpUrl, Interval, show_rate
from bot.errors import (
    AuthError,
    GoneError,
    PermanentError,
    QuotaError,
    RemoteError,
    TransientError,
)
from bot.http import HttpClient, Limiters, Response, classify, digest, retry_after
from bot.item import Attachment, File, Item
from bot.logs import fields
from bot.sources.base import Known, PollResult, Source, nothing_known
from bot.text import find_links, html_to_text

log = logging.getLogger("inboxbot.sources.minutemail")

BATCH = 100  # ids per bulk delete: the API documents no limit, so stay modest
QUOTA_RETRY = 3600.0
QUOTA_WARN = 100  # log once when fewer API calls than this remain
UNKNOWN_TYPE = "application/octet-stream"
_HTML = re.compile(
    r"<(?:!doctype\s+html|html|head|body|p|div|br|hr|table|tr|td|span|a|img|h[1-6]|ul|ol|li"
    r"|b|i|u|strong|em|font|center|style|meta)\b[^<>]*>",
    re.I,
)


class MinuteMailAccount(AccountConfig):
    type: Literal["minutemail"]
    base_url: HttpUrl = "https://api.minutemail.co"
    api_key: SecretStr
    mailbox_id: str = Field(min_length=1)
    every: Interval = timedelta(seconds=30)
    rate: AccountRate = (2, 1.0)
    feed_names: ClassVar[tuple[str, ...]] = ("mails",)

    def poll_budget(self) -> tuple[float, str]:
        count, period = self.rate
        quota = "and MinuteMail counts every call against the key's quota"
        return count * 60 / period, f"rate: {show_rate(self.rate)}, {quota}"


class MinuteMailSource(Source):
    type_name = "minutemail"
    config_model = MinuteMailAccount
    feed_kinds: ClassVar[Mapping[str, str]] = {"mails": "email"}
    actions: ClassVar[Mapping[str, frozenset[str]]] = {
        "email": frozenset({"delete", "delete_attachments"})
    }
    batch_actions = frozenset({"delete"})
    default_feeds = ("mails",)

    def __init__(
        self, name: str, config: AccountConfig, session: aiohttp.ClientSession, limiters: Limiters
    ) -> None:
        super().__init__(name, config, session, limiters)
        assert isinstance(config, MinuteMailAccount)
        self.account = config
        self.http = HttpClient(
            session,
            config.base_url,
            service=name,
            headers={"Authorization": f"Bearer {config.api_key.get_secret_value()}"},
            # politeness per key: every account using one key shares one budget
            limiter=limiters.get(f"minutemail:{digest(config.api_key)}", *config.rate),
            timeout=config.timeout.total_seconds(),
        )
        self.mailbox = f"/v1/mailboxes/{quote(config.mailbox_id, safe='')}"
        self.address: str | None = None  # the mailbox's address, asked once
        self.quota_low = False

    async def poll(self, feed: str, cursor: str | None, known: Known = nothing_known) -> PollResult:
        """One request (the list holds every mail, bodies too), plus the mailbox's address
        at the first poll. There are no pages, so the ledger is not asked."""
        if self.address is None:
            box = await self._json("GET", self.mailbox)
            self.address = str(box.get("address") or "") if isinstance(box, dict) else ""
        data = await self._json("GET", f"{self.mailbox}/mails")
        mails = data.get("items") if isinstance(data, dict) else None
        if not isinstance(mails, list):
            raise TransientError("no items list in the mail listing", service=self.name)
        return PollResult(oldest_first([self._item(m) for m in mails]), None)

    def _item(self, m: Any) -> Item:
        try:
            return normalize(m, account=self.name, recipient=self.address or "")
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise TransientError(f"malformed mail in list: {err!r}", service=self.name) from None

    async def attachment(self, item: Item, attachment_id: str) -> tuple[str, str, bytes]:
        """One attachment's (name, content type, content), downloaded now (JSON, base64)."""
        path = f"{self._mail(item)}/attachments/{quote(attachment_id, safe='')}"
        d = await self._json("GET", path)
        try:
            data = base64.b64decode(d["data"], validate=True)
            name, kind = str(d.get("name") or attachment_id), d.get("contentType")
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise TransientError(f"GET {path}: no valid base64 data", service=self.name) from None
        return name, str(kind or _guess_type(name)), data

    async def files(self, item: Item, max_size: int) -> list[File]:
        found = []
        for a in item.raw.get("attachments") or ():
            size = a.get("sizeBytes") if _is_map(a) else None
            if _is_map(a) and a.get("id") and (size if isinstance(size, int) else 0) <= max_size:
                found.append(File(*await self.attachment(item, str(a["id"]))))
        return [f for f in found if len(f.data) <= max_size]

    async def act(self, action: str, args: Mapping[str, Any], items: Sequence[Item]) -> None:
        if action == "delete" and len(items) > 1:
            for start in range(0, len(items), BATCH):
                ids = [i.id for i in items[start : start + BATCH]]
                await self._call("DELETE", f"{self.mailbox}/mails", json={"ids": ids})
            return
        for item in items:
            mail = self._mail(item)
            if action == "delete":
                await self._call("DELETE", mail)
            elif action == "delete_attachments":
                ids = attachment_ids(item)
                if ids:
                    await self._call("DELETE", f"{mail}/attachments", json={"ids": ids})
            else:
                raise PermanentError(f"MinuteMail cannot {action}", service=self.name)

    def _mail(self, item: Item) -> str:
        return f"{self.mailbox}/mails/{quote(item.id, safe='')}"

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._call(method, path, **kwargs)).json(self.name)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Response:
        resp = await self.http.request(method, path, **kwargs)
        self._watch_quota(resp)
        if not resp.ok:
            raise self._error(resp)
        return resp

    def _watch_quota(self, resp: Response) -> None:
        remaining = _remaining(resp)
        if remaining is None:
            return
        low = remaining < QUOTA_WARN
        if low and not self.quota_low:
            log.warning("quota low", extra=fields(account=self.name, remaining=remaining))
        self.quota_low = low

    def _error(self, resp: Response) -> RemoteError:
        said = _said(resp)
        if resp.status == 429:
            return self._too_many(resp, said)
        if resp.status == 401:
            refused = "API key refused (invalid, expired or missing)"
            return AuthError(
                f"{resp.what} → HTTP 401: {refused}{said}", service=self.name, status=401
            )
        if resp.status == 403:
            return AuthError(
                f"{resp.what} → HTTP 403: this API key has no access to mailbox "
                f"{self.account.mailbox_id}, or its domain restrictions refuse us{said}",
                service=self.name,
                status=403,
            )
        listing = (self.mailbox, f"{self.mailbox}/mails")
        if resp.status == 404 and resp.method == "GET" and resp.path in listing:
            return PermanentError(
                f"mailbox {self.account.mailbox_id} no longer exists (MinuteMail mailboxes "
                "expire after 1–60 minutes); re-create it and update mailbox_id",
                service=self.name,
                status=404,
            )
        if resp.status == 404:
            return GoneError(f"{resp.what}: not found{said}", service=self.name, status=404)
        return classify(resp, self.name, said.strip(" :") or _shape(resp))

    def _too_many(self, resp: Response, said: str) -> TransientError:
        remaining, hint = _remaining(resp), retry_after(resp.headers)
        # quota left, or no quota figure but a time to wait: a per-second limit then
        if (remaining is not None and remaining > 0) or (remaining is None and hint is not None):
            hint = hint or 1.0
            return TransientError(
                f"{resp.what} → HTTP 429: rate limited{said}",
                service=self.name,
                status=429,
                retry_after=hint,
            )
        return QuotaError(
            f"{resp.what} → HTTP 429: API call quota exhausted{said}",
            service=self.name,
            status=429,
            retry_after=QUOTA_RETRY,
        )

    # --- a sample record, that `check` renders templates on ---------------------------

    sample_raw: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "email": {
            "id": "1", "mailboxId": "ed930b25-dd40-41b3-a712-e502fbcc5565",
            "sender": "alice@example.org", "subject": "Your code 123456",
            "body": "<p>Use 123456</p>", "hasAttachments": True,
            "attachments": [{"id": "a1", "name": "invoice.pdf", "sizeBytes": 2048}],
            "receivedAt": "2024-05-01T12:00:00Z",
        },
    }  # fmt: skip


def oldest_first(items: list[Item]) -> list[Item]:
    """The listing's order is not documented: a newest-first list is turned round, then
    sorted by time (stably, so mail of the same second keeps that order)."""
    if len(items) > 1 and items[0].created_at > items[-1].created_at:
        items = items[::-1]
    return sorted(items, key=lambda i: i.created_at)


def normalize(m: Mapping[str, Any], *, account: str, recipient: str = "") -> Item:
    """One mail of the listing as an Item (raises KeyError/TypeError/ValueError if malformed)."""
    body = m.get("body")
    body = body if isinstance(body, str) else ""
    html = body if looks_like_html(body) else None
    text = html_to_text(body) if html is not None else body
    return Item(
        account=account,
        feed="mails",
        kind="email",
        upstream="minutemail",
        id=_mail_id(m["id"]),
        created_at=parse_time(str(m["receivedAt"])),
        sender=str(m.get("sender") or ""),
        recipient=recipient,
        subject=str(m.get("subject") or ""),
        text=text,
        html=html,
        unread=None,
        attachments=tuple(_attachment(a) for a in m.get("attachments") or () if _is_map(a)),
        links=find_links(text, html),
        raw=dict(m),
    )


def _mail_id(value: Any) -> str:
    """A mail's id: a non-empty string (or a number); anything else is a broken entry."""
    if (isinstance(value, str) and value) or (
        isinstance(value, int) and not isinstance(value, bool)
    ):
        return str(value)
    raise ValueError(f"a listed mail has no proper id ({type(value).__name__})")


def looks_like_html(body: str) -> bool:
    """Whether a body holds HTML tags (the API gives one ``body``, plain text or HTML)."""
    return bool(_HTML.search(body))


def attachment_ids(item: Item) -> list[str]:
    """The upstream ids of an item's attachments (kept in ``raw``)."""
    found = item.raw.get("attachments") or ()
    return [str(a["id"]) for a in found if _is_map(a) and a.get("id")]


def _attachment(a: Mapping[str, Any]) -> Attachment:
    name = str(a.get("name") or f"attachment-{a.get('id', '')}")
    size = a.get("sizeBytes")
    kind = a.get("contentType") or _guess_type(name)
    return Attachment(name, str(kind), int(size) if isinstance(size, int | float) else None)


def _guess_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or UNKNOWN_TYPE


def _is_map(value: Any) -> bool:
    return isinstance(value, Mapping)


def _remaining(resp: Response) -> int | None:
    value = resp.headers.get("X-RateLimit-Remaining", "").strip()
    return int(value) if value.lstrip("-").isdigit() else None


def _said(resp: Response) -> str:
    """The error body's own words (``error`` and ``message``), if it has any."""
    words = [w for w in (resp.error_code("error"), resp.error_code("message")) if w]
    return f": {' — '.join(dict.fromkeys(words))[:200]}" if words else ""


def _shape(resp: Response) -> str:
    return "" if resp.is_json() else "HTML page" if b"<html" in resp.body[:500].lower() else ""


def parse_time(value: str) -> datetime:
    """ISO 8601 with or without fractions or ``Z``; naive times are taken as UTC."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
