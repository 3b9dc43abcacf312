"""Console: print notifications to standard output (the demo, and trying rules out).

screen: {type: console}
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal

from bot.config import SinkConfig
from bot.sinks.base import File, Notification, Sink


class ConsoleConfig(SinkConfig):
    type: Literal["console"]
    format: Literal["text"] = "text"
    stream: Literal["stdout", "stderr"] = "stdout"


class ConsoleSink(Sink):
    type_name = "console"
    config_model = ConsoleConfig

    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None:
        assert isinstance(self.config, ConsoleConfig)
        n = notification
        stream = sys.stdout if self.config.stream == "stdout" else sys.stderr
        head = f"── {n.account}/{n.feed} · rule {n.rule} · priority {n.priority} "
        lines = [head.ljust(72, "─"), n.title, *([n.message] if n.message else [])]
        if n.url:
            lines.append(n.url)
        print("\n".join(lines), file=stream, flush=True)
