"""One logged-in IMAP connection over aioimaplib, its answers checked and its failures
turned into the project's errors at this edge: a refused login is an AuthError with the
server's words, a certificate that does not verify a PermanentError that says how to
accept it, anything on the wire (refused, reset, timed out) a TransientError. The password
is never in an error: aioimaplib's own messages about the login are not passed on.

aioimaplib has no STARTTLS command of its own: it is sent here and the transport
upgraded with asyncio's ``start_tls``. Its EXAMINE leaves the client in the wrong state
for UID commands, so folders are SELECTed (reading uses ``BODY.PEEK``: nothing is marked
seen by it).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import aioimaplib
from aioimaplib import IMAP4, STOP_WAIT_SERVER_PUSH, Command

from bot.errors import AuthError, PermanentError, RemoteError, TransientError
from bot.sources.imapmail import Fetched, fetched, folder_name, mailbox_codes

if TYPE_CHECKING:
    from bot.sources.imap import ImapAccount

T = TypeVar("T")
# aioimaplib logs every line it sends and receives at debug (mail included) and chatter at
# info: only its warnings are wanted, whatever the daemon's level
logging.getLogger("aioimaplib").setLevel(logging.WARNING)
LOST = [b"* connection lost"]  # put in the IDLE queue when the connection drops
KEEP = 240.0  # a connection unused this long is not trusted (NAT timeouts): a new one
PUSHED = re.compile(rb"\d+ (EXISTS|RECENT|FETCH|EXPUNGE)\b")


@dataclass(frozen=True)
class Mailbox:
    name: str
    uidvalidity: int
    uidnext: int | None


class ImapConnection:
    def __init__(self, client: Any, account: ImapAccount, service: str) -> None:
        self.client = client
        self.account = account
        self.service = service
        self.lost = False
        self._gone = asyncio.Event()  # set with ``lost``: a command waiting gives up at once

    @classmethod
    async def open(cls, account: ImapAccount, service: str) -> ImapConnection:
        """Connected (TLS as configured), logged in, capabilities known."""
        conn = cls(None, account, service)
        ctx = tls_context(account.tls_verify) if account.tls != "none" else None
        conn.client = IMAP4(
            account.host, account.imap_port, timeout=account.timeout.total_seconds(),
            conn_lost_cb=conn._lost, ssl_context=ctx if account.tls == "tls" else None,
        )  # fmt: skip
        try:
            await conn._wire(conn.client.wait_hello_from_server(), "connect")
            if account.tls == "starttls":
                await conn._starttls(tls_context(account.tls_verify))
            await conn._login()
        except BaseException:
            conn.close()
            raise
        return conn

    def _lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._gone.set()
        if self.client is not None:
            self.client.protocol.idle_queue.put_nowait(LOST)

    async def _starttls(self, ctx: ssl.SSLContext) -> None:
        protocol = self.client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise PermanentError("the server offers no STARTTLS; use tls: tls (port 993)",
                                 service=self.service)  # fmt: skip
        command = Command("STARTTLS", protocol.new_tag(), loop=asyncio.get_running_loop())
        self._ok(await self._wire(protocol.execute(command), "STARTTLS"), "STARTTLS")
        loop = asyncio.get_running_loop()
        host = self.account.host
        upgrade = loop.start_tls(protocol.transport, protocol, ctx, server_hostname=host)
        protocol.transport = await self._wire(upgrade, "STARTTLS")
        await self._wire(protocol.capability(), "CAPABILITY")

    async def _login(self) -> None:
        account = self.account
        login = self.client.login(aioimaplib.quoted(account.username),
                                  account.password.get_secret_value())  # fmt: skip
        resp = await self._wire(login, "login", quiet=True)
        if resp.result != "OK":
            said = _said(resp.lines) or "no reason given"
            if "UNAVAILABLE" in said:
                raise TransientError(f"login refused for now: {said}", service=self.service)
            raise AuthError(f"login as {account.username!r} refused: {said}", service=self.service)
        if not any(b"CAPABILITY" in line for line in resp.lines):
            await self._wire(self.client.protocol.capability(), "CAPABILITY")

    def has(self, capability: str) -> bool:
        return bool(self.client.has_capability(capability))

    async def select(self, folder: str) -> Mailbox:
        resp = await self._wire(self.client.select(folder_name(folder)), f"SELECT {folder}")
        self._ok(resp, f"folder {folder!r}")
        codes = mailbox_codes(resp.lines)
        if "UIDVALIDITY" not in codes:
            raise TransientError(f"SELECT {folder}: no UIDVALIDITY in the answer",
                                 service=self.service)  # fmt: skip
        return Mailbox(folder, codes["UIDVALIDITY"], codes.get("UIDNEXT"))

    async def fetch(self, uids: str, parts: str) -> list[Fetched]:
        resp = await self._wire(self.client.uid("fetch", uids, parts), "FETCH")
        return fetched(self._ok(resp, "FETCH").lines)

    async def uid(self, command: str, *args: str, what: str = "") -> None:
        what = what or f"UID {command.upper()}"
        self._ok(await self._wire(self.client.uid(command, *args), what), what)

    async def expunge(self, uids: str) -> None:
        if self.has("UIDPLUS"):
            await self.uid("expunge", uids)
        else:  # removes every message marked \Deleted, which is what the flag asks for
            self._ok(await self._wire(self.client.expunge(), "EXPUNGE"), "EXPUNGE")

    async def trash(self) -> str | None:
        """The folder the server marks ``\\Trash`` (RFC 6154), if any."""
        resp = await self._wire(self.client.list('""', "*"), "LIST")
        for line in self._ok(resp, "LIST").lines:
            match = re.match(rb'\(([^)]*)\) (?:"[^"]*"|NIL) (.+)$', bytes(line))
            if match and b"\\trash" in match[1].lower():
                name = match[2].decode(errors="replace")
                return name[1:-1].replace('\\"', '"') if name.startswith('"') else name
        return None

    async def idle(self, renew: float) -> Any:
        """IDLE started: the task that ends when it does; ``push`` reads what comes."""
        if self.lost:
            raise TransientError("connection lost", service=self.service)
        return await self._wire(self.client.idle_start(timeout=renew), "IDLE")

    async def push(self, within: float) -> list[bytes] | None:
        """The next lines pushed in IDLE; None when it is time to renew it."""
        try:
            lines: list[bytes] = await self.client.wait_server_push(timeout=within)
        except TimeoutError:
            raise TransientError("IDLE not renewed in time", service=self.service) from None
        if lines is LOST or self.lost:
            raise TransientError("connection lost", service=self.service)
        return None if lines == STOP_WAIT_SERVER_PUSH else lines

    async def idle_done(self, idle: Any) -> None:
        self.client.idle_done()
        await self._wire(asyncio.wait_for(idle, self.account.timeout.total_seconds()), "DONE")

    async def logout(self) -> None:
        try:
            if not self.lost:
                await asyncio.wait_for(self.client.logout(), 2.0)
        except (aioimaplib.AioImapException, OSError, TimeoutError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        protocol = self.client.protocol if self.client is not None else None
        if protocol is not None and protocol.transport is not None:
            # abort, not close: a TLS close waits for the peer's close_notify, and the socket
            # under it stays open (a ResourceWarning) when the peer is gone or slow
            protocol.transport.abort()
        if self.client is not None and not self.client._client_task.done():
            self.client._client_task.cancel()

    def _ok(self, resp: Any, what: str) -> Any:
        if resp.result == "OK":
            return resp
        said = _said(resp.lines)
        if "TRYCREATE" in said or "NONEXISTENT" in said or "doesn't exist" in said:
            raise PermanentError(f"{what}: no such folder on the server (it said: {said})",
                                 service=self.service)  # fmt: skip
        raise PermanentError(f"{what} refused: {said}", service=self.service)

    async def _wire(self, step: Awaitable[T], what: str, *, quiet: bool = False) -> T:
        """``step``, its transport failures as TransientError (without the library's words
        when ``quiet``: they may hold the command, and a login's holds the password)."""
        try:
            return await self._unless_lost(step)
        except ssl.SSLCertVerificationError as err:
            raise PermanentError(
                f"{self.account.host}: the certificate is not trusted ({err.verify_message}); "
                "give the server a certificate that verifies, or write tls_verify: false "
                "to accept any", service=self.service,
            ) from None  # fmt: skip
        except RemoteError:
            raise
        except (OSError, TimeoutError, aioimaplib.AioImapException) as err:
            self.lost = True
            shown = type(err).__name__ if quiet else f"{type(err).__name__}: {err}"
            where = f"{self.account.host}:{self.account.imap_port}"
            raise TransientError(f"{what} ({where}): {shown}", service=self.service) from None

    async def _unless_lost(self, step: Awaitable[T]) -> T:
        """aioimaplib leaves a command waiting for its timeout when the connection drops
        under it; here it ends when the connection does."""
        task = asyncio.ensure_future(step)
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        raise ConnectionResetError("the connection was closed")


class KeptConnection:
    """One connection for an account's polls, details and actions, one at a time; opened
    when needed, and again when it died or sat unused so long that a NAT may have dropped
    it. A command failing on a connection kept from before is retried once on a new one."""

    def __init__(self, account: ImapAccount, service: str) -> None:
        self.account, self.service = account, service
        self._conn: ImapConnection | None = None
        self._used = 0.0
        self._lock = asyncio.Lock()

    async def run(self, step: Callable[[ImapConnection], Awaitable[T]]) -> T:
        async with self._lock:
            for attempt in (1, 2):
                conn, fresh = await self._connection()
                try:
                    result = await step(conn)
                except TransientError:
                    await self._drop()
                    if fresh or attempt == 2:
                        raise
                    continue
                except BaseException:
                    if conn.lost:
                        await self._drop()
                    raise
                self._used = time.monotonic()
                return result
        raise AssertionError("unreachable")

    async def _connection(self) -> tuple[ImapConnection, bool]:
        """The connection, and whether it is new (a failure on it is not a stale one's)."""
        conn = self._conn
        if conn is not None and not conn.lost and time.monotonic() - self._used < KEEP:
            return conn, False
        await self._drop()
        self._conn = await ImapConnection.open(self.account, self.service)
        return self._conn, True

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.logout()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()


def tls_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _said(lines: list[Any]) -> str:
    """The server's words in an answer (its last line, where the status text is)."""
    text = [bytes(line).decode(errors="replace") for line in lines if isinstance(line, bytes)]
    return text[-1].strip() if text else ""
