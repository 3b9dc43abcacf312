"""Rocket.Chat's realtime stream for ``realtime: true``: one DDP WebSocket per account that
says when a DM changed, so that the feed's ordinary REST poll runs at once.

The socket (``<base_url>/websocket``) logs in with the account's token (``login`` with
``{"resume": token}``) and subscribes to ``stream-notify-user`` ``<uid>/subscriptions-changed``.
That event, and no other, is the signal:

- The server sends it for every new DM whatever the user's status: the message's
  ``afterSaveMessage`` callback (``notifyUsersOnMessage``) raises the members' ``unread``
  and ``alert`` and then broadcasts the changed subscriptions. ``<uid>/notification`` is
  not sent to busy or offline users (``shouldNotifyDesktop``), so it would miss DMs.
- It comes after the write that the poll keys on: the poll asks
  ``subscriptions.get?updatedSince=``, and this event is the subscription update itself.
  ``stream-room-messages`` ``__my_messages__`` comes from the message write, possibly before
  the subscription's ``_updatedAt`` moved, and carries every message of every channel the
  user can read: each would cost a poll from a budget of 10 calls a minute per route.
- Its payload is the subscription (dates as EJSON ``{"$date": ms}``): a DM (``t: "d"``)
  with ``unread``, ``alert`` or ``tunread`` wakes the poll; the user's own reads
  (``mark_read`` included) and channels do not.

Nothing is taken from the event itself: the poll that it starts finds the message, and
the same poll runs once after every (re)connect and login, catching up on whatever came
while the socket was down. Reconnects back off from 0.5 s to 30 s with jitter; a refused
login waits 5 minutes; a server without the stream is tried again every 10 minutes. Each
change of state is reported once, and the daemon logs it (``bot.push``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.errors import AuthError, RemoteError
from bot.http import USER_AGENT
from bot.logs import fields
from bot.sources import ddp
from bot.sources.base import Report, Wake
from bot.windows import show_duration

if TYPE_CHECKING:
    from bot.sources.rocketchat import RocketChatSource

log = logging.getLogger("inboxbot.sources.rocketchat")

FIRST_DELAY, MAX_DELAY = 0.5, 30.0  # reconnect backoff, doubled per failure, with jitter
LOGIN_RETRY = 300.0  # after a refused login: the token will not heal in seconds
NO_STREAM_RETRY = 600.0  # after a server without the stream: a proxy change is rare
STABLE = 30.0  # a connection up this long starts the backoff over
PING_EVERY = 25.0  # our ping after this much silence (the server pings about every 15 s)
EVENT = "subscriptions-changed"
CONNECTED = "realtime stream"


class LoginRefused(Exception):
    """The server refused the account's token (or password) on the socket."""


class Stream:
    """The watch loop of one account; ``run`` never returns and never raises but
    CancelledError."""

    def __init__(self, source: RocketChatSource, every: str, wake: Wake, report: Report) -> None:
        self.source, self.every = source, every
        self.wake, self.report = wake, report
        self.url = f"{source.base}/websocket"
        self._last: tuple[bool, str] | None = None
        self._failures = 0

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except LoginRefused as err:
                delay = self._down(f"login refused: {err}", LOGIN_RETRY)
            except ddp.NoStream as err:
                why = f"server has no realtime stream ({err}): polling every {self.every}"
                delay = self._down(why, NO_STREAM_RETRY)
            except (ddp.DdpError, RemoteError) as err:
                if time.monotonic() - started >= STABLE:
                    self._failures = 0
                delay = self._down(f"realtime stream down: {err}", self._backoff())
            except Exception as err:  # never raises: a bug here must not stop the feed
                log.exception("realtime stream failed", extra=fields(account=self.source.name))
                delay = self._down(f"realtime stream failed: {type(err).__name__}", MAX_DELAY)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        """Connect, log in, subscribe, wake the catch-up poll; then wake on each DM change
        until the connection drops (Dropped)."""
        token = await self._token(refused=None)
        headers = {"User-Agent": USER_AGENT}
        timeout = self.source.account.timeout.total_seconds()
        async with ddp.connect(
            self.source.session, self.url, within=timeout, ping_every=PING_EVERY, headers=headers
        ) as conn:
            uid = await self._login(conn, token)
            await self._subscribe(conn, f"{uid}/{EVENT}")
            self._up()
            self.wake()  # the catch-up: whatever came while the socket was down
            async for event in conn.events():
                if dm_news(event, EVENT):
                    self.wake()

    async def _token(self, refused: str | None) -> str:
        """The account's token; with a password, a REST login makes (or renews) it."""
        try:
            return await self.source.session_token(refused)
        except AuthError as err:
            raise LoginRefused(str(err)) from None

    async def _login(self, conn: ddp.Connection, token: str) -> str:
        """The user id the server logged us in as; a refused token is renewed once when
        there is a password to renew it with."""
        try:
            result = await conn.call("login", [{"resume": token}])
        except ddp.MethodError as err:
            if self.source.account.password is None:
                raise LoginRefused(err.reason) from None
            token = await self._token(refused=token)
            try:
                result = await conn.call("login", [{"resume": token}])
            except ddp.MethodError as again:
                raise LoginRefused(again.reason) from None
        uid = result.get("id") if isinstance(result, Mapping) else None
        return str(uid or self.source.user_id or "")

    async def _subscribe(self, conn: ddp.Connection, event: str) -> None:
        try:
            await conn.subscribe("stream-notify-user", [event, False])
        except ddp.MethodError as err:
            raise ddp.NoStream(f"stream-notify-user {EVENT} refused: {err.reason}") from None

    def _up(self) -> None:
        self._tell(True, CONNECTED)

    def _down(self, why: str, delay: float) -> float:
        self._tell(False, why)
        return delay

    def _tell(self, connected: bool, what: str) -> None:
        """Report each change of state once (a retry that fails alike is quiet); the
        daemon logs what is reported, so the line is not logged here too."""
        if self._last == (connected, what):
            return
        self._last = (connected, what)
        self.report(connected, what)
        log.debug("realtime: %s", what, extra=fields(account=self.source.name))

    def _backoff(self) -> float:
        self._failures += 1
        ceiling = min(MAX_DELAY, FIRST_DELAY * 2.0 ** (self._failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def dm_news(event: Mapping[str, Any], name: str = EVENT) -> bool:
    """Whether a ``changed`` message says a DM has something unread (so a poll may find
    a new message there)."""
    body = event.get("fields")
    if event.get("collection") != "stream-notify-user" or not isinstance(body, Mapping):
        return False
    args = body.get("args")
    if not str(body.get("eventName", "")).endswith(f"/{name}") or not isinstance(args, list):
        return False
    sub = args[1] if len(args) > 1 else None
    if args[0] == "removed" or not isinstance(sub, Mapping) or sub.get("t") != "d":
        return False
    return bool(sub.get("unread") or sub.get("alert") or sub.get("tunread"))


def every_of(source: RocketChatSource, feed: str) -> str:
    """The feed's polling interval, for the words of a report."""
    found = [f.every for f in source.feeds(source.name, source.config) if f.name == feed]
    return show_duration(found[0] if found else source.account.every)
