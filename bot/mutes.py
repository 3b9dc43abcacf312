"""``inboxbot mute | mutes | unmute``: silence notifications for a while, from the shell.

A mute lives in the state database, so the running daemon honours it at its next
delivery pass (within a second or two) and a restart keeps it. What it silences is
recorded in the outbox as muted (``outbox`` shows it, with the mute's id and comment);
with ``--defer`` it is held instead and sent as one digest when the mute ends.

    inboxbot mute --sink phone --for 2h --comment "in a meeting"
    inboxbot mute --rule newsletters --until 2026-12-24T08:00 --defer
    inboxbot mutes
    inboxbot unmute 3
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

from bot.app import Loaded
from bot.conditions import FIELDS
from bot.config import parse_duration
from bot.held import Held, Mute
from bot.outbox import OutboxError, on_state, span

COMMANDS = ("mute", "mutes", "unmute")  # their help: bot.cli.COMMANDS


class MuteError(OutboxError):
    """A mute that names what does not exist, or has no end."""


def add_arguments(name: str, sub: argparse.ArgumentParser) -> None:
    if name == "mute":
        sub.add_argument("--rule", help="only this rule's notifications")
        sub.add_argument("--sink", help="only the notifications to this sink")
        sub.add_argument("--account", help="only the notifications of this account's items")
        sub.add_argument("--match", action="append", default=[], metavar="FIELD=VALUE",
                         help="only items whose field (or extraction) is VALUE (no case); "
                         "repeat for several")  # fmt: skip
        end = sub.add_mutually_exclusive_group()
        end.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 2h, 30m, 1d")
        end.add_argument(
            "--until", metavar="TIME", help="e.g. 2026-12-24T08:00 (this machine's zone if none)"
        )
        end.add_argument("--forever", action="store_true", help="until `inboxbot unmute`")
        sub.add_argument("--comment", default="", help="shown in the outbox and in `mutes`")
        sub.add_argument(
            "--defer",
            action="store_true",
            help="hold what it mutes; send it as one digest at the end",
        )
    if name == "unmute":
        sub.add_argument("id", type=int, help="the mute's number (`inboxbot mutes`)")


def main(args: argparse.Namespace, loaded: Loaded, state: Path) -> int:
    """Run one of ``COMMANDS``; 1 with the reason on stderr when it cannot."""
    return on_state(args.command, state,
                    lambda store: print(run(args, loaded, Held(store), time.time())),
                    create=args.command == "mute")  # fmt: skip


def run(args: argparse.Namespace, loaded: Loaded, held: Held, now: float) -> str:
    if args.command == "mute":
        mute = mute_from(args, loaded, now)
        number = held.add_mute(mute, now=now)
        return f"mute {number}: {describe(mute, now)}"
    if args.command == "mutes":
        mutes = held.active_mutes(now)
        return "\n".join(f"{m.id}: {describe(m, now)}" for m in mutes) or "no mute in force"
    deferred = held.unmute(args.id, now=now)
    if deferred is None:
        raise MuteError(f"no mute {args.id} (`inboxbot mutes` lists them)")
    sent = f"; its {deferred} held notification(s) are due now" if deferred else ""
    return f"mute {args.id} ended{sent}"


def mute_from(args: argparse.Namespace, loaded: Loaded, now: float) -> Mute:
    """The mute the flags describe, each name checked against the configuration."""
    _known("--rule", args.rule, [r.name for r in loaded.rules])
    _known("--sink", args.sink, list(loaded.config.sinks))
    _known("--account", args.account, list(loaded.config.accounts))
    names = [*FIELDS, *{e: None for r in loaded.rules for e in r.extract}]
    match = {}
    for pair in args.match:
        field, sep, value = pair.partition("=")
        if not sep or field.strip() not in names:
            raise MuteError(f"--match {pair!r}: write FIELD=VALUE with FIELD one of "
                            f"{', '.join(names)}")  # fmt: skip
        match[field.strip()] = value
    if args.defer and args.forever:
        raise MuteError("--defer needs an end (--for or --until): held notifications go out then")
    return Mute(0, _until(args, now), args.comment, args.defer, args.rule, args.sink,
                args.account, match)  # fmt: skip


def _known(flag: str, value: str | None, allowed: list[str]) -> None:
    if value is not None and value not in allowed:
        raise MuteError(f"{flag} {value!r}: not configured; one of: {', '.join(allowed)}")


def _until(args: argparse.Namespace, now: float) -> float | None:
    if args.forever:
        return None
    if args.duration:
        try:
            return now + float(parse_duration(args.duration).total_seconds())
        except ValueError as err:
            raise MuteError(f"--for: {err}") from None
    if args.until:
        try:
            moment = datetime.fromisoformat(args.until)
        except ValueError:
            raise MuteError(f"--until {args.until!r}: write e.g. 2026-12-24T08:00") from None
        at = moment.astimezone().timestamp()  # a time without zone is this machine's
        if at <= now:
            raise MuteError(f"--until {args.until}: that is in the past")
        return at
    raise MuteError("for how long? give --for 2h, --until 2026-12-24T08:00, or --forever")


def describe(mute: Mute, now: float) -> str:
    end = (f"until {datetime.fromtimestamp(mute.until).astimezone():%Y-%m-%d %H:%M %Z} "
           f"(in {span(mute.until - now)})" if mute.until else "until unmuted")  # fmt: skip
    how = "held, then sent as one digest" if mute.defer else "recorded as muted, not sent"
    said = f': "{mute.comment}"' if mute.comment else ""
    return f"{mute.scope()} {end}; {how}{said}"
