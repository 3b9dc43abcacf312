"""Process settings: command-line flags over ``INBOXBOT_*`` variables over a secrets folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


def _secrets_dir() -> str | None:
    folder = os.environ.get("CREDENTIALS_DIRECTORY") or "/run/secrets"
    return folder if os.path.isdir(folder) else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INBOXBOT_", secrets_dir=_secrets_dir(), extra="ignore"
    )

    config: Path = Path("inboxbot.yaml")
    state: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    stop_timeout: float = 10.0
    dry_run: bool = False

    def state_path(self, configured: Path | None) -> Path:
        """--state / INBOXBOT_STATE, else the config's ``state:``, else $STATE_DIRECTORY."""
        if self.state:
            return self.state
        if configured:
            return configured
        directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(directory or ".") / "state.db"
