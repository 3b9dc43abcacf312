"""IMAP IDLE (RFC 2177) on one folder: the push channel of an IMAP feed.

Its own connection, SELECTed on the folder, in IDLE: an EXISTS, RECENT, FETCH or EXPUNGE
the server pushes wakes the feed's poll, and so does every (re)connect (the poll catches up
by UID on what came meanwhile). IDLE is renewed every 25 minutes, before servers end it at
29 and before a NAT forgets the connection; a renewal that gets no answer counts as a drop.
A dropped connection is retried with backoff (1 s doubling to 30 s), refused credentials
(or certificate, or a folder that is not there) every 15 minutes; a server without IDLE
is said once, and then the feed is only polled.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.errors import AuthError, PermanentError, RemoteError
from bot.logs import fields
from bot.sources.base import Report, Wake
from bot.sources.imapconn import PUSHED, ImapConnection

if TYPE_CHECKING:
    from bot.sources.imap import ImapAccount

log = logging.getLogger("inboxbot.sources.imap")
RENEW = 25 * 60.0
BACKOFF_CAP = 30.0
AUTH_RETRY = 900.0


@dataclass(frozen=True)
class Watching:
    wake: Wake
    report: Report
    every: timedelta  # the feed's poll interval, said when there is no IDLE
    renew: float = RENEW


async def watch_folder(account: ImapAccount, service: str, folder: str, w: Watching) -> None:
    """Until cancelled: IDLE on ``folder``, reconnecting on its own; never raises else."""
    failures = 0
    where = f"{service}/{folder}"
    while True:
        conn: ImapConnection | None = None
        try:
            conn = opened = await ImapConnection.open(account, service)
            if not opened.has("IDLE"):
                w.report(False, f"server has no IDLE: polling every {w.every.total_seconds():g}s")
                log.warning("no IDLE: polled only", extra=fields(feed=where))
                conn = None
                await opened.logout()
                await asyncio.Event().wait()  # nothing to watch; the feed is polled
            await opened.select(folder)
            idle = await opened.idle(w.renew)
            w.report(True, f"IDLE on {folder}")
            log.info("IDLE", extra=fields(feed=where, reconnects=failures))
            failures = 0
            w.wake()
            await _idle(opened, idle, w)
        except (AuthError, PermanentError) as err:  # a password, a certificate, a folder
            wait = AUTH_RETRY
            _lost(w, where, err, failures)
        except RemoteError as err:
            failures += 1
            wait = min(BACKOFF_CAP, 0.5 * 2.0**failures)
            _lost(w, where, err, failures)
        except Exception as err:  # a library bug must not end the watch
            failures += 1
            wait = BACKOFF_CAP
            _lost(w, where, RemoteError(f"{type(err).__name__}: {err}", service=service), failures)
        finally:
            if conn is not None:  # a LOGOUT would wait for the IDLE: a stop is not held up
                conn.close()
        await asyncio.sleep(wait)


async def _idle(conn: ImapConnection, idle: object, w: Watching) -> None:
    """Wake on what the server pushes; renew IDLE on time. Returns only by raising."""
    while True:
        while (lines := await conn.push(w.renew + 60.0)) is not None:
            if any(PUSHED.match(bytes(line)) for line in lines):
                w.wake()
        await conn.idle_done(idle)
        idle = await conn.idle(w.renew)  # what came between the two is told at its start


def _lost(w: Watching, where: str, err: RemoteError, failures: int) -> None:
    w.report(False, str(err))
    if failures <= 1:  # said once a drop, not at every retry
        log.warning("IDLE lost", extra=fields(feed=where, error=str(err)))
