"""Logging: one line per event, ``key=value`` for terminals and journald, or JSON.

Call sites log a short event name and pass fields in ``extra={"fields": {...}}``
(see ``fields``); formatters put them on the same line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

log = logging.getLogger("inboxbot")


def fields(**values: Any) -> dict[str, Any]:
    return {"fields": values}


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class KeyValueFormatter(logging.Formatter):
    def __init__(self, with_time: bool) -> None:
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"time={self.formatTime(record, '%Y-%m-%dT%H:%M:%S%z')}"] if self.with_time else []
        parts += [f"level={record.levelname.lower()}", f"event={_quote(record.getMessage())}"]
        parts += [f"{k}={_quote(v)}" for k, v in getattr(record, "fields", {}).items()]
        if record.exc_info and record.levelno >= logging.ERROR:
            parts.append(f"exception={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **{k: v if isinstance(v, int | float | bool) else str(v)
               for k, v in getattr(record, "fields", {}).items()},
        }  # fmt: skip
        return json.dumps(data, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    """Log to stderr; journald stamps lines itself, so no time is printed under it."""
    handler = logging.StreamHandler(sys.stderr)
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else KeyValueFormatter(not under_journald)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler reports every skipped overlapping run; our own logs say what matters.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
