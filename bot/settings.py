"""Process settings: command-line flags over ``INBOXBOT_*`` variables over a secrets folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _secrets_dir() -> str | None:
    folder = os.environ.get("CREDENTIALS_DIRECTORY") or "/run/secrets"
    readable = os.path.isdir(folder) and os.access(folder, os.R_OK | os.X_OK)
    return folder if readable else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INBOXBOT_", secrets_dir=_secrets_dir(), extra="ignore"
    )

    config: Path = Path("inboxbot.yaml")
    state: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    listen: str = "127.0.0.1:9321"
    sentry_dsn: SecretStr | None = None
    environment: str = "production"
    stop_timeout: float = 10.0

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if value and (not host or not port.isdigit() or not 0 < int(port) < 65536):
            raise ValueError(f"{value!r} is not host:port (empty disables the HTTP server)")
        return value

    def state_path(self, configured: Path | None) -> Path:
        """--state / INBOXBOT_STATE, else the config's ``state:`` (resolved against the
        config file's folder), else $STATE_DIRECTORY/state.db, else state.db beside the
        config file: never the working directory, which cron and shells change."""
        if self.state:
            return self.state
        if configured:
            return configured
        directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(directory) / "state.db" if directory else self.config.parent / "state.db"
