"""The project's exception tree: every error a user or the pipeline must tell apart.

    InboxbotError
    ├── ConfigError          bad configuration, rule or template: ``file:line: message``
    │   └── ConfigErrors     several of them, found in one pass, sorted by file and line
    ├── RenderError          a template failed on one item (undefined name, sandbox refusal)
    └── RemoteError          an upstream or a notification target failed; never carries a secret
        ├── TransientError   worth retrying later; ``retry_after`` is the remote's own hint (s)
        │   └── QuotaError   a quota ran out: retry, but not soon
        ├── AuthError        credentials refused: retrying cannot help until the user acts
        └── PermanentError   the request itself is wrong or refused for good
            └── GoneError    the item no longer exists upstream (404/410): drop it

Source and sink modules turn library and HTTP errors into these at their edge
(``raise TransientError(...) from err``); the core only ever sees this tree.
"""

from __future__ import annotations


class InboxbotError(Exception):
    """Base of every error inboxbot raises on purpose."""


class ConfigError(InboxbotError):
    """A configuration, rule or template problem, located in a file."""

    def __init__(self, message: str, file: str = "", line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        if not self.file:
            return self.message
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class ConfigErrors(ConfigError):
    """Several configuration errors found in one pass, reported together: the files in the
    order they were read, each file's errors by line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = sort_errors(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def sort_errors(errors: list[ConfigError]) -> list[ConfigError]:
    """``errors`` (ConfigErrors flattened, repeats dropped) grouped by file in first-seen
    order, each file's by line."""
    flat = [e for err in errors for e in (err.errors if isinstance(err, ConfigErrors) else [err])]
    order = {file: i for i, file in reversed(list(enumerate(e.file for e in flat)))}
    ordered = sorted(flat, key=lambda e: (order[e.file], e.line or 0))
    return list({str(e): e for e in ordered}.values())


class RemoteError(InboxbotError):
    """A remote service failed. ``service`` names the account or sink, never a secret."""

    def __init__(self, message: str, *, service: str = "", status: int | None = None) -> None:
        self.message = message
        self.service = service
        self.status = status
        super().__init__(f"{service}: {message}" if service else message)


class TransientError(RemoteError):
    """Retry later; ``retry_after`` is the remote's hint in seconds, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        service: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, service=service, status=status)
        self.retry_after = retry_after


class QuotaError(TransientError):
    """A quota (not a rate) is exhausted: retrying in seconds only burns more of it."""


class AuthError(RemoteError):
    """Credentials were refused; the user has to fix them."""


class PermanentError(RemoteError):
    """The request is wrong or refused for good; retrying cannot help."""


class GoneError(PermanentError):
    """The item no longer exists upstream."""


class RenderError(InboxbotError):
    """A template failed while rendering one item (an undefined name, a sandbox refusal)."""
