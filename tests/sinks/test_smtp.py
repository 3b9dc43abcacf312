"""The smtp sink against a real SMTP server: aiosmtpd in-process on loopback, plain, with
STARTTLS and login, and with implicit TLS (a self-signed certificate made by openssl)."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from bot.errors import AuthError, PermanentError, TransientError
from bot.item import File
from bot.sinks.base import Notification
from bot.sinks.smtp import SmtpConfig, SmtpSink
from tests.conftest import Setup, free_port
from tests.sinks.shared import FEED, deliver_round

PASSWORD = "s3cret-smtp-pass"
INJECTION = "*bold* _x_ <b>x</b> @here @all [link](http://evil) `code`"


# --- the server -----------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler that keeps every accepted mail, parsed, and answers DATA from
    ``answers`` first (e.g. ``["451 4.3.0 try later"]``) when any are queued."""

    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []
        self.raw: list[bytes] = []
        self.envelopes: list[tuple[str, list[str], bool, bool]] = []  # from, to, tls, auth
        self.answers: list[str] = []

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        if self.answers:
            return self.answers.pop(0)
        assert isinstance(envelope.content, bytes)
        self.raw.append(envelope.content)
        mail = message_from_bytes(envelope.content.replace(b"\r\n", b"\n"), policy=policy.default)
        assert isinstance(mail, EmailMessage)
        self.mails.append(mail)
        sender = str(envelope.mail_from)
        implicit = server.transport is not None and server.transport.get_extra_info("ssl_object")
        tls, auth = bool(session.ssl or implicit), bool(session.authenticated)
        self.envelopes.append((sender, list(envelope.rcpt_tos), tls, auth))
        return "250 2.0.0 OK"

    async def handle_RCPT(self, server: SmtpServer, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:  # fmt: skip
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"


def login(server: SmtpServer, session: Session, envelope: Envelope, mechanism: str,
          auth_data: Any) -> AuthResult:  # fmt: skip
    good = isinstance(auth_data, LoginPassword) and auth_data.login == b"bot"
    if good and auth_data.password == PASSWORD.encode():
        return AuthResult(success=True)
    return AuthResult(success=False, handled=False)  # else the client waits forever


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the TLS tests")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


def server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*cert)
    return context


@asynccontextmanager
async def smtpd(box: Mailbox, port: int | None = None, **kwargs: Any) -> AsyncIterator[int]:
    """An aiosmtpd server on ``port`` (or a free one) for as long as the block runs."""
    controller = Controller(box, hostname="127.0.0.1", port=port or free_port(), **kwargs)
    await asyncio.to_thread(controller.start)
    try:
        yield controller.port
    finally:
        await asyncio.to_thread(controller.stop)


def starttls_server(cert: tuple[Path, Path]) -> dict[str, Any]:
    return {"tls_context": server_context(cert), "require_starttls": True,
            "authenticator": login, "auth_required": True}  # fmt: skip


# --- the sink -------------------------------------------------------------------------


def make_sink(session: aiohttp.ClientSession, port: int, **keys: Any) -> SmtpSink:
    values = {"type": "smtp", "host": "127.0.0.1", "port": port, "starttls": False,
              "from": "inboxbot <bot@example.org>", "to": ["alice@example.org"],
              "timeout": 5, **keys}  # fmt: skip
    return SmtpSink("mail", SmtpConfig.model_validate(values), session)


def note(
    nid: str = "0123abcd", title: str = "Hello", message: str = "", **fields: Any
) -> Notification:
    fields.setdefault("priority", "default")
    fields.setdefault("url", None)
    return Notification(id=nid, rule="r", account="inbox", feed="messages", kind="email",
                        item_id="i1", title=title, message=message, **fields)  # fmt: skip


def parts(mail: EmailMessage) -> tuple[str, str | None]:
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None
    return text.get_content(), html.get_content() if html is not None else None


async def test_a_plain_mail_is_read_back_with_both_parts_and_the_html_sanitised(
    session: aiohttp.ClientSession,
) -> None:
    box = Mailbox()
    async with smtpd(box) as port:
        sink = make_sink(session, port)
        message = (f"<p>From <b>bob</b>: {sink.escape(INJECTION)}</p>"
                   '<script>alert(1)</script><p onclick="x()">hi <img src="https://t.example/p.gif">'
                   '<a href="javascript:alert(2)">js</a> <a href="https://ok.example/">ok</a></p>')  # fmt: skip
        url = "https://mail.example/m/1?a=1&b=2"
        await sink.send(note("n-1", title="Invoice <1> & \"co\"\nnext", message=message, url=url,
                             priority="high"))  # fmt: skip
    (mail,) = box.mails
    assert mail["Subject"] == 'Invoice <1> & "co" next'
    assert mail["From"] == "inboxbot <bot@example.org>" and mail["To"] == "alice@example.org"
    assert mail["Message-ID"] == "<n-1@example.org>"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert (mail["X-Priority"], mail["Importance"]) == ("2 (High)", "high")
    assert mail["Date"] and mail.get_content_type() == "multipart/alternative"
    assert box.envelopes == [("bot@example.org", ["alice@example.org"], False, False)]
    text, html = parts(mail)
    assert text.startswith(f"From bob: {INJECTION}") and text.rstrip().endswith(url)
    assert html is not None
    assert "From <b>bob</b>: *bold* _x_ &lt;b&gt;x&lt;/b&gt; @here @all" in html
    assert "<script" not in html and "alert(1)" not in html
    assert "onclick" not in html and "<img" not in html and "javascript:" not in html
    assert '<a href="https://ok.example/" rel="noopener noreferrer">ok</a>' in html
    assert f'<a href="{url.replace("&", "&amp;")}" rel="noopener noreferrer">' in html


async def test_text_format_sends_a_plain_mail(session: aiohttp.ClientSession) -> None:
    box = Mailbox()
    async with smtpd(box) as port:
        sink = make_sink(session, port, format="text")
        await sink.send(note(message=f"line 1\n{sink.escape(INJECTION)}", priority="min"))
    (mail,) = box.mails
    assert mail.get_content_type() == "text/plain" and mail["X-Priority"] == "5 (Lowest)"
    assert parts(mail) == (f"line 1\n{INJECTION}\n", None)


async def test_a_very_long_line_arrives_whole_within_smtps_line_limit(
    session: aiohttp.ClientSession,
) -> None:
    box = Mailbox()
    long_line = "word " * 40_000
    async with smtpd(box) as port:
        await make_sink(session, port, format="text").send(note(message=long_line))
    (mail,) = box.mails
    assert all(len(line) <= 998 for line in box.raw[0].split(b"\r\n"))
    assert parts(mail)[0] == long_line + "\n"


async def test_starttls_with_login(session: aiohttp.ClientSession, cert: tuple[Path, Path]) -> None:
    box = Mailbox()
    async with smtpd(box, **starttls_server(cert)) as port:
        sink = make_sink(session, port, starttls=True, username="bot", password=PASSWORD,
                         ca_file=str(cert[0]))  # fmt: skip
        await sink.send(note(title="over STARTTLS"))
    assert [m["Subject"] for m in box.mails] == ["over STARTTLS"]
    assert box.envelopes[0][2:] == (True, True)  # encrypted and logged in


async def test_implicit_tls(session: aiohttp.ClientSession, cert: tuple[Path, Path]) -> None:
    box = Mailbox()
    async with smtpd(box, ssl_context=server_context(cert)) as port:
        await make_sink(session, port, tls=True, ca_file=str(cert[0])).send(note(title="TLS"))
    assert [m["Subject"] for m in box.mails] == ["TLS"] and box.envelopes[0][2] is True


async def test_a_refused_login_is_an_auth_error_without_the_password(
    session: aiohttp.ClientSession, cert: tuple[Path, Path]
) -> None:
    box = Mailbox()
    async with smtpd(box, **starttls_server(cert)) as port:
        sink = make_sink(session, port, starttls=True, username="bot", password="wrong-" + PASSWORD,
                         ca_file=str(cert[0]))  # fmt: skip
        with pytest.raises(AuthError) as caught:
            await sink.send(note())
    assert str(caught.value).startswith("mail: ") and "535" in str(caught.value)
    assert "username and password" in str(caught.value) and PASSWORD not in str(caught.value)
    assert box.mails == []


async def test_an_untrusted_certificate_is_an_auth_error(
    session: aiohttp.ClientSession, cert: tuple[Path, Path]
) -> None:
    box = Mailbox()
    async with smtpd(box, **starttls_server(cert)) as port:
        sink = make_sink(session, port, starttls=True, username="bot", password=PASSWORD)
        with pytest.raises(AuthError, match=r"certificate refused .*self-signed.*ca_file"):
            await sink.send(note())
        unchecked = make_sink(session, port, starttls=True, username="bot", password=PASSWORD,
                              verify_tls=False)  # fmt: skip
        await unchecked.send(note(title="unchecked"))
    assert [m["Subject"] for m in box.mails] == ["unchecked"]


async def test_a_server_without_starttls_is_an_auth_error(session: aiohttp.ClientSession) -> None:
    async with smtpd(Mailbox()) as port:
        with pytest.raises(AuthError, match="STARTTLS extension not supported"):
            await make_sink(session, port, starttls=True).send(note())


async def test_a_451_is_transient_and_the_retry_goes_through(
    session: aiohttp.ClientSession,
) -> None:
    box = Mailbox()
    box.answers.append("451 4.3.0 Please try again later")
    async with smtpd(box) as port:
        sink = make_sink(session, port)
        with pytest.raises(TransientError, match=r"451 4\.3\.0 Please try again later") as caught:
            await sink.send(note("same"))
        assert caught.value.status == 451 and caught.value.retry_after is None
        await sink.send(note("same"))
    assert [m["Message-ID"] for m in box.mails] == ["<same@example.org>"]


@pytest.mark.parametrize(
    ("answer", "error"),
    [("421 4.7.0 closing", TransientError), ("450 4.2.1 busy", TransientError),
     ("452 4.3.1 storage full", TransientError), ("550 5.7.1 rejected", PermanentError),
     ("553 5.1.8 bad sender", PermanentError), ("554 5.6.0 spam", PermanentError)],
)  # fmt: skip
async def test_smtp_replies_map_to_transient_or_permanent(
    session: aiohttp.ClientSession, answer: str, error: type[Exception]
) -> None:
    box = Mailbox()
    box.answers.append(answer)
    async with smtpd(box) as port:
        with pytest.raises(error, match=re.escape(answer)):
            await make_sink(session, port).send(note())


async def test_a_refused_recipient_is_permanent(session: aiohttp.ClientSession) -> None:
    box = Mailbox()
    async with smtpd(box) as port:
        with pytest.raises(PermanentError, match=r"nobody@example\.org: 550 5\.1\.1"):
            await make_sink(session, port, to="nobody@example.org").send(note())
        await make_sink(session, port, to=["nobody@example.org", "alice@example.org"]).send(note())
    assert box.envelopes[0][1] == ["alice@example.org"]  # the others still get it


async def test_no_server_and_a_silent_server_are_transient(session: aiohttp.ClientSession) -> None:
    with pytest.raises(TransientError, match=r"127\.0\.0\.1"):
        await make_sink(session, free_port()).send(note())

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never greets
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TransientError, match="Timeout"):
            await make_sink(session, port, timeout="200ms").send(note())
    finally:
        server.close()
        await server.wait_closed()


async def test_attachments_within_the_cap_and_a_note_for_the_others(
    session: aiohttp.ClientSession,
) -> None:
    box = Mailbox()
    files = [File("notes.txt", "text/plain", b"hello\n"), File("pic.png", "image/png", b"\x89PNG" * 100),
             File("big.bin", "application/octet-stream", b"x" * 900), File("odd", "weird", b"?")]  # fmt: skip
    listed = [{"name": f.name, "content_type": f.content_type, "size": len(f.data)} for f in files]
    listed.append({"name": "huge.zip", "content_type": "application/zip", "size": 12_000_000})
    n = note(message="<p>see attached</p>", options={"attach": True}, item={"attachments": listed})
    async with smtpd(box) as port:
        sink = make_sink(session, port, max_attachment_size=500)
        assert sink.max_file_size == 500
        await sink.send(n, files)
    (mail,) = box.mails
    assert mail.get_content_type() == "multipart/mixed"
    got = {a.get_filename(): (a.get_content_type(), a.get_content())
           for a in mail.iter_attachments()}  # fmt: skip
    assert got == {"notes.txt": ("text/plain", "hello\n"), "pic.png": ("image/png", b"\x89PNG" * 100),
                   "odd": ("application/octet-stream", b"?")}  # fmt: skip
    text, html = parts(mail)
    assert "Not attached (limit 500 B): big.bin (900 B), huge.zip (12.0 MB)" in text
    assert html is not None and "big.bin (900 B), huge.zip (12.0 MB)" in html


def test_the_config() -> None:
    config = SmtpConfig.model_validate({"type": "smtp", "host": "smtp.example.org", "to": "a@b.org",
                                        "from": "bot@b.org", "max_attachment_size": "10MiB"})  # fmt: skip
    assert (config.from_, config.to, config.server_port()) == ("bot@b.org", ["a@b.org"], 587)
    assert config.max_attachment_size == 10 * 1024 * 1024 and config.format == "html"
    implicit = config.model_copy(update={"tls": True})
    assert implicit.server_port() == 465
    base = {"type": "smtp", "host": "h.org", "from": "bot@b.org", "to": ["a@b.org"]}
    with pytest.raises(ValueError, match="username and password go together"):
        SmtpConfig.model_validate({**base, "username": "bot"})
    with pytest.raises(ValueError, match="not an e-mail address"):
        SmtpConfig.model_validate({**base, "to": ["alice"]})
    with pytest.raises(ValueError, match="host name only"):
        SmtpConfig.model_validate({**base, "host": "h.org:587"})


# --- the pipeline: an outage longer than the retry schedule ---------------------------

TO_MAIL = """\
- name: to-mail
  when: {kind: email}
  notify: [{sink: mail, template: email}]
"""


async def test_an_outage_keeps_the_mail_until_the_server_is_back(setup: Setup) -> None:
    box, port = Mailbox(), free_port()
    sinks = (f'  mail: {{type: smtp, host: 127.0.0.1, port: {port}, starttls: false, '
             f'from: "bot@example.org", to: [alice@example.org], timeout: 5s}}\n')  # fmt: skip
    setup.sim.add_message(setup.account, sender="bob@example.com", subject="Outage",
                          text_body="Body of Outage")  # fmt: skip
    async with setup.pipeline(TO_MAIL, sinks=sinks) as pipe:
        async with smtpd(box, port):
            pass  # the server was there once, and is gone now
        for hours in range(1, 6):
            await deliver_round(pipe, hours)
            assert pipe.store.outbox_depth() == 1 and box.mails == []
        (step,) = pipe.store.pending_steps("deliver")
        assert step.attempts >= 5
        async with smtpd(box, port):
            await deliver_round(pipe, 6)
            await deliver_round(pipe, 7)
            assert pipe.store.outbox_depth() == 0
    assert [(m["Subject"], parts(m)[0]) for m in box.mails] == [("Outage", "Body of Outage\n")]


@pytest.fixture(autouse=True)
def _quiet_aiosmtpd(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level("ERROR", logger="mail.log")  # its own deprecation chatter on logins
    yield


ATTACH = """\
- name: to-mail
  when: {kind: email}
  notify: [{sink: mail, template: email, options: {attach: true}}]
"""


async def test_attach_true_sends_the_mails_attachments_through_the_pipeline(setup: Setup) -> None:
    box, port = Mailbox(), free_port()
    sinks = (f'  mail: {{type: smtp, host: 127.0.0.1, port: {port}, starttls: false, '
             f'from: "bot@example.org", to: [alice@example.org], max_attachment_size: 100}}\n')  # fmt: skip
    files = [("invoice.pdf", "application/pdf", b"%PDF-1.4 tiny"),
             ("big.bin", "application/octet-stream", b"x" * 500)]  # fmt: skip
    setup.sim.add_message(setup.account, sender="bob@example.com", subject="Invoice",
                          text_body="see attached", attachments=files)  # fmt: skip
    async with smtpd(box, port), setup.pipeline(ATTACH, sinks=sinks) as pipe:
        await pipe.poll(FEED)
        await pipe.flush()
    (mail,) = box.mails
    got = {a.get_filename(): a.get_payload(decode=True) for a in mail.iter_attachments()}
    assert got == {"invoice.pdf": b"%PDF-1.4 tiny"}
    assert "Not attached (limit 100 B): big.bin (500 B)" in parts(mail)[0]


async def test_a_message_written_in_lines_keeps_them_in_both_parts(
    session: aiohttp.ClientSession,
) -> None:
    box = Mailbox()
    async with smtpd(box) as port:
        await make_sink(session, port).send(note(message="Code: 123456\nfrom &lt;bob&gt;"))
    text, html = parts(box.mails[0])
    assert text == "Code: 123456\nfrom <bob>\n"
    assert html is not None and "Code: 123456<br>from &lt;bob&gt;" in html
