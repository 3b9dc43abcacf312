"""e621 (and e926): DMails received, and new comments found by a search.

    furry:
      type: e621
      username: alice
      api_key: ${E621_API_KEY}          # Account → Manage API access; HTTP Basic
      # base_url: https://e926.net      # the safe mirror works too
      # user_agent: "mytool/1.0 (by alice on e621)"
      feeds:
        dmails:   {every: 2m}
        comments: {every: 10m, search: {poster_id: 12345}}   # comments on my uploads

Politeness: every request of the daemon to one host (all e621 accounts and feeds)
waits on one limiter of 2 requests per 2 s (1/s sustained, bursts never above 2/s);
writes also wait on a limiter of 60/min per user. 503 (edge) and 429 (write
throttle) are transient. Both feeds poll with the ``a<id>`` cursor, 320 a page,
while a page comes back full; a first poll takes only the newest page. The DMail
list also holds the user's own sent copies (``owner_id = from_id``); only the
recipient's copy (``to_id == owner_id``, the owner being the logged-in user) is
an item. Comments need the user's id (to leave out their own): it is taken from a
DMail's ``owner_id`` if one was seen, else looked up once by name.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, SecretStr, field_validator, model_validator

from bot import __version__
from bot.config import AccountConfig, FeedConfig, HttpUrl, Interval
from bot.errors import AuthError, GoneError, PermanentError, RemoteError, TransientError
from bot.http import HttpClient, Limiters, RateLimiter, Response, classify, retry_after
from bot.item import Item
from bot.sources.base import Known, PollResult, Source, nothing_known
from bot.text import find_links

PAGE_SIZE = 320  # the server's max_per_page
MAX_PAGES = 25  # per poll; the a<id> cursor is contiguous, so the next poll goes on
EDGE_RETRY = 5.0  # 503 from the edge carries no hint
THROTTLE_RETRY = 30.0  # the write budget is a 1-minute sliding window
SearchValue = str | int | bool | list[str | int] | None


class E621Feed(FeedConfig):
    search: dict[str, SearchValue] = Field(default_factory=dict)
    include_own: bool = False  # comments: notify the user's own comments too
    include_hidden: bool = False  # comments: hidden ones (only staff see others' hidden ones)

    @field_validator("search")
    @classmethod
    def _plain_keys(cls, search: dict[str, SearchValue]) -> dict[str, SearchValue]:
        bad = [k for k in search if not re.fullmatch(r"[a-z_]+", k)]
        if bad:
            raise ValueError(
                f"search key {bad[0]!r}: write the name inside search[…], e.g. post_id"
            )
        return search


class E621Account(AccountConfig):
    type: Literal["e621"]
    base_url: HttpUrl = "https://e621.net"
    username: str = Field(min_length=1)
    api_key: SecretStr
    user_agent: str | None = None
    every: Interval = timedelta(minutes=2)
    feeds: dict[str, E621Feed] = Field(default_factory=dict)  # type: ignore[assignment]
    feed_names: ClassVar[tuple[str, ...]] = ("dmails", "comments")

    def poll_budget(self) -> tuple[float, str]:
        return 60.0, "e621 asks for at most 1 request/s"

    @field_validator("user_agent")
    @classmethod
    def _honest_agent(cls, agent: str | None) -> str | None:
        if agent is not None and (not agent.strip() or agent.startswith("Mozilla/")):
            raise ValueError("e621 blocks empty and browser user agents; e.g. 'tool/1.0 (by NAME)'")
        return agent

    @model_validator(mode="after")
    def _comments_need_search(self) -> E621Account:
        comments = self.feeds.get("comments")
        if comments is not None and not _search_params(comments.search):
            raise ValueError("feeds.comments needs search: (e.g. {poster_id: <your user id>})")
        return self


class E621Source(Source):
    type_name = "e621"
    config_model = E621Account
    feed_kinds: ClassVar[Mapping[str, str]] = {"dmails": "dmail", "comments": "comment"}
    actions: ClassVar[Mapping[str, frozenset[str]]] = {
        "dmail": frozenset({"mark_read", "delete", "mark_all_read"}),
        "comment": frozenset({"hide", "unhide", "vote_up", "vote_down", "unvote", "reply"}),
    }
    batch_actions = frozenset({"mark_all_read"})
    default_feeds = ("dmails",)

    def __init__(
        self, name: str, config: AccountConfig, session: aiohttp.ClientSession, limiters: Limiters
    ) -> None:
        super().__init__(name, config, session, limiters)
        assert isinstance(config, E621Account)
        self.account = config
        self.base_url = config.base_url.rstrip("/")
        host = (urlsplit(self.base_url).netloc or self.base_url).lower()
        login = f"{config.username}:{config.api_key.get_secret_value()}".encode()
        agent = config.user_agent or f"inboxbot/{__version__} (by {config.username} on e621)"
        self.http = HttpClient(
            session,
            self.base_url,
            service=name,
            headers={"Authorization": f"Basic {base64.b64encode(login).decode()}",
                     "User-Agent": agent},
            # the edge counts every request from us, whichever account: one budget per host
            limiter=limiters.get(f"e621:{host}", 2, 2.0),
            timeout=config.timeout.total_seconds(),
        )  # fmt: skip
        self.writes: RateLimiter = limiters.get(
            f"e621-writes:{host}:{config.username.lower()}", 60, 60.0
        )
        self.my_id: int | None = None
        self.names: dict[int, str] = {}

    # --- polling ---------------------------------------------------------------------

    async def poll(self, feed: str, cursor: str | None, known: Known = nothing_known) -> PollResult:
        """One request when nothing is new: the ``a<id>`` cursor asks only for records above
        the newest one seen, so no page holds a known record and the ledger is not asked.
        The unread counter (``unread_dmail_count`` on ``/users/<id>.json``) would cost one
        request too, and could not tell of DMails that arrive already read (a DMail filter)
        or that the user read on the site before the poll: it is not used."""
        settings = self.account.feeds.get(feed) or E621Feed()
        params = _search_params(settings.search)
        if feed == "comments":
            params["group_by"] = "comment"
        rows = await self._rows(f"/{feed}.json", params, int(cursor) if cursor else None)
        rows.sort(key=lambda r: int(r["id"]))  # oldest first: notifications keep their order
        items = [await self._item(feed, row, settings) for row in rows]
        return PollResult([i for i in items if i], str(rows[-1]["id"]) if rows else cursor)

    async def _rows(self, path: str, params: dict[str, str], after: int | None) -> list[Any]:
        """The newest page without a cursor; else every record above it, page by page."""
        rows: list[Any] = []
        for _ in range(MAX_PAGES):
            page = {"page": f"a{after}"} if after is not None else {}
            batch = _records(await self._get(path, {**params, **page, "limit": str(PAGE_SIZE)}))
            fresh = [r for r in batch if after is None or int(r["id"]) > after]
            rows += fresh
            if after is None or len(batch) < PAGE_SIZE or not fresh:
                break
            after = max(int(r["id"]) for r in fresh)
        return rows

    async def _wanted(self, feed: str, row: Mapping[str, Any], settings: E621Feed) -> bool:
        if feed == "dmails":
            self.my_id = int(row["owner_id"])
            return bool(row["to_id"] == row["owner_id"])  # not the user's own sent copy
        if row.get("is_hidden") and not settings.include_hidden:
            return False
        return settings.include_own or int(row["creator_id"]) != await self._me()

    async def _item(self, feed: str, row: Mapping[str, Any], settings: E621Feed) -> Item | None:
        try:
            if not await self._wanted(feed, row, settings):
                return None
            return await (self._dmail(row) if feed == "dmails" else self._comment(row))
        except (KeyError, TypeError, ValueError) as err:
            raise TransientError(f"malformed {feed} record: {err!r}", service=self.name) from None

    async def _dmail(self, d: Mapping[str, Any]) -> Item:
        text, links = dtext_to_text(str(d.get("body") or ""), self.base_url)
        return Item(
            account=self.name,
            feed="dmails",
            kind="dmail",
            upstream="e621",
            id=str(d["id"]),
            created_at=parse_time(str(d["created_at"])),
            sender=str(d.get("from_name") or await self._name(int(d["from_id"]))),
            recipient=str(d.get("to_name") or self.account.username),
            subject=str(d.get("title") or ""),
            text=text,
            unread=not d["is_read"] if isinstance(d.get("is_read"), bool) else None,
            url=f"{self.base_url}/dmails/{d['id']}",
            links=links,
            raw=dict(d),
        )

    async def _comment(self, c: Mapping[str, Any]) -> Item:
        text, links = dtext_to_text(str(c.get("body") or ""), self.base_url)
        return Item(
            account=self.name,
            feed="comments",
            kind="comment",
            upstream="e621",
            id=str(c["id"]),
            created_at=parse_time(str(c["created_at"])),
            sender=str(c.get("creator_name") or await self._name(int(c["creator_id"]))),
            subject=f"Comment on post #{c['post_id']}",
            text=text,
            url=f"{self.base_url}/posts/{c['post_id']}#comment-{c['id']}",
            links=links,
            raw=dict(c),
        )

    async def _me(self) -> int:
        if self.my_id is None:
            wanted = _user_key(self.account.username)
            found = await self._get("/users.json", {"search[name_matches]": wanted, "limit": "20"})
            ids = [int(u["id"]) for u in _records(found) if _user_key(str(u.get("name"))) == wanted]
            if not ids:
                raise PermanentError(f"no e621 user named {wanted!r}", service=self.name)
            self.my_id = ids[0]
        return self.my_id

    async def _name(self, user_id: int) -> str:
        """A user's name on servers whose records carry only ids; asked once per user."""
        if user_id not in self.names:
            try:
                user = await self._get(f"/users/{user_id}.json", {})
                self.names[user_id] = str(user["name"])
            except GoneError:
                self.names[user_id] = f"user #{user_id}"
            except (KeyError, TypeError):
                raise TransientError(f"user #{user_id}: no name", service=self.name) from None
        return self.names[user_id]

    # --- actions ---------------------------------------------------------------------

    async def act(self, action: str, args: Mapping[str, Any], items: Sequence[Item]) -> None:
        if action == "mark_all_read":
            await self._write("PUT", "/dmails/mark_all_as_read.json")
            return
        for item in items:
            method, path, form = self._request_for(action, args, item)
            await self._write(method, path, form)

    def _request_for(
        self, action: str, args: Mapping[str, Any], item: Item
    ) -> tuple[str, str, dict[str, str] | None]:
        one = f"/{item.feed}/{item.id}"
        votes = f"/comments/{item.id}/votes.json"
        if action == "reply":
            message = str(args.get("message") or "").strip()
            if not message:
                raise PermanentError("reply needs a message", service=self.name)
            if "post_id" not in item.raw:
                raise PermanentError(f"comment {item.id}: post unknown", service=self.name)
            form = {"comment[body]": message, "comment[post_id]": str(item.raw["post_id"])}
            return "POST", "/comments.json", form
        table: dict[str, tuple[str, str, dict[str, str] | None]] = {
            "mark_read": ("PUT", f"{one}/mark_as_read.json", None),
            "delete": ("DELETE", f"{one}.json", None),
            "hide": ("POST", f"{one}/hide.json", None),
            "unhide": ("POST", f"{one}/unhide.json", None),
            # no_unvote: a retried vote must not toggle the vote off again
            "vote_up": ("POST", votes, {"score": "1", "no_unvote": "true"}),
            "vote_down": ("POST", votes, {"score": "-1", "no_unvote": "true"}),
            "unvote": ("DELETE", votes, None),
        }
        if action not in table or action not in self.actions[item.kind]:
            raise PermanentError(f"e621 cannot {action} a {item.kind}", service=self.name)
        return table[action]

    # --- HTTP ------------------------------------------------------------------------

    async def _get(self, path: str, params: Mapping[str, str]) -> Any:
        resp = await self.http.request("GET", path, params=params, allow_redirects=False)
        if not resp.ok:
            raise self._error(resp)
        return resp.json(self.name)

    async def _write(self, method: str, path: str, form: Mapping[str, str] | None = None) -> None:
        await self.writes.wait()
        resp = await self.http.request(method, path, data=form, allow_redirects=False)
        # JSON answers 204 (or the record); the HTML flavour answers 302 to the list
        if not (resp.ok or resp.status in (302, 303)):
            raise self._error(resp)

    def _error(self, resp: Response) -> RemoteError:
        message = resp.error_code("message", "reason")
        status, what, service = resp.status, resp.what, self.name
        if status == 503 or (status >= 500 and not resp.is_json()):
            hint = retry_after(resp.headers) or EDGE_RETRY
            text = f"{what} → HTTP {status}: e621 asks us to slow down or is down; backing off"
            return TransientError(text, service=service, status=status, retry_after=hint)
        if status == 429:
            hint = retry_after(resp.headers) or THROTTLE_RETRY
            used = "write budget used up" if resp.method != "GET" else "too many requests"
            text = f"{what} → HTTP 429: {used} ({message or 'throttled'})"
            return TransientError(text, service=service, status=429, retry_after=hint)
        if status == 410 and resp.method == "GET":
            text = f"e621 refused our pagination (410: {message}): this is a bug in inboxbot"
            return PermanentError(text, service=service, status=410)
        if status == 404 and re.search(r"/\d+(/|\.json$)", resp.path):
            return GoneError(f"{what}: not found", service=service, status=404)
        if 300 <= status < 400:
            where = resp.headers.get("Location", "").split("?", 1)[0]
            return PermanentError(f"{what} redirected to {where}: check base_url", service=service)
        if status == 403 and not resp.is_json():
            text = f"{what} → HTTP 403 from the edge: is the User-Agent descriptive?"
            return PermanentError(text, service=service, status=403)
        if status == 403 and resp.method == "GET":
            return AuthError(f"{what} → HTTP 403 ({message})", service=service, status=403)
        if status in (403, 422):
            return PermanentError(
                f"{what}: e621 refused: {message}", service=service, status=status
            )
        return classify(resp, service, message or ("HTML page" if not resp.is_json() else ""))

    # --- a sample record, that `check` renders templates on ---------------------------

    sample_blank: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "dmail": {"html": None, "attachments": ()},
        "comment": {"html": None, "attachments": (), "unread": None, "recipient": ""},
    }
    sample_raw: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "dmail": {
            "id": 1800001, "owner_id": 100001, "from_id": 100002, "to_id": 100001,
            "title": "Your code 123456", "body": "Use 123456", "is_read": False,
            "is_deleted": False, "created_at": "2024-05-01T12:00:00.000-04:00",
            "updated_at": "2024-05-01T12:00:00.000-04:00", "to_name": "bob", "from_name": "alice",
        },
        "comment": {
            "id": 7200001, "created_at": "2024-05-01T12:00:00.000-04:00",
            "updated_at": "2024-05-01T12:00:00.000-04:00", "post_id": 4500001,
            "creator_id": 100002, "body": "Nice!", "score": 3, "updater_id": 100002,
            "do_not_bump_post": False, "is_hidden": False, "is_sticky": False,
            "warning_type": None, "warning_user_id": None, "creator_name": "alice",
            "updater_name": "alice", "vote": 0,
        },
    }  # fmt: skip


def _records(data: Any) -> list[Any]:
    """A list answer; older servers answered an empty list as ``{"<name>": []}``."""
    if isinstance(data, dict) and len(data) == 1:
        (data,) = data.values()
    if not isinstance(data, list) or not all(
        isinstance(r, dict) and _int(r.get("id")) for r in data
    ):
        raise TransientError("e621 answered something other than a list of records")
    return data


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _search_params(search: Mapping[str, SearchValue]) -> dict[str, str]:
    """``search[key]=value`` pairs; blank values are left out (the server redirects on them)."""
    params = {}
    for key, value in search.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        text = str(value).lower() if isinstance(value, bool) else str(value or "").strip()
        if text:
            params[f"search[{key}]"] = text
    return params


def _user_key(name: str) -> str:
    return name.strip().replace(" ", "_").lower()


def parse_time(value: str) -> datetime:
    """ISO 8601 with the user's zone offset (``…T00:01:30.471-05:00``), kept aware."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without an offset: {value!r}")
    return moment


# --- DText → plain text ------------------------------------------------------------------

_URL_CHARS = r"[^\s<>\"\[\]]+"
_LINKS = re.compile(
    r"\[url=(?P<u1>[^\]\s]+)\](?P<t1>.*?)\[/url\]"
    r"|\[url\](?P<u2>.*?)\[/url\]"
    r"|\"(?P<t3>[^\"\n]+)\":\[(?P<u3>[^\]\s]+)\]"
    rf"|\"(?P<t4>[^\"\n]+)\":(?P<u4>(?:https?://|/){_URL_CHARS})"
    r"|\[\[(?P<wiki>[^\]|]+)(?:\|(?P<label>[^\]]*))?\]\]"
    r"|\b(?P<ref>post|comment|pool|set|forum|topic|user) #(?P<num>\d+)"
    rf"|(?P<bare>https?://{_URL_CHARS})",
    re.I | re.S,
)
_REFS = {"post": "posts", "comment": "comments", "pool": "pools", "set": "post_sets",
         "forum": "forum_posts", "topic": "forum_topics", "user": "users"}  # fmt: skip
_QUOTE = re.compile(r"\[quote\]((?:(?!\[quote\]).)*?)\[/quote\]", re.I | re.S)
_SECTION = re.compile(r"\[section(?:,expanded)?(?:=([^\]]*))?\]", re.I)
_TAGS = re.compile(
    r"\[/?(?:b|i|u|s|o|sup|sub|spoiler|tn|code|nodtext|table|thead|tbody|tr|td|th|center"
    r"|color(?:=[^\]]*)?|/section)\]",
    re.I,
)
_HEADER = re.compile(r"^h[1-6](?:#[\w-]*)?\.\s*", re.M)


def dtext_to_text(body: str, base_url: str) -> tuple[str, tuple[str, ...]]:
    """Readable plain text of a DText body, and every link in it (relative ones made absolute)."""
    found: list[str] = []

    def link(match: re.Match[str]) -> str:
        g = match.groupdict()
        if g["ref"]:
            found.append(f"{base_url}/{_REFS[g['ref'].lower()]}/{g['num']}")
            return match.group(0)
        if g["wiki"]:
            return g["label"] or g["wiki"]
        tail = ""
        if g["u4"] or g["bare"]:  # unbracketed: the sentence's punctuation is not the URL's
            url, tail = _split_tail(g["u4"] or g["bare"])
        else:
            url = (g["u1"] or g["u2"] or g["u3"]).strip()
        found.append(base_url + url if url.startswith("/") else url)
        return (g["t1"] if g["u1"] else g["t3"] or g["t4"] or url) + tail

    text = _LINKS.sub(link, body.replace("\r\n", "\n"))
    while _QUOTE.search(text):
        text = _QUOTE.sub(lambda m: _quoted(m.group(1)), text)
    text = _SECTION.sub(lambda m: f"{m.group(1) or ''}\n", text)
    text = _HEADER.sub("", _TAGS.sub("", text))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in text.split("\n")))
    return text.strip(), find_links("\n".join(found))


def _split_tail(url: str) -> tuple[str, str]:
    """A URL without the punctuation that ends the sentence around it."""
    cut = len(url.rstrip(".,;:!?)'"))
    return url[:cut], url[cut:]


def _quoted(inner: str) -> str:
    lines = inner.strip("\n").split("\n")
    return "\n" + "\n".join(f"> {line}".rstrip() for line in lines) + "\n"
