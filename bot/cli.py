"""The ``inboxbot`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from bot import __version__, mutes, outbox
from bot.app import Loaded, load, resources, running
from bot.daemon import Daemon, once
from bot.errors import ConfigError, ConfigErrors, RenderError
from bot.lock import StateInUse, state_lock
from bot.logs import fields, setup_logging
from bot.sentry import Scrubber, init_sentry, secret_values
from bot.settings import Settings
from bot.store import StoreError
from bot.systemd import Notifier

EXIT_CONFIG = 2
SHOWN = 20  # feeds named in the start line; a big configuration is summed up

log = logging.getLogger("inboxbot")

DESCRIPTION = """\
Polls inboxes (e621, Mail.td, MinuteMail, Rocket.Chat, IMAP; IMAP IDLE and Rocket.Chat's
realtime stream push new items at once), applies your YAML rules to each new item and
sends notifications (ntfy, Gotify, Telegram, Matrix, Rocket.Chat, Discord, Slack, e-mail,
MQTT with Home Assistant discovery, webhooks, the console), or acts on the item; noise
control (digests, quiet hours, limits, mutes) holds what can wait. `send-test SINK` tries
one target.

The configuration file comes from --config or INBOXBOT_CONFIG (default ./inboxbot.yaml).
Other settings: INBOXBOT_STATE, INBOXBOT_LOG_LEVEL, INBOXBOT_LOG_FORMAT (text|json),
INBOXBOT_LISTEN (health and metrics, default 127.0.0.1:9321, empty disables),
INBOXBOT_SENTRY_DSN (errors to Sentry, scrubbed of secrets and item content).
SIGHUP reloads the configuration; SIGTERM stops within 10 s.
"""

COMMANDS = {
    "run": "run the daemon until SIGTERM/SIGINT",
    "once": "poll every feed once, deliver and act while retries fall due within --grace, then "
    "exit: 1 if a feed failed or notifications are left queued or failed",
    "check": "validate configuration, rules and templates (exit 2 with file:line: message)",
    "demo": "run the daemon against the built-in simulators; no account needed (a temporary "
    "state, unless --state names one)",
    "healthcheck": "exit 0 when the running daemon's /healthz answers ok (for containers)",
    "explain": "poll the feeds, show which rules would fire on each item and why; acts on nothing",
    "render": "render a template (a name, or a .j2 file) for an item given as JSON",
    "test-rules": "run your rule tests (YAML: - item: {…}, match: [rule names], extract: {…}; "
    "noise control: now:, mutes:, send: {SINK: sent|grouped|muted|held until …}, items: […] "
    "with digest: {SINK: text})",
    "send-test": "send a test notification to one sink; print why it failed (exit 1) if it did",
    "status": "whether a daemon runs on the state; each feed (last good poll, next poll, failing "
    "since and why), each sink (queued, due, later, failed, last error), delayed actions",
    "outbox": "list the steps not done yet and those muted: rule, item, target, tries, next try, "
    "and the last error or why it waits (held, grouped, muted)",
    "retry": "make steps due now, failed ones too; a running daemon sends them within seconds",
    "drop": "end steps on purpose (recorded as dropped; their rule's actions are cancelled)",
    "mute": "silence notifications (--rule, --sink, --account, --match FIELD=VALUE) --for 2h, "
    "--until TIME or --forever; recorded as muted, or with --defer held and sent as one "
    "digest at the end",
    "mutes": "list the mutes in force",
    "unmute": "end a mute now (what it deferred is sent)",
}


GLOBAL_FLAGS = ("config", "state", "log_level", "log_format", "listen")


def global_options(default: object = None) -> argparse.ArgumentParser:
    """The options every command takes, before or after the command's name."""
    g = argparse.ArgumentParser(add_help=False, argument_default=default)
    g.add_argument("-c", "--config", type=Path, help="configuration file (INBOXBOT_CONFIG)")
    g.add_argument("--state", type=Path, help="state database (INBOXBOT_STATE)")
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    g.add_argument("--log-format", choices=["text", "json"])
    g.add_argument("--listen", help="health and metrics address host:port (INBOXBOT_LISTEN)")
    return g


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inboxbot",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[global_options()],
    )
    p.add_argument("--version", action="version", version=f"inboxbot {__version__}")
    # after the command, an option left out must not overwrite one given before it
    after = [global_options(argparse.SUPPRESS)]
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text, parents=after)
        if name == "demo":
            sub.add_argument("--duration", type=float, help="stop by itself after SECONDS")
        if name == "explain":
            sub.add_argument("--feed", help="only this feed (ACCOUNT/FEED) or account")
        if name == "once":
            sub.add_argument(
                "--grace", type=float, default=30.0, metavar="SECONDS",
                help="keep delivering while retries fall due within SECONDS (default 30; 0: "
                "exit after one pass)",
            )  # fmt: skip
        if name == "render":
            sub.add_argument(
                "template", help="template name (in the configured folders) or file.j2"
            )
            sub.add_argument("--item", type=Path, required=True, help="JSON file of an item")
            sub.add_argument("--sink", help="as this sink gets it: its format, escaped for it")
        if name == "test-rules":
            sub.add_argument("cases", type=Path, help="YAML file of rule tests")
        if name == "send-test":
            sub.add_argument("sink", help="the sink's name in the configuration")
        outbox.add_arguments(name, sub)
        mutes.add_arguments(name, sub)
    return p


def settings_for(args: argparse.Namespace) -> Settings:
    """Flags over INBOXBOT_* variables; an error names the flag when a flag was given."""
    flags = {k: getattr(args, k) for k in GLOBAL_FLAGS if getattr(args, k, None) is not None}
    try:
        return Settings(**flags)
    except ValidationError as err:
        first = err.errors()[0]
        key = str(first["loc"][0])
        name = f"--{key.replace('_', '-')}" if key in flags else f"INBOXBOT_{key.upper()}"
        raise SettingsError(f"{name}: {first['msg'].removeprefix('Value error, ')}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = settings_for(args)
    except SettingsError as err:
        print(f"settings: {err}", file=sys.stderr)
        return EXIT_CONFIG
    helpers = ("check", "explain", "render", "test-rules", "send-test")
    quiet = args.command in helpers and not args.log_level
    setup_logging("warning" if quiet else settings.log_level, settings.log_format)
    if args.command == "healthcheck":
        return healthcheck(settings.listen)
    if args.command == "demo":
        from bot.demo import run_demo

        return asyncio.run(run_demo(settings, args.duration))
    try:
        loaded = load(settings.config)
    except (ConfigError, ConfigErrors) as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        for warning in loaded.config.warnings:
            print(warning, file=sys.stderr)
        print(f"{settings.config}: ok ({summary(loaded)})")
        return 0
    if args.command in helpers:
        return helper_command(args, loaded, settings.state_path(loaded.config.state_file()))
    if args.command in outbox.COMMANDS:
        return outbox.main(args, loaded, settings.state_path(loaded.config.state_file()))
    if args.command in mutes.COMMANDS:
        return mutes.main(args, loaded, settings.state_path(loaded.config.state_file()))
    scrubber = Scrubber(secret_values(loaded.config))
    init_sentry(settings.sentry_dsn, settings.environment, scrubber)
    try:
        return asyncio.run(serve(loaded, settings, args, scrubber))
    except StateInUse as err:
        print(f"inboxbot: {err}", file=sys.stderr)
        return 1
    except StoreError as err:
        print(
            f"inboxbot: {err} (set --state or INBOXBOT_STATE to a writable file)",
            file=sys.stderr,
        )
        return 1


def helper_command(args: argparse.Namespace, loaded: Loaded, state: Path) -> int:
    """``state``: where the daemon keeps its mutes, which explain shows."""
    from bot import tools  # only here: the daemon never needs it (~1 MiB)

    try:
        if args.command == "explain":
            return asyncio.run(tools.explain(loaded, args.feed, tools.mutes_in(state)))
        if args.command == "render" and args.sink:
            print(asyncio.run(tools.render_for(loaded, args.template, args.item, args.sink)))
            return 0
        if args.command == "render":
            print(tools.render(loaded.renderer, args.template, args.item))
            return 0
        if args.command == "send-test":
            return asyncio.run(tools.send_test(loaded, args.sink))
        from bot.rule_tests import run_rule_tests

        return asyncio.run(run_rule_tests(loaded, args.cases))
    except (ConfigError, RenderError) as err:
        print(err, file=sys.stderr)
    except OSError as err:
        print(f"{err.filename}: {err.strerror}", file=sys.stderr)
    except ValueError as err:
        print(err, file=sys.stderr)
    return EXIT_CONFIG


def summary(loaded: Loaded) -> str:
    feeds, rules = len(loaded.feeds()), len(loaded.rules)
    return f"{feeds} feeds, {rules} rules, {len(loaded.config.sinks)} sinks"


async def serve(loaded: Loaded, settings: Settings, args: argparse.Namespace,
                scrubber: Scrubber) -> int:  # fmt: skip
    state = settings.state_path(loaded.config.state_file())
    with state_lock(state):
        log_start(loaded, settings, state)
        if args.command == "once":
            async with running(loaded, state) as pipeline:
                return await once(pipeline, loaded.feeds(), grace=args.grace)
        async with resources(state) as res:
            daemon = Daemon(
                loaded, res, config_path=settings.config, stop_timeout=settings.stop_timeout,
                listen=settings.listen, notifier=Notifier(), scrubber=scrubber,
            )  # fmt: skip
            try:
                await daemon.run()
            except OSError as err:
                print(f"inboxbot: cannot listen on {settings.listen}: {err.strerror}",
                      file=sys.stderr)  # fmt: skip
                return 1
    return 0


def log_start(loaded: Loaded, settings: Settings, state: Path) -> None:
    """One line that says what this run works on: a wrong path shows at once."""
    feeds = [f"{f.key}@{f.every.total_seconds():g}s" for f in loaded.feeds()]
    shown = feeds[:SHOWN] + ([f"…{len(feeds) - SHOWN} more"] if len(feeds) > SHOWN else [])
    sinks = [f"{name}({s.type})" for name, s in loaded.config.sinks.items()]
    log.info("starting", extra=fields(
        config=settings.config.resolve(), state=state.resolve(),
        state_new=not state.exists() or state.stat().st_size == 0,
        listen=settings.listen or "off", feeds=",".join(shown), sinks=",".join(sinks),
    ))  # fmt: skip
    for warning in loaded.config.warnings:
        log.warning("configuration", extra=fields(problem=str(warning)))


def healthcheck(listen: str) -> int:
    """GET /healthz of the daemon on ``listen``; 0 when it answers ok."""
    if not listen:
        print("healthcheck: INBOXBOT_LISTEN is empty, the HTTP server is off", file=sys.stderr)
        return 1
    host, _, port = listen.rpartition(":")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as resp:
            print(resp.read().decode().strip())
            return 0
    except urllib.error.HTTPError as err:
        print(f"unhealthy: {err.read().decode().strip()}", file=sys.stderr)
    except OSError as err:
        print(f"unhealthy: {listen}: {getattr(err, 'reason', err)}", file=sys.stderr)
    return 1
