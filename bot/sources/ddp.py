"""A small DDP client (Meteor's protocol over a WebSocket), for Rocket.Chat's realtime API.

    async with ddp.connect(session, "https://chat.example.org/websocket", within=10) as conn:
        await conn.call("login", [{"resume": token}])
        await conn.subscribe("stream-notify-user", [f"{uid}/subscriptions-changed", False])
        async for event in conn.events():  # the ``changed`` messages, until the socket drops
            ...

One reader task answers the server's ``ping`` with ``pong`` (echoing its ``id``), hands
``result``/``ready``/``nosub`` to the call waiting for them and queues ``changed``; when
the socket has been silent for ``ping_every`` seconds it sends its own ``ping``, and
when that gets no answer either the connection is taken for dead (a NAT that forgot it
drops nothing visibly). Errors: ``NoStream`` (no DDP server there: the upgrade refused,
or no ``connected`` answer), ``MethodError`` (a ``result`` or ``nosub`` with an error),
``Dropped`` (anything else that ends the connection). Their texts hold no token.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp

CONNECT = {"msg": "connect", "version": "1", "support": ["1"]}
CLOSE_WITHIN = 1.0  # a stopping daemon waits for no dead peer's close frame
Message = dict[str, Any]


class DdpError(Exception):
    """The realtime connection failed; the text says why, without credentials."""


class NoStream(DdpError):
    """The server has no DDP endpoint there (a proxy without WebSocket, an old server)."""


class Dropped(DdpError):
    """The connection could not be made or ended (network, restart, silence)."""


class MethodError(DdpError):
    """A method call or subscription answered with an error (``reason`` is the server's)."""

    def __init__(self, reason: str, error: Any = None) -> None:
        super().__init__(reason)
        self.reason, self.error = reason, error


class Connection:
    """One connected DDP session; made by ``connect``."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, ping_every: float, within: float
    ) -> None:
        self._ws, self._ping_every, self._within = ws, ping_every, within
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        self._events: asyncio.Queue[Message | None] = asyncio.Queue()
        self._ended: Dropped | None = None

    async def call(self, method: str, params: list[Any]) -> Any:
        """The method's result; MethodError with the server's reason when it refuses."""
        answer = await self._ask({"msg": "method", "method": method, "params": params})
        if "error" in answer:
            raise MethodError(*_reason(answer["error"]))
        return answer.get("result")

    async def subscribe(self, name: str, params: list[Any]) -> None:
        """Returns at ``ready``; a ``nosub`` (refused, with or without an error) raises."""
        answer = await self._ask({"msg": "sub", "name": name, "params": params})
        if answer.get("msg") == "nosub":
            reason, error = _reason(answer.get("error") or {"reason": f"{name} refused"})
            raise MethodError(reason, error)

    async def events(self) -> AsyncIterator[Message]:
        """Every ``changed`` message; ends by raising Dropped when the connection does."""
        while (event := await self._events.get()) is not None:
            yield event
        raise self._ended or Dropped("closed")

    async def _ask(self, message: Message) -> Message:
        if self._ended is not None:
            raise self._ended
        ident = str(next(self._ids))
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = answer
        try:
            await self._send({**message, "id": ident})
            return await asyncio.wait_for(answer, self._within)
        except TimeoutError:
            what = message.get("method") or message.get("name")
            raise Dropped(f"no answer to {what} within {self._within:g} s") from None
        finally:
            self._waiting.pop(ident, None)

    async def _send(self, message: Mapping[str, Any]) -> None:
        try:
            await self._ws.send_str(json.dumps(message))
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as err:
            raise Dropped(f"could not send: {_what(err)}") from None

    async def handshake(self, within: float) -> None:
        """``connect`` → ``connected``; anything else within ``within`` s is not DDP."""
        answer = self._waiting["connect"] = asyncio.get_running_loop().create_future()
        await self._send(CONNECT)
        try:
            reply = await asyncio.wait_for(answer, within)
        except TimeoutError:
            raise NoStream(f"no DDP answer to connect within {within:g} s") from None
        if reply.get("msg") == "failed":
            raise NoStream(f"the server speaks DDP {reply.get('version')}, not 1")

    async def read(self) -> None:
        """The reader task: until the socket ends, then every waiter learns why."""
        try:
            await self._read()
            self._end(Dropped("closed by the server"))
        except Dropped as err:
            self._end(err)
        except (aiohttp.ClientError, ConnectionError, ValueError) as err:
            self._end(Dropped(_what(err)))
        except asyncio.CancelledError:
            self._end(Dropped("closed"))
            raise

    async def _read(self) -> None:
        pinged = False
        while True:
            try:
                frame = await self._ws.receive(timeout=self._ping_every)
            except TimeoutError:
                if pinged:
                    raise Dropped(f"no answer to a ping in {self._ping_every:g} s") from None
                await self._send({"msg": "ping", "id": f"p{next(self._ids)}"})
                pinged = True
                continue
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):  # fmt: skip
                return
            pinged = False
            if frame.type == aiohttp.WSMsgType.TEXT:
                await self._dispatch(json.loads(frame.data))

    async def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        kind = message.get("msg")
        if kind == "ping":
            await self._send({"msg": "pong", **({"id": message["id"]} if "id" in message else {})})
        elif kind in ("connected", "failed"):
            self._answer("connect", message)
        elif kind in ("result", "nosub"):
            self._answer(str(message.get("id")), message)
        elif kind == "ready":
            for ident in message.get("subs") or []:
                self._answer(str(ident), message)
        elif kind == "changed":
            self._events.put_nowait(message)

    def _answer(self, ident: str, message: Message) -> None:
        waiter = self._waiting.get(ident)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    def _end(self, why: Dropped) -> None:
        self._ended = why
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(why)
        self._events.put_nowait(None)


@asynccontextmanager
async def connect(
    session: aiohttp.ClientSession,
    url: str,
    *,
    within: float,
    ping_every: float = 25.0,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[Connection]:
    """A DDP session on ``url`` (``http(s)://…/websocket``), closed on leaving; ``within``
    seconds for the upgrade, the handshake and each call's answer."""
    ws = await _open(session, url, within, headers or {})
    conn = Connection(ws, ping_every, within)
    reader = asyncio.create_task(conn.read())
    try:
        await conn.handshake(within)
        yield conn
    finally:
        reader.cancel()
        await asyncio.wait({reader})  # never swallows a cancellation of this task
        with suppress(aiohttp.ClientError, ConnectionError, TimeoutError):
            await asyncio.wait_for(ws.close(), CLOSE_WITHIN)


async def _open(
    session: aiohttp.ClientSession, url: str, within: float, headers: Mapping[str, str]
) -> aiohttp.ClientWebSocketResponse:
    # no receive timeout: the reader pings instead
    ws_timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_WITHIN)
    try:
        opening = session.ws_connect(url, timeout=ws_timeout, headers=headers)
        return await asyncio.wait_for(opening, within)
    except aiohttp.WSServerHandshakeError as err:
        if err.status < 500 and err.status != 429:
            raise NoStream(f"HTTP {err.status} on the WebSocket upgrade") from None
        raise Dropped(f"HTTP {err.status} on the WebSocket upgrade") from None
    except TimeoutError:
        raise Dropped(f"no WebSocket within {within:g} s") from None
    except (aiohttp.ClientError, OSError) as err:
        raise Dropped(_what(err)) from None


def _reason(error: Any) -> tuple[str, Any]:
    """A Meteor error's words: ``reason``, else ``message``, else the error code."""
    if isinstance(error, dict):
        words = error.get("reason") or error.get("message") or error.get("error")
        return str(words or "refused"), error.get("error")
    return str(error), error


def _what(err: BaseException) -> str:
    """What went wrong, without the URL (a base URL may carry credentials)."""
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"cannot connect to {err.host}:{err.port} ({err.strerror or type(err).__name__})"
    if isinstance(err, aiohttp.ClientError | ConnectionError):
        return type(err).__name__
    return f"{type(err).__name__}: {err}"
