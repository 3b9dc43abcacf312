"""Optional error reports to Sentry, scrubbed of secrets and of item content.

``sentry_sdk`` is imported only when a DSN is set. Every event and breadcrumb goes
through ``Scrubber`` first: the configured secret values, token-like strings, e-mail
addresses and URL paths are masked, and local variables are never sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

from bot import __version__

_TOKENS = re.compile(
    r"(?i)\b(?:td_|tm_pro_|mmak_)[A-Za-z0-9]+|\b(?:bearer|basic|token)\s+\S+"
    r"|\b[A-Za-z0-9_\-]{32,}\b"
)
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL_PATH = re.compile(r"(https?://[^/\s]+)/[^\s\"']*")
# Item content under these keys is dropped whole (``message`` stays: it is the log event).
CONTENT_KEYS = frozenset({"subject", "text", "html", "body", "sender", "recipient", "item",
                          "extract", "raw", "payload"})  # fmt: skip
# An HTTP breadcrumb's query string may hold a credential (a webhook's ``?key=``).
URL_PARTS = frozenset({"http.query", "http.fragment"})


class Scrubber:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.fixed: set[str] = set()  # the process's own (the DSN), kept across reloads
        self.secrets: list[str] = []
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """The configuration's secrets (again after a reload)."""
        # longest first, so a secret containing another is masked whole
        wanted = {s for s in (*secrets, *self.fixed) if len(s) >= 4}
        self.secrets = sorted(wanted, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, "[secret]")
        value = _URL_PATH.sub(r"\1/[path]", value)
        value = _TOKENS.sub("[token]", value)
        return _ADDRESS.sub("[address]", value)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                k: "[content]" if k in CONTENT_KEYS else "[query]" if k in URL_PARTS and v
                else self.scrub(v)
                for k, v in value.items()
            }  # fmt: skip
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    def event(self, event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
        return dict(self.scrub(event))

    def breadcrumb(self, crumb: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
        return dict(self.scrub(crumb))


def secret_values(model: Any) -> list[str]:
    """Every SecretStr value in a configuration tree of pydantic models."""
    if isinstance(model, SecretStr):
        return [model.get_secret_value()]
    if isinstance(model, BaseModel):
        return [s for name in type(model).model_fields for s in secret_values(getattr(model, name))]
    if isinstance(model, dict):
        return [s for v in model.values() for s in secret_values(v)]
    if isinstance(model, list | tuple):
        return [s for v in model for s in secret_values(v)]
    return []


def init_sentry(dsn: SecretStr | None, environment: str, scrubber: Scrubber) -> bool:
    """Start reporting errors when a DSN is set; True when it was."""
    if dsn is None or not dsn.get_secret_value():
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    scrubber.fixed.add(dsn.get_secret_value())
    scrubber.update(scrubber.secrets)
    sentry_sdk.init(
        dsn=dsn.get_secret_value(),
        release=f"inboxbot@{__version__}",
        environment=environment,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrubber.event,  # type: ignore[arg-type]
        before_breadcrumb=scrubber.breadcrumb,
        integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
    )
    return True
