"""The ``inboxbot`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from bot import __version__
from bot.app import Loaded, load, running
from bot.daemon import Daemon, once
from bot.errors import ConfigError, ConfigErrors
from bot.logs import setup_logging
from bot.settings import Settings

EXIT_CONFIG = 2

DESCRIPTION = """\
Polls inboxes that cannot push (e621, Mail.td, MinuteMail, Rocket.Chat), applies your
YAML rules to each new item and sends notifications, or acts on the item.

The configuration file comes from --config or INBOXBOT_CONFIG (default ./inboxbot.yaml).
Other settings: INBOXBOT_STATE, INBOXBOT_LOG_LEVEL, INBOXBOT_LOG_FORMAT (text|json).
"""

COMMANDS = {
    "run": "run the daemon until SIGTERM/SIGINT",
    "once": "poll every feed once, deliver, act, then exit (exit 1 if a feed failed)",
    "check": "validate configuration, rules and templates (exit 2 with file:line: message)",
    "demo": "run the daemon against the built-in Mail.td simulator; no account needed",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inboxbot",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"inboxbot {__version__}")
    p.add_argument("-c", "--config", type=Path, help="configuration file (INBOXBOT_CONFIG)")
    p.add_argument("--state", type=Path, help="state database (INBOXBOT_STATE)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["text", "json"])
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        if name == "demo":
            sub.add_argument("--duration", type=float, help="stop by itself after SECONDS")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    flags = {k: getattr(args, k) for k in ("config", "state", "log_level", "log_format")}
    try:
        settings = Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        print(f"settings: INBOXBOT_{str(first['loc'][0]).upper()}: {first['msg']}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "demo":
        from bot.demo import run_demo

        return asyncio.run(run_demo(settings, args.duration))
    try:
        loaded = load(settings.config)
    except (ConfigError, ConfigErrors) as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        print(f"{settings.config}: ok ({summary(loaded)})")
        return 0
    return asyncio.run(serve(loaded, settings, args.command == "once"))


def summary(loaded: Loaded) -> str:
    feeds, rules = len(loaded.feeds()), len(loaded.rules)
    return f"{feeds} feeds, {rules} rules, {len(loaded.config.sinks)} sinks"


async def serve(loaded: Loaded, settings: Settings, one_pass: bool) -> int:
    state = settings.state_path(loaded.config.state)
    async with running(loaded, state) as pipeline:
        if one_pass:
            failed = await once(pipeline, loaded.feeds())
            return 1 if failed else 0
        await Daemon(pipeline, loaded.feeds(), stop_timeout=settings.stop_timeout).run()
    return 0
