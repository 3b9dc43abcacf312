"""SMTP: each notification as a real e-mail, with a text part, a sanitised HTML part and,
when the rule asks (``options: {attach: true}``), the item's attachments.

    mail:
      type: smtp
      host: smtp.example.org
      port: 587                 # default: 465 with tls, 587 with starttls, else 25
      starttls: true            # upgrade a plain connection (the default) …
      tls: false                # … or implicit TLS from the first byte (port 465)
      username: bot
      password: ${SMTP_PASSWORD}
      from: "inboxbot <bot@example.org>"
      to: [alice@example.org]
      max_attachment_size: 10MB # all attachments of one e-mail together; or bytes
      verify_tls: true
      ca_file: /etc/inboxbot/smtp-ca.pem   # a private CA or a self-signed server

The subject is the title; ``format: html`` (the default) sends the message as HTML,
cleaned by nh3 to harmless tags, with a plain-text alternative made from it; ``text``
sends a plain mail. The Message-ID comes from the notification id, so a mail re-sent
after a lost answer is recognisable as the same mail.

Errors: 4xx replies and network failures are transient, 5xx replies permanent, a refused
login (530/534/535) an AuthError. A certificate the server cannot prove (self-signed,
wrong host, expired) is an AuthError too: like a wrong password it is a configuration
problem (or an attack) that retrying cannot fix, so the user is told at once, while the
notification stays in the outbox until it is fixed.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Annotated, Any, Literal, Self

import aiohttp
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    field_validator,
    model_validator,
)

from bot.config import Model, SinkConfig
from bot.errors import AuthError, PermanentError, RemoteError, TransientError
from bot.logs import fields
from bot.markup import escape_html, line_breaks
from bot.sinks.base import File, Notification, Sink
from bot.text import html_to_text

# aiosmtplib and nh3 are imported at a configured SMTP sink's first mail, not at start.

log = logging.getLogger("inboxbot.sinks.smtp")

AUTH_CODES = frozenset({530, 534, 535, 538})  # authentication required, too weak, refused
# What a notification's HTML may keep: text structure and links. No images (remote ones
# tell the sender the mail was read), no styles, no forms, no scripts.
TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3",
        "h4", "h5", "h6", "hr", "i", "ins", "li", "ol", "p", "pre", "s", "small", "span",
        "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u",
        "ul"}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}
SCHEMES = {"http", "https", "mailto"}
PRIORITY = {  # X-Priority, Importance
    "urgent": ("1 (Highest)", "high"),
    "high": ("2 (High)", "high"),
    "default": ("3 (Normal)", "normal"),
    "low": ("4 (Low)", "low"),
    "min": ("5 (Lowest)", "low"),
}


def _address(value: str) -> str:
    if "@" not in parseaddr(value)[1]:
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Address = Annotated[str, AfterValidator(_address)]


class SmtpConfig(SinkConfig):
    model_config = ConfigDict(validate_by_name=True)

    type: Literal["smtp"]
    host: str
    port: int | None = Field(None, ge=1, le=65535)
    starttls: bool = True
    tls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    from_: Address = Field(alias="from")
    to: Annotated[list[Address], BeforeValidator(_as_list)] = Field(min_length=1)
    max_attachment_size: ByteSize = ByteSize(10_000_000)
    verify_tls: bool = True
    ca_file: FilePath | None = None
    format: Literal["html", "text"] = "html"

    @field_validator("host")
    @classmethod
    def _bare_host(cls, host: str) -> str:
        if not host or "/" in host or re.fullmatch(r"[^:]+:\d+", host):
            raise ValueError("write the host name only, e.g. smtp.example.org; the port is port:")
        return host

    @model_validator(mode="after")
    def _credentials_together(self) -> Self:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    def server_port(self) -> int:
        return self.port or (465 if self.tls else 587 if self.starttls else 25)


class SmtpOptions(Model):
    """What a notify entry's ``options:`` may hold for e-mail."""

    attach: bool = False  # the item's attachments, within ``max_attachment_size`` in all


class SmtpSink(Sink):
    type_name = "smtp"
    config_model = SmtpConfig
    options_model = SmtpOptions

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        assert isinstance(config, SmtpConfig)
        self.smtp = config
        self.where = f"{config.host}:{config.server_port()}"
        self.secret = config.password.get_secret_value() if config.password else None
        self.context = ssl.create_default_context(
            cafile=str(config.ca_file) if config.ca_file else None
        )
        if not config.verify_tls:
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE

    @property
    def max_file_size(self) -> int:
        return int(self.smtp.max_attachment_size)

    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None:
        import aiosmtplib

        message = self.build(notification, files)
        c = self.smtp
        try:
            refused, _ = await aiosmtplib.send(
                message, sender=parseaddr(c.from_)[1], recipients=list(c.to),
                hostname=c.host, port=c.server_port(), use_tls=c.tls,
                start_tls=c.starttls and not c.tls, tls_context=self.context,
                username=c.username, password=self.secret, timeout=c.timeout.total_seconds(),
            )  # fmt: skip
        except (aiosmtplib.SMTPException, OSError) as err:
            raise self._error(err) from err
        if refused:  # the others have it: a retry would send it to them twice
            shown = {r: f"{resp.code} {resp.message}" for r, resp in refused.items()}
            log.warning("recipients refused", extra=fields(sink=self.name, refused=shown))

    def build(self, n: Notification, files: Sequence[File] = ()) -> EmailMessage:
        """The e-mail for ``n``: headers, text and HTML parts, what fits of ``files``."""
        msg = EmailMessage()
        domain = parseaddr(self.smtp.from_)[1].rpartition("@")[2] or "inboxbot.invalid"
        msg["Subject"] = " ".join(n.title.split()) or n.rule
        msg["From"] = self.smtp.from_
        msg["To"] = ", ".join(self.smtp.to)
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = f"<{re.sub(r'[^A-Za-z0-9.-]', '-', n.id)}@{domain}>"
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies, please
        msg["X-Auto-Response-Suppress"] = "All"  # the same, for Exchange
        msg["X-Priority"], msg["Importance"] = PRIORITY.get(n.priority, PRIORITY["default"])
        attached, left_out = self._fit(n, files)
        note = self._note(left_out)
        text = html_to_text(line_breaks(n.message)) if self.format == "html" else n.message
        msg.set_content("\n\n".join(p for p in (text, n.url or "", note) if p) + "\n")
        if self.format == "html":
            msg.add_alternative(self._html(n, note), subtype="html")
        for f in attached:
            maintype, _, subtype = f.content_type.partition("/")
            if not maintype.isascii() or not subtype or "multipart" in maintype:
                maintype, subtype = "application", "octet-stream"
            msg.add_attachment(f.data, maintype=maintype, subtype=subtype, filename=f.name)
        return msg

    def _fit(self, n: Notification, files: Sequence[File]) -> tuple[list[File], list[str]]:
        """The files that fit the cap together, and the names of the item's others."""
        attached: list[File] = []
        left_out: list[str] = []
        room = self.max_file_size
        for f in files:
            if len(f.data) <= room:
                attached.append(f)
                room -= len(f.data)
            else:
                left_out.append(_named(f.name, len(f.data)))
        if n.options.get("attach"):  # the source leaves out what is over the cap: say so
            known = {f.name for f in files}
            listed = [a for a in n.item.get("attachments") or () if isinstance(a, dict)]
            left_out += [_named(a["name"], a.get("size")) for a in listed
                         if a.get("name") and a["name"] not in known]  # fmt: skip
        return attached, left_out

    def _note(self, left_out: list[str]) -> str:
        if not left_out:
            return ""
        return f"Not attached (limit {_size(self.max_file_size)}): {', '.join(left_out)}"

    def _html(self, n: Notification, note: str) -> str:
        import nh3

        parts = [line_breaks(n.message)]
        if n.url:
            url = escape_html(n.url)
            parts.append(f'<p><a href="{url}">{url}</a></p>')
        if note:
            parts.append(f"<p><small>{escape_html(note)}</small></p>")
        body = nh3.clean("\n".join(parts), tags=TAGS, attributes=ATTRIBUTES,
                         url_schemes=SCHEMES, link_rel="noopener noreferrer")  # fmt: skip
        head = f'<meta charset="utf-8"><title>{escape_html(n.title)}</title>'
        return f"<!DOCTYPE html>\n<html><head>{head}</head>\n<body>\n{body}\n</body></html>\n"

    def _error(self, err: BaseException) -> RemoteError:
        """``err`` in the project's tree, with what to fix; the password never shows."""
        kind, what, status = _classify(err)
        message = f"{self.where}: {what}"
        if self.secret:
            message = message.replace(self.secret, "***")
        return kind(message, service=self.name, status=status)


def _classify(err: BaseException) -> tuple[type[RemoteError], str, int | None]:
    import aiosmtplib

    cert = _cause(err, ssl.SSLCertVerificationError)
    if isinstance(cert, ssl.SSLCertVerificationError):
        reason = cert.verify_message or "not trusted"
        return AuthError, f"TLS certificate refused ({reason}): check host, or set ca_file", None
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in err.recipients]
        worst = max(codes, default=550) if any(c >= 500 for c in codes) else min(codes)
        shown = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in err.recipients)
        return _by_code(worst), f"recipients refused ({shown})", worst
    if isinstance(err, aiosmtplib.SMTPResponseException):
        if err.code in AUTH_CODES:
            return AuthError, f"{err.code} {err.message}: check username and password", err.code
        return _by_code(err.code), f"{err.code} {err.message}", err.code
    if type(err) in (aiosmtplib.SMTPException, aiosmtplib.SMTPNotSupported):
        # aiosmtplib's own refusals (no STARTTLS offered, no AUTH before TLS): the server
        # does not offer what the configuration demands, and will not by itself.
        return AuthError, f"{err} (check starttls, tls, username)", None
    if isinstance(_cause(err, ssl.SSLError), ssl.SSLError):
        return TransientError, f"TLS failed ({err}); is tls/starttls right for this port?", None
    return TransientError, f"{type(err).__name__}: {err}", None


def _by_code(code: int) -> type[RemoteError]:
    return PermanentError if code >= 500 else TransientError


def _cause(err: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``err`` or the first of its causes that is a ``kind``."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _named(name: str, size: int | None) -> str:
    return f"{name} ({_size(size)})" if size else name


def _size(n: int) -> str:
    if n >= 100_000:
        return f"{n / 1_000_000:.1f} MB"
    return f"{round(n / 1000)} kB" if n >= 1000 else f"{n} B"
