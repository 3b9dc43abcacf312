"""HTTP plumbing shared by sources and sinks: a polite client and error classification.

The session is created once by the daemon and passed in. Network failures,
timeouts, HTML error pages and truncated JSON all become ``TransientError``;
what an HTTP status means is each module's business (see ``classify``). With ``heed``,
a 429 or 503 with ``Retry-After`` quiets the client: until then it sends nothing (a
TransientError), so a detail refused that way stops the list polls too.
Messages name the method and path, never the query string or a header.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDictProxy
from pydantic import SecretStr

from bot import __version__
from bot.errors import AuthError, PermanentError, TransientError

USER_AGENT = f"inboxbot/{__version__} (+https://github.com/inboxbot/inboxbot)"


class RateLimiter:
    """At most ``calls`` requests in any window of ``period`` seconds (sliding, like the
    servers'), with a small margin for network jitter. Shared by everything that spends
    the same budget."""

    def __init__(
        self,
        calls: int,
        period: float = 1.0,
        *,
        margin: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.calls, self.period, self.margin, self.clock = max(1, calls), period, margin, clock
        self.sent: deque[float] = deque()
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            while len(self.sent) >= self.calls:
                delay = self.sent[0] + self.period + self.margin - self.clock()
                if delay <= 0:
                    self.sent.popleft()
                    continue
                await asyncio.sleep(delay)
            self.sent.append(self.clock())


def digest(secret: SecretStr) -> str:
    """A short stable name for a secret: a limiter key that never shows the secret itself."""
    return hashlib.sha256(secret.get_secret_value().encode()).hexdigest()[:16]


class Limiters:
    """Rate limiters shared by key: everything that spends one budget (all e621 accounts
    on one host, say) waits on one limiter. Created once by the daemon, passed to sources."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.by_key: dict[str, RateLimiter] = {}

    def get(self, key: str, calls: int, period: float = 1.0) -> RateLimiter:
        if key not in self.by_key:
            self.by_key[key] = RateLimiter(calls, period, clock=self.clock)
        return self.by_key[key]


@dataclass(frozen=True)
class Response:
    method: str
    path: str
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def is_json(self) -> bool:
        return "json" in self.headers.get("Content-Type", "")

    def json(self, service: str) -> Any:
        """The decoded body; an HTML page or a cut-off body is a transient failure."""
        if not self.is_json():
            kind = "an HTML page" if b"<html" in self.body[:500].lower() else "a non-JSON body"
            raise TransientError(
                f"{self.what} answered {kind}", service=service, status=self.status
            )
        try:
            return json.loads(self.body)
        except ValueError:
            raise TransientError(
                f"{self.what} answered invalid JSON ({len(self.body)} bytes)",
                service=service,
                status=self.status,
            ) from None

    def error_code(self, *keys: str) -> str:
        """The error string of a JSON error body (first of ``keys`` present), or ''."""
        try:
            data = json.loads(self.body) if self.is_json() else None
        except ValueError:
            return ""
        if isinstance(data, Mapping):
            for key in keys:
                if data.get(key):
                    return str(data[key])
        return ""

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"


def retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds (it may be a number or an HTTP date)."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def classify(
    resp: Response, service: str, detail: str = ""
) -> TransientError | AuthError | PermanentError:
    """The default meaning of a failed status; modules refine it where their API differs."""
    what = f"{resp.what} → HTTP {resp.status}{f' ({detail})' if detail else ''}"
    if resp.status in (401, 403):
        return AuthError(what, service=service, status=resp.status)
    if resp.status in (408, 425, 429) or resp.status >= 500:
        return TransientError(
            what, service=service, status=resp.status, retry_after=retry_after(resp.headers)
        )
    return PermanentError(what, service=service, status=resp.status)


def mask_url(url: str) -> str:
    """``scheme://host/…``: a URL as logs may show it (paths and queries often hold tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


class HttpClient:
    """One upstream's or target's HTTP: base URL, fixed headers, rate limit, timeout."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        service: str,
        headers: Mapping[str, str] | None = None,
        limiter: RateLimiter | None = None,
        timeout: float = 30.0,
        heed: bool = False,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.service = service
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self.limiter = limiter
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.heed = heed
        self.quiet_until = 0.0  # monotonic: a Retry-After the remote gave, not over yet

    async def request(self, method: str, path: str, **kwargs: Any) -> Response:
        if self.limiter:
            await self.limiter.wait()
        url = f"{self.base_url}{path}"
        shown = path.split("?", 1)[0] or mask_url(self.base_url)
        quiet = self.quiet_until - time.monotonic()
        if quiet > 0:  # any request of ours (a detail, the list) would come inside the wait
            raise TransientError(f"{method} {shown}: not sent, asked to wait {quiet:.1f} s more",
                                 service=self.service, retry_after=quiet)  # fmt: skip
        headers = {**self.headers, **kwargs.pop("headers", {})}
        try:
            async with self.session.request(
                method, url, headers=headers, timeout=self.timeout, **kwargs
            ) as resp:
                body = await resp.read()
                answer = Response(method, shown, resp.status, resp.headers, body)
                self._heed(answer)
                return answer
        except TimeoutError:
            raise TransientError(f"{method} {shown}: timed out", service=self.service) from None
        except aiohttp.ClientConnectorError as err:  # the host is no secret; the path may be
            reason = (
                f"cannot connect to {err.host}:{err.port} ({err.strerror or type(err).__name__})"
            )
            raise TransientError(f"{method} {shown}: {reason}", service=self.service) from None
        except aiohttp.ClientError as err:
            reason = type(err).__name__
            raise TransientError(f"{method} {shown}: {reason}", service=self.service) from None

    def _heed(self, resp: Response) -> None:
        """A 429 or 503 asking to wait: nothing more is sent to this remote before then."""
        hint = retry_after(resp.headers) if self.heed and resp.status in (429, 503) else None
        if hint:
            self.quiet_until = max(self.quiet_until, time.monotonic() + hint)
