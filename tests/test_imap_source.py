"""The IMAP source against a real Dovecot (tests/servers/dovecot.py): mail is delivered by
APPEND with the standard library's imaplib (not the code under test), and what the source
did is read back from the server the same way."""

from __future__ import annotations

import asyncio
import imaplib
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import load, running
from bot.errors import AuthError, ConfigErrors, GoneError, PermanentError, TransientError
from bot.http import Limiters
from bot.sim.webhook import HookReceiver
from bot.sources import imapmail
from bot.sources.imap import ImapAccount, ImapSource
from tests.servers.dovecot import PASSWORD, Dovecot, running_dovecot


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


class Box:
    """One user's mailbox, seen through imaplib (blocking; run in a thread)."""

    def __init__(self, server: Dovecot, user: str) -> None:
        self.server, self.user = server, user

    def _run(self, fn: Any) -> Any:
        conn = imaplib.IMAP4("127.0.0.1", self.server.ports["plain"])
        try:
            conn.login(self.user, PASSWORD)
            return fn(conn)
        finally:
            conn.logout()

    async def append(self, message: bytes | EmailMessage, folder: str = "INBOX") -> int:
        data = message if isinstance(message, bytes) else message.as_bytes()

        def append(conn: imaplib.IMAP4) -> int:
            status, answer = conn.append(folder, None, None, data)
            assert status == "OK", answer
            return int(answer[0].split()[2].rstrip(b"]"))  # [APPENDUID validity uid]

        return int(await asyncio.to_thread(self._run, append))

    async def flags(self, folder: str = "INBOX") -> dict[int, str]:
        """UID → FLAGS of every message in ``folder``."""

        def read(conn: imaplib.IMAP4) -> dict[int, str]:
            conn.select(folder)
            _, lines = conn.uid("FETCH", "1:*", "(UID FLAGS)")
            found = {}
            for line in lines:
                if isinstance(line, bytes) and b"UID" in line:
                    words = line.decode().replace("(", " ").replace(")", " ").split()
                    found[int(words[words.index("UID") + 1])] = line.decode()
            return found

        return dict(await asyncio.to_thread(self._run, read))

    async def command(self, name: str, *args: str) -> None:
        await asyncio.to_thread(self._run, lambda conn: getattr(conn, name)(*args))


@pytest.fixture
def box(dovecot: Dovecot) -> Box:
    return Box(dovecot, dovecot.new_user())


def account(box: Box, **overrides: Any) -> ImapAccount:
    values = {"type": "imap", "host": "127.0.0.1", "port": box.server.ports["plain"],
              "tls": "none", "username": box.user, "password": PASSWORD, "timeout": "5s",
              **overrides}  # fmt: skip
    return ImapAccount.model_validate(values)


@pytest.fixture
async def source(box: Box, session: aiohttp.ClientSession) -> AsyncIterator[ImapSource]:
    src = ImapSource("home", account(box, folders=["INBOX", "Lists/alerts"]), session, Limiters())
    yield src
    await src.close()


def mail(subject: str = "Hello", text: str | None = "Hi there", **headers: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "Alice <alice@example.org>", "bob@example.org", subject
    for name, value in headers.items():
        m[name.replace("_", "-")] = value
    if text is not None:
        m.set_content(text)
    return m


def multipart() -> EmailMessage:
    m = mail("Invoice", "See https://example.org/pay?id=7 for the invoice.")
    m.add_alternative('<p>See <a href="https://example.org/pay?id=7">the invoice</a></p>',
                      subtype="html")  # fmt: skip
    m.add_attachment(b"%PDF-1.4 " * 100, maintype="application", subtype="pdf",
                     filename="invoice.pdf")  # fmt: skip
    return m


# --- polling and detail --------------------------------------------------------------


async def test_a_poll_lists_new_mail_and_the_detail_never_marks_it_seen(
    source: ImapSource, box: Box
) -> None:
    first = await source.poll("INBOX", None)
    assert first.items == [] and first.cursor is not None
    uid = await box.append(multipart())
    await box.append(b"From: =?iso-8859-1?q?J=F6rg?= <jorg@example.org>\r\n"
                     b"Subject: =?utf-8?b?w5xiZXIgZGVuIFBsYW4=?=\r\nList-Id: <alerts.example.org>\r\n"
                     b"X-Priority: 1\r\nMessage-ID: <2@example.org>\r\n\r\nplain\r\n")  # fmt: skip
    await box.append(b"From: x@example.org\r\nSubject: odd\r\nContent-Type: text/plain; "
                     b"charset=x-no-such-charset\r\n\r\ncaf\xe9 ok\r\n")  # fmt: skip
    result = await source.poll("INBOX", first.cursor)
    invoice, umlaut, odd = result.items
    assert (invoice.kind, invoice.feed, invoice.upstream, invoice.complete) == (
        "email", "INBOX", "imap", False)  # fmt: skip
    assert (invoice.sender, invoice.recipient, invoice.subject) == (
        "alice@example.org", "bob@example.org", "Invoice")  # fmt: skip
    assert invoice.unread is True and invoice.url is None and invoice.raw["uid"] == uid
    assert umlaut.subject == "Über den Plan"
    assert umlaut.raw["headers"]["list-id"] == "<alerts.example.org>"
    assert umlaut.raw["headers"]["x-priority"] == "1"
    assert umlaut.raw["headers"]["from"] == "Jörg <jorg@example.org>"
    detail = await source.complete(invoice)
    assert detail.complete and detail.text.startswith("See https://example.org/pay?id=7")
    assert detail.html is not None and "<a href" in detail.html
    assert [(a.name, a.content_type, a.size) for a in detail.attachments] == [
        ("invoice.pdf", "application/pdf", 900)]  # fmt: skip
    assert detail.links == ("https://example.org/pay?id=7",)
    assert (await source.complete(odd)).text.strip() == "caf\ufffd ok"
    assert "\\Seen" not in (await box.flags())[uid]
    assert (await source.poll("INBOX", result.cursor)).items == []
    later = await box.append(mail("later"))
    assert [i.raw["uid"] for i in (await source.poll("INBOX", result.cursor)).items] == [later]


async def test_a_first_poll_lists_what_is_there_and_html_only_mail_gets_text(
    source: ImapSource, box: Box
) -> None:
    html = mail("html only", None)
    html.set_content("<p>Code <b>4242</b></p>", subtype="html")
    await box.append(html)
    (item,) = (await source.poll("INBOX", None)).items
    detail = await source.complete(item)
    assert "Code" in detail.text and "4242" in detail.text and "<b>" not in detail.text


async def test_a_ten_megabyte_mail_is_listed_by_its_header_and_read_whole_on_demand(
    source: ImapSource, box: Box
) -> None:
    big = mail("big")
    big.add_attachment(b"\x00\x01" * 5_000_000, maintype="application", subtype="octet-stream",
                       filename="dump.bin")  # fmt: skip
    cursor = (await source.poll("INBOX", None)).cursor
    await box.append(big)
    started = time.monotonic()
    (item,) = (await source.poll("INBOX", cursor)).items
    listed = time.monotonic() - started
    assert item.raw["size"] > 13_000_000  # base64
    detail = await source.complete(item)
    assert [(a.name, a.size) for a in detail.attachments] == [("dump.bin", 10_000_000)]
    assert listed < 2.0, f"listing took {listed:.1f}s: the body was fetched with the header?"
    files = await source.files(item, 20_000_000)
    assert [len(f.data) for f in files] == [10_000_000]
    assert await source.files(item, 1000) == []


async def test_a_big_delivery_is_listed_over_several_polls_in_order(
    source: ImapSource, box: Box
) -> None:
    cursor = (await source.poll("INBOX", None)).cursor
    uids = [await box.append(mail(f"m{n}")) for n in range(5)]
    source.max_per_poll = 2
    seen = []
    for _ in range(4):
        result = await source.poll("INBOX", cursor)
        seen.append([i.raw["uid"] for i in result.items])
        cursor = result.cursor
    assert seen == [uids[:2], uids[2:4], uids[4:], []]


async def test_a_changed_uidvalidity_rebaselines_without_listing_the_folder(
    source: ImapSource, box: Box, caplog: pytest.LogCaptureFixture
) -> None:
    await box.command("create", "Lists/alerts")
    await box.append(mail("one"), "Lists/alerts")
    cursor = (await source.poll("Lists/alerts", None)).cursor
    await box.command("delete", "Lists/alerts")
    await box.command("create", "Lists/alerts")
    for n in range(3):
        await box.append(mail(f"old {n}"), "Lists/alerts")
    rebased = await source.poll("Lists/alerts", cursor)
    assert rebased.items == [] and rebased.cursor != cursor
    assert [r.message for r in caplog.records].count(
        "UIDVALIDITY changed: folder re-baselined, its mail not notified") == 1  # fmt: skip
    await box.append(mail("new"), "Lists/alerts")
    assert [i.subject for i in (await source.poll("Lists/alerts", rebased.cursor)).items] == ["new"]


# --- actions -------------------------------------------------------------------------


async def listed(source: ImapSource, box: Box, *subjects: str) -> list[Any]:
    cursor = (await source.poll("INBOX", None)).cursor
    for s in subjects:
        await box.append(mail(s))
    return list((await source.poll("INBOX", cursor)).items)


async def test_flag_actions_are_batched_and_seen_on_the_server(
    source: ImapSource, box: Box
) -> None:
    a, b, c = await listed(source, box, "a", "b", "c")
    await source.act("mark_read", {}, [a, b])
    flags = await box.flags()
    assert ["\\Seen" in flags[i.raw["uid"]] for i in (a, b, c)] == [True, True, False]
    await source.act("mark_unread", {}, [b])
    await source.act("flag", {}, [c])
    flags = await box.flags()
    assert "\\Seen" not in flags[b.raw["uid"]] and "\\Flagged" in flags[c.raw["uid"]]


async def test_delete_moves_to_trash_move_moves_and_expunge_removes(
    source: ImapSource, box: Box, session: aiohttp.ClientSession
) -> None:
    a, b, c = await listed(source, box, "a", "b", "c")
    await box.command("create", "Archive")
    await source.act("delete", {}, [a])
    await source.act("move", {"to": "Archive"}, [b])
    assert list(await box.flags()) == [c.raw["uid"]]
    assert len(await box.flags("Trash")) == 1 and len(await box.flags("Archive")) == 1
    with pytest.raises(PermanentError, match="no such folder"):
        await source.act("move", {"to": "Nowhere"}, [c])
    expunging = ImapSource("home", account(box, delete={"expunge": True}), session, Limiters())
    try:
        await expunging.act("delete", {}, [c])
        with pytest.raises(GoneError):
            await expunging.complete(c)
    finally:
        await expunging.close()
    assert await box.flags() == {} and len(await box.flags("Trash")) == 1


# --- errors and TLS ------------------------------------------------------------------


async def test_a_wrong_password_is_one_clear_auth_error_without_the_password(
    box: Box, session: aiohttp.ClientSession
) -> None:
    # Dovecot delays logins from an address after a failed one (up to 15 s): a long timeout
    src = ImapSource("home", account(box, password="not-the-password", timeout="20s"), session,
                     Limiters())  # fmt: skip
    with pytest.raises(AuthError) as err:
        await src.poll("INBOX", None)
    assert "AUTHENTICATIONFAILED" in str(err.value) and box.user in str(err.value)
    assert "not-the-password" not in str(err.value) and PASSWORD not in str(err.value)
    await src.close()


async def test_a_closed_port_is_transient(box: Box, session: aiohttp.ClientSession) -> None:
    from tests.conftest import free_port

    src = ImapSource("home", account(box, port=free_port()), session, Limiters())
    with pytest.raises(TransientError, match="connect"):
        await src.poll("INBOX", None)


async def test_a_self_signed_certificate_is_refused_unless_tls_verify_is_false(
    box: Box, session: aiohttp.ClientSession
) -> None:
    tls = {"tls": "tls", "port": box.server.ports["tls"]}
    strict = ImapSource("home", account(box, **tls), session, Limiters())
    with pytest.raises(PermanentError, match="tls_verify: false"):
        await strict.poll("INBOX", None)
    for settings in (tls, {"tls": "starttls"}):
        lax = ImapSource("home", account(box, **settings, tls_verify=False), session, Limiters())
        assert (await lax.poll("INBOX", None)).cursor
        await lax.close()


def write_config(tmp: Path, hook_url: str, box: Box, extra: str = "") -> Path:
    (tmp / "secret").write_text(PASSWORD + "\n")
    (tmp / "templates").mkdir(exist_ok=True)
    (tmp / "templates" / "email.j2").write_text(
        "{% block title %}{{ item.subject }}{% endblock %}"
        "{% block message %}{{ item.text | truncate(60) }}{% endblock %}"
    )
    (tmp / "rules.yaml").write_text(
        "- name: new-mail\n  when: {kind: email, feed: INBOX}\n"
        "  notify: [{sink: hooks, template: email}]\n  then: [mark_read]\n"
        "- name: alerts\n  when: {feed: Lists/alerts}\n  then: [{move: {to: Archive}}]\n"
    )
    config = tmp / "inboxbot.yaml"
    config.write_text(f"""\
accounts:
  home:
    type: imap
    host: 127.0.0.1
    port: {box.server.ports["plain"]}
    tls: none
    username: {box.user}
    password: ${{file:{tmp / "secret"}}}
    folders: [INBOX, Lists/alerts]
    feeds: {{INBOX: {{every: 5s}}}}
{extra}sinks:
  hooks: {{type: webhook, url: "{hook_url}"}}
rules: [rules.yaml]
templates: [templates]
backlog: notify
""")  # fmt: skip
    return config


def test_folders_are_the_feeds_and_check_warns_of_tls_verify_false(
    tmp_path: Path, box: Box
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/hook", box)
    config.write_text(
        config.read_text().replace("tls: none", "tls: starttls\n    tls_verify: false")
    )
    loaded = load(config)
    assert [(f.key, f.every.total_seconds()) for f in loaded.feeds()] == [
        ("home/INBOX", 5.0), ("home/Lists/alerts", 60.0)]  # fmt: skip
    assert any("tls_verify" in str(w) and "any certificate" in str(w)
               for w in loaded.config.warnings)  # fmt: skip
    bad = write_config(tmp_path, "http://x/hook", box).read_text()
    for wrong, message in [("feeds: {INBOX: {every: 5s}}", "'Spam' is not one of folders"),
                           ("tls: none", "tls: none sends the password in clear")]:  # fmt: skip
        text = bad.replace(wrong, wrong.replace("INBOX", "Spam")) if "feeds" in wrong else bad
        if "tls" in wrong:
            text = bad.replace("host: 127.0.0.1", "host: mail.example.org")
        (tmp_path / "inboxbot.yaml").write_text(text)
        with pytest.raises(ConfigErrors, match=message):
            load(tmp_path / "inboxbot.yaml")


async def test_through_the_pipeline_mail_is_notified_marked_read_and_moved(
    tmp_path: Path, box: Box, hook: HookReceiver
) -> None:
    await box.command("create", "Lists/alerts")
    await box.command("create", "Archive")
    loaded = load(write_config(tmp_path, hook.url, box))
    feeds = {f.name: f for f in loaded.feeds()}
    async with running(loaded, tmp_path / "state.db") as pipe:
        for feed in feeds.values():
            await pipe.poll(feed)
        uid = await box.append(multipart())
        await box.append(mail("alert"), "Lists/alerts")
        for feed in [*feeds.values(), *feeds.values()]:
            await pipe.poll(feed)
        await pipe.flush()
    assert [(b["title"], b["feed"]) for b in hook.received] == [("Invoice", "INBOX")]
    assert hook.received[0]["message"].startswith("See https://example.org/pay")
    assert "\\Seen" in (await box.flags())[uid]
    assert await box.flags("Lists/alerts") == {} and len(await box.flags("Archive")) == 1


# --- IDLE ----------------------------------------------------------------------------


class Watched:
    """``watch`` in a task, its wakes and reports recorded with their times."""

    def __init__(self, source: ImapSource, feed: str = "INBOX") -> None:
        self.wakes: list[float] = []
        self.reports: list[tuple[bool, str]] = []
        self.task = asyncio.create_task(
            source.watch(feed, lambda: self.wakes.append(time.monotonic()),
                         lambda up, what: self.reports.append((up, what)))
        )  # fmt: skip

    async def until(self, check: Any, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            assert not self.task.done(), self.task
            assert time.monotonic() < deadline, f"reports {self.reports}, wakes {self.wakes}"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Cancelled, the watch ends at once (a stopping daemon is not held by its IDLE)."""
        started = time.monotonic()
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        assert time.monotonic() - started < 0.5


async def test_idle_wakes_the_feed_within_two_seconds_of_new_mail(
    source: ImapSource, box: Box
) -> None:
    assert source.pushes("INBOX")
    source.idle_renew = 1.0  # renewed every second: waking must survive renewals
    cursor = (await source.poll("INBOX", None)).cursor
    watched = Watched(source)
    try:
        await watched.until(lambda: watched.reports == [(True, "IDLE on INBOX")] and watched.wakes)
        await asyncio.sleep(2.5)  # two renewals, that neither wake nor reconnect
        assert len(watched.wakes) == 1 and len(watched.reports) == 1
        sent = time.monotonic()
        await box.append(mail("pushed"))
        await watched.until(lambda: len(watched.wakes) == 2, 2.0)
        assert watched.wakes[1] - sent < 2.0
        assert [i.subject for i in (await source.poll("INBOX", cursor)).items] == ["pushed"]
    finally:
        await watched.stop()


async def test_a_dovecot_restart_during_idle_reconnects_and_loses_nothing(
    source: ImapSource, box: Box, dovecot: Dovecot
) -> None:
    cursor = (await source.poll("INBOX", None)).cursor
    watched = Watched(source)
    try:
        await watched.until(lambda: watched.reports == [(True, "IDLE on INBOX")])
        first = await box.append(mail("before the restart"))
        dovecot.stop()
        dovecot.start()
        second = await box.append(mail("while reconnecting"))
        await watched.until(lambda: watched.reports.count((True, "IDLE on INBOX")) == 2, 15)
        assert any(not up for up, _ in watched.reports)
        result = await source.poll("INBOX", cursor)  # the kept connection died too
        assert [i.raw["uid"] for i in result.items] == [first, second]
        assert (await source.poll("INBOX", result.cursor)).items == []
    finally:
        await watched.stop()


async def test_idle_false_does_not_push_and_a_wrong_password_is_reported_not_raised(
    box: Box, session: aiohttp.ClientSession
) -> None:
    assert not ImapSource("h", account(box, idle=False), session, Limiters()).pushes("INBOX")
    wrong = ImapSource("h", account(box, password="nope-nope", timeout="20s"), session, Limiters())
    watched = Watched(wrong)
    try:
        await watched.until(lambda: watched.reports, 25.0)
        ((up, why),) = watched.reports
        assert not up and "AUTHENTICATIONFAILED" in why and "nope-nope" not in why
        await asyncio.sleep(0.5)
        assert len(watched.reports) == 1  # not retried in a tight loop
    finally:
        await watched.stop()


@pytest.fixture(scope="module")
def old_dovecot() -> Iterator[Dovecot]:
    """A server that announces neither IDLE nor MOVE."""
    with running_dovecot("imap_capability = IMAP4rev1 LITERAL+ UIDPLUS SPECIAL-USE") as server:
        yield server


async def test_without_idle_watch_says_so_once_and_without_move_actions_copy_and_expunge(
    old_dovecot: Dovecot, session: aiohttp.ClientSession
) -> None:
    old = Box(old_dovecot, old_dovecot.new_user())
    src = ImapSource("home", account(old, every="2m"), session, Limiters())
    watched = Watched(src)
    try:
        await watched.until(lambda: watched.reports)
        await asyncio.sleep(0.3)
        assert watched.reports == [(False, "server has no IDLE: polling every 120s")]
        assert not watched.task.done()
        a, b = await listed(src, old, "a", "b")
        await old.command("create", "Archive")
        await src.act("move", {"to": "Archive"}, [a])
        await src.act("delete", {}, [b])
        assert await old.flags() == {}
        assert len(await old.flags("Archive")) == 1 and len(await old.flags("Trash")) == 1
    finally:
        await watched.stop()
        await src.close()


def test_move_needs_a_folder_and_takes_nothing_else(tmp_path: Path, box: Box) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/hook", box)
    for then, message in [("[move]", "move needs a folder"),
                          ("[{move: {to: A, folder: B}}]", "move.folder: unknown argument; allowed: after, to")]:  # fmt: skip
        (tmp_path / "rules.yaml").write_text(
            f"- name: r\n  when: {{kind: email}}\n  then: {then}\n"
        )
        with pytest.raises(ConfigErrors, match=message):
            load(config)


# --- the pure parts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("uids", "text"), [([3, 1, 2, 7, 9, 8], "1:3,7:9"), ([5], "5"), ([1, 3, 3], "1,3")]
)
def test_uid_sets_are_ranges(uids: list[int], text: str) -> None:
    assert imapmail.uid_set(uids) == text


@pytest.mark.parametrize(
    ("name", "wire"),
    [("INBOX", '"INBOX"'), ("Entwürfe", '"Entw&APw-rfe"'), ("R&D", '"R&-D"'),
     ('My "box"', '"My \\"box\\""'), ("日本語", '"&ZeVnLIqe-"')],
)  # fmt: skip
def test_folder_names_are_quoted_in_modified_utf7(name: str, wire: str) -> None:
    assert imapmail.folder_name(name) == wire


def test_a_fetch_answer_is_read_whatever_the_order_of_its_parts() -> None:
    lines = [b'4 FETCH (FLAGS (\\Seen) RFC822.SIZE 12 BODY[HEADER] {9}', bytearray(b"Subject: x"),
             b' UID 40 INTERNALDATE "04-Dec-2026 20:40:56 +0100")', b"5 FETCH (FLAGS (\\Flagged))",
             b"Fetch completed."]  # fmt: skip
    (one,) = imapmail.fetched(lines)
    assert (one.uid, one.flags, one.size, one.data) == (40, ("\\Seen",), 12, b"Subject: x")
    assert one.received is not None and one.received.isoformat() == "2026-12-04T19:40:56+00:00"
