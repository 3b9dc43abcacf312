"""Fuzz: Hypothesis over every upstream's payload parsing (each source's ``poll`` fed
generated answers at its HTTP boundary: mutated real entries, wrong types, missing and
duplicate ids, HTML, truncated and empty bodies) and over the configuration, rule and
template loaders (``bot.app.load`` on generated files). Properties: no exception but
inboxbot's own (a RemoteError for a bad answer, a ConfigError for a bad file), no item
built from an entry without a proper id, every ConfigError names its file and a line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning
from multidict import CIMultiDict, CIMultiDictProxy

from bot.app import load
from bot.errors import ConfigError, ConfigErrors, RemoteError
from bot.http import Limiters, Response
from bot.sources import SOURCES, Source
from proof.common import Result

# --- generated JSON ------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["", "0", "2024-05-01T12:00:00Z", "x@y.z", "d"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def mutated(sample: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """``sample`` with each key kept, replaced by any JSON or dropped; sometimes not a
    mapping at all."""
    keyed = {k: st.one_of(st.just(v), json_values, st.just(_DROP)) for k, v in sample.items()}
    entry = st.fixed_dictionaries(keyed).map(
        lambda d: {k: v for k, v in d.items() if v is not _DROP}
    )
    return st.one_of(st.just(dict(sample)), entry, entry, entry, json_values)


_DROP = object()


def page(key: str | None, entry: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A list answer: the entries under ``key`` (or bare), or any JSON instead."""
    entries = st.lists(entry, max_size=5).flatmap(
        lambda xs: st.just(xs) | st.just(xs + xs[:1])  # a duplicate id in one page
    )
    wrapped = entries.map(lambda xs: {key: xs}) if key else entries
    return st.one_of(wrapped, wrapped, wrapped, json_values)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"


def bodies(doc: st.SearchStrategy[Any]) -> st.SearchStrategy[Answer]:
    """``doc`` as an HTTP answer, mostly whole, sometimes cut, HTML, empty or an error."""
    whole = doc.map(lambda d: Answer(200, json.dumps(d).encode()))
    cut = doc.map(lambda d: Answer(200, json.dumps(d).encode()[: len(json.dumps(d)) // 2]))
    odd = st.sampled_from(
        [
            Answer(200, b"<html><body>502 Bad Gateway</body></html>", "text/html"),
            Answer(200, b""),
            Answer(200, b"", ""),
            Answer(503, b'{"error": "down"}'),
            Answer(429, b'{"error": "rate_limit_exceeded"}'),
            Answer(500, b"oops", "text/plain"),
        ]
    )
    return st.one_of(whole, whole, whole, whole, cut, odd)


# --- each upstream: a configuration, its answers by path, and which ids are proper ----


@dataclass
class Upstream:
    name: str
    account: dict[str, Any]
    feeds: list[str]
    answers: dict[str, st.SearchStrategy[Answer]]  # by path substring, first match wins
    id_key: str
    entries: Callable[[dict[str, Any]], list[Any]] = field(default=lambda docs: [])


def _entries(*keys: str) -> Callable[[dict[str, Any]], list[Any]]:
    def found(docs: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for doc in docs.values():
            if isinstance(doc, list):
                out += doc
            elif isinstance(doc, dict):
                for key in keys:
                    if isinstance(doc.get(key), list):
                        out += doc[key]
                if len(doc) == 1:
                    (only,) = doc.values()
                    out += only if isinstance(only, list) else []
        return out

    return found


MAILTD = {
    "id": "m1",
    "from": "a@b.c",
    "sender": "a@b.c",
    "subject": "s",
    "preview_text": "p",
    "size": 10,
    "is_read": False,
    "created_at": "2024-05-01T12:00:00Z",
}
MINUTEMAIL = {
    "id": "mm1",
    "sender": "a@b.c",
    "subject": "s",
    "body": "<p>hi</p>",
    "receivedAt": "2024-05-01T12:00:00Z",
    "attachments": [{"id": "a1", "name": "f.txt", "sizeBytes": 3}],
}
E621_DMAIL = SOURCES["e621"].sample_raw["dmail"]
E621_COMMENT = SOURCES["e621"].sample_raw["comment"]
RC_SUB = {
    "t": "d",
    "rid": "r1",
    "name": "bob",
    "ls": "2024-05-01T11:00:00.000Z",
    "_updatedAt": "2024-05-01T12:00:00.000Z",
    "unread": 1,
    "alert": True,
}
RC_MSG = {
    "_id": "msg1",
    "rid": "r1",
    "msg": "hi",
    "ts": "2024-05-01T12:00:00.000Z",
    "u": {"_id": "other", "username": "bob"},
}

UPSTREAMS = [
    Upstream(
        "mailtd",
        {
            "type": "mailtd",
            "base_url": "http://fuzz.invalid",
            "account_id": "a@mail.td",
            "token": "t",
        },
        ["messages"],
        {"/messages": bodies(page("messages", mutated(MAILTD)))},
        "id",
        _entries("messages", "data"),
    ),
    Upstream(
        "minutemail",
        {
            "type": "minutemail",
            "base_url": "http://fuzz.invalid",
            "api_key": "k",
            "mailbox_id": "b1",
        },
        ["mails"],
        {
            "/mails": bodies(page("items", mutated(MINUTEMAIL))),
            "/mailboxes/": bodies(mutated({"id": "b1", "address": "x@minutemail.co"})),
        },
        "id",
        _entries("items"),
    ),
    Upstream(
        "e621",
        {"type": "e621", "base_url": "http://fuzz.invalid", "username": "alice", "api_key": "k"},
        ["dmails", "comments"],
        {
            "/dmails": bodies(page(None, mutated(E621_DMAIL))),
            "/comments": bodies(page(None, mutated(E621_COMMENT))),
            "/users": bodies(page(None, mutated({"id": 100001, "name": "alice"}))),
        },
        "id",
        _entries("dmails", "comments"),
    ),
    Upstream(
        "rocketchat",
        {"type": "rocketchat", "base_url": "http://fuzz.invalid", "user_id": "me", "token": "t"},
        ["dms"],
        {
            "subscriptions.get": bodies(page("update", mutated(RC_SUB))),
            "dm.history": bodies(page("messages", mutated(RC_MSG))),
        },
        "_id",
        _entries("messages"),
    ),
]


class FakeHttp:
    """Stands in for a source's HttpClient: the generated answer for each path."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.seen: dict[str, Any] = {}

    async def request(self, method: str, path: str, **kwargs: Any) -> Response:
        answer = next((a for key, a in self.answers.items() if key in path), Answer(404, b"{}"))
        headers = CIMultiDictProxy(CIMultiDict({"Content-Type": answer.content_type}))
        return Response(method, path, answer.status, headers, answer.body)


def proper_ids(entries: list[Any], key: str) -> set[str]:
    """The ids an item may have: a proper (non-empty string or integer) id of an entry."""
    ok = set()
    for e in entries:
        value = e.get(key) if isinstance(e, Mapping) else None
        if (isinstance(value, str) and value) or (
            isinstance(value, int) and not isinstance(value, bool)
        ):
            ok.add(str(value))
    return ok


class Failure(AssertionError):
    pass


async def poll_once(
    source: Source, upstream: Upstream, answers: dict[str, Answer], feed: str
) -> int:
    """One poll on generated answers; the items it built (0 when it refused the answer)."""
    source.http = FakeHttp(answers)  # type: ignore[attr-defined]
    try:
        result = await source.poll(feed, None)
    except RemoteError:
        return 0
    except Exception as err:  # the property: nothing else escapes
        raise Failure(f"{upstream.name}/{feed}: {type(err).__name__}: {err}") from err
    docs = {}
    for key, answer in answers.items():
        with contextlib.suppress(ValueError):
            docs[key] = json.loads(answer.body)
    ok = proper_ids(upstream.entries(docs), upstream.id_key)
    for item in result.items:
        if item.id not in ok:
            raise Failure(f"{upstream.name}/{feed}: item {item.id!r} from a malformed entry")
    return len(result.items)


@dataclass
class Tally:
    cases: int = 0
    items: int = 0
    refused: int = 0
    failures: list[str] = field(default_factory=list)


def fuzz_upstream(upstream: Upstream, examples: int, seed: int, tally: Tally) -> None:
    loop = asyncio.new_event_loop()
    config = load_account(upstream)

    async def make() -> tuple[aiohttp.ClientSession, Source]:
        session = aiohttp.ClientSession()
        return session, SOURCES[upstream.name](upstream.name, config, session, Limiters())

    session, source = loop.run_until_complete(make())
    strategy = st.fixed_dictionaries(upstream.answers)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(answers=strategy, feed=st.sampled_from(upstream.feeds))
    def case(answers: dict[str, Answer], feed: str) -> None:
        tally.cases += 1
        fresh = SOURCES[upstream.name](upstream.name, config, session, Limiters())
        built = loop.run_until_complete(poll_once(fresh, upstream, answers, feed))
        tally.items += built
        tally.refused += built == 0

    try:
        seeded = case
        seeded._hypothesis_internal_use_seed = seed  # type: ignore[attr-defined]
        seeded()
    except (Failure, ExceptionGroup) as err:
        tally.failures += _messages(err)
    finally:
        loop.run_until_complete(session.close())
        loop.close()
    del source


def _messages(err: BaseException) -> list[str]:
    """The first line of each failure Hypothesis found (several come as a group)."""
    if isinstance(err, BaseExceptionGroup):
        return [m for e in err.exceptions for m in _messages(e)]
    return [str(err).splitlines()[0] if str(err) else type(err).__name__]


def load_account(upstream: Upstream) -> Any:
    """The account's configuration as ``load`` validates it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inboxbot.yaml"
        path.write_text(
            yaml.safe_dump(
                {"accounts": {upstream.name: upstream.account}, "sinks": {"s": {"type": "console"}}}
            )
        )
        return load(path).config.accounts[upstream.name]


# --- the loaders: configuration, rules and templates ------------------------------------

ROOT = Path(__file__).resolve().parent.parent
BASE_CONFIG: dict[str, Any] = {
    "accounts": {name.split("/")[0]: u.account for u in UPSTREAMS for name in [u.name]},
    "sinks": {
        "phone": {"type": "ntfy", "url": "http://ntfy.invalid/topic", "token": "tk"},
        "hooks": {"type": "webhook", "url": "http://hook.invalid/"},
    },
    "rules": ["rules.yaml"],
    "templates": ["templates"],
    "backlog": "notify",
    "max_actions_per_poll": 50,
}
BASE_RULES: list[Any] = [
    rule for f in sorted((ROOT / "rules").glob("*.yaml")) for rule in yaml.safe_load(f.read_text())
]
BASE_TEMPLATES = {f.name: f.read_text() for f in sorted((ROOT / "templates").glob("*.j2"))}
JINJA_BITS = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{% if item.subject %}",
    "{% endif %}",
    "{% for x in",
    "{{ item.nope.deeper }}",
    "{{ item.subject | nofilter }}",
    "{% block title %}",
    "{% endblock %}",
    "{{ 1/0 }}",
    "{# ",
    "\n",
    "{% raw %}",
    "{{ item.subject[:3] }}",
    "{% extends 'x.j2' %}",
    "{% include 'email.j2' %}",
    "\x00",
]
YAML_BITS = [
    "\n",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "&a",
    "*a",
    "!!python/object:os.system",
    "\t",
    "'",
    '"',
    "#",
    "? ",
    "|",
    ">",
    "%YAML 1.2",
    "---",
    "\x00",
    "é",
]


def mutate(value: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """``value`` with parts kept, replaced by any JSON, dropped, or added to."""
    if depth > 4:
        return st.just(value)
    if isinstance(value, dict):
        keyed = {
            k: st.one_of(mutate(v, depth + 1), st.just(v), st.just(v), json_values, st.just(_DROP))
            for k, v in value.items()
        }
        extra = st.dictionaries(st.text(max_size=10), json_values, max_size=1)
        both = st.tuples(st.fixed_dictionaries(keyed), extra)
        return both.map(lambda d: {**{k: v for k, v in d[0].items() if v is not _DROP}, **d[1]})
    if isinstance(value, list):
        return st.tuples(
            *(st.one_of(mutate(v, depth + 1), st.just(v), st.just(_DROP)) for v in value)
        ).map(lambda xs: [x for x in xs if x is not _DROP])
    return st.one_of(st.just(value), st.just(value), json_values)


def spliced(text: str, bits: list[str]) -> st.SearchStrategy[str]:
    """``text`` with a few generated snippets inserted at random places."""
    snippet = st.lists(st.sampled_from(bits) | st.text(max_size=6), min_size=1, max_size=4)
    return st.tuples(st.integers(0, len(text)), snippet.map("".join)).map(
        lambda cut: text[: cut[0]] + cut[1] + text[cut[0] :]
    )


def as_yaml(value: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True, sort_keys=False)


def file_strategy(base: Any, bits: list[str]) -> st.SearchStrategy[str]:
    """A YAML file: the base, mutated in structure, in text, or both."""
    structured = mutate(base).map(as_yaml)
    return st.one_of(
        st.just(as_yaml(base)),
        structured,
        structured,
        structured.flatmap(lambda t: spliced(t, bits)),
    )


_BASE_FILES = (as_yaml(BASE_CONFIG), as_yaml(BASE_RULES))
_TEMPLATE = st.sampled_from(sorted(BASE_TEMPLATES)).flatmap(
    lambda name: st.tuples(st.just(name), spliced(BASE_TEMPLATES[name], JINJA_BITS))
)
_PLAIN_TEMPLATE = st.just(("email.j2", BASE_TEMPLATES["email.j2"]))
_CONFIG = file_strategy(BASE_CONFIG, YAML_BITS)
_RULES = file_strategy(BASE_RULES, YAML_BITS)
LOADER_CASES = st.one_of(  # one file generated, the others as shipped; or all three
    st.tuples(_CONFIG, st.just(_BASE_FILES[1]), _PLAIN_TEMPLATE),
    st.tuples(st.just(_BASE_FILES[0]), _RULES, _PLAIN_TEMPLATE),
    st.tuples(st.just(_BASE_FILES[0]), st.just(_BASE_FILES[1]), _TEMPLATE),
    st.tuples(_CONFIG, _RULES, _TEMPLATE),
)


def unlocated(err: ConfigError) -> list[str]:
    """The errors within ``err`` that do not name a file and a line."""
    flat = err.errors if isinstance(err, ConfigErrors) else [err]
    return [str(e) for e in flat if not e.file or not e.line]


def load_once(tmp: Path, config: str, rules: str, template: tuple[str, str]) -> str:
    """Load the generated files; '' when loaded, 'refused' on a located ConfigError."""
    (tmp / "templates").mkdir(exist_ok=True)
    for f in (tmp / "templates").iterdir():
        f.unlink()
    for name, text in BASE_TEMPLATES.items():
        (tmp / "templates" / name).write_text(text)
    (tmp / "templates" / template[0]).write_text(template[1])
    (tmp / "rules.yaml").write_text(rules)
    (tmp / "inboxbot.yaml").write_text(config)
    try:
        load(tmp / "inboxbot.yaml")
    except ConfigError as err:
        missing = unlocated(err)
        if missing:
            raise Failure(
                f"loaders: a ConfigError without file and line: {missing[0][:160]}"
            ) from None
        return "refused"
    except Exception as err:
        raise Failure(f"loaders: {type(err).__name__}: {str(err)[:160]}") from err
    return ""


def fuzz_loaders(examples: int, seed: int, tally: Tally) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-load-") as tmp:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=LOADER_CASES)
        def case(case: tuple[str, str, tuple[str, str]]) -> None:
            tally.cases += 1
            tally.refused += load_once(Path(tmp), *case) == "refused"

        case._hypothesis_internal_use_seed = seed  # type: ignore[attr-defined]
        try:
            case()
        except (Failure, ExceptionGroup) as err:
            tally.failures += _messages(err)


def _fuzz_one(name: str, examples: int, seed: int) -> Tally:
    """One upstream's parser, or the loaders (``name`` "loaders"), in a worker process."""
    warnings.filterwarnings("ignore", category=HypothesisWarning)
    tally = Tally()
    if name == "loaders":
        fuzz_loaders(examples, seed, tally)
    else:
        fuzz_upstream(next(u for u in UPSTREAMS if u.name == name), examples, seed, tally)
    return tally


def run(cases: int, seed: int) -> Result:
    """``cases`` in all: a fiftieth over the loaders (each case loads three files), the rest
    shared by the upstreams' parsers; one worker process per core."""
    loaders = max(cases // 50, 10)
    per_upstream = (cases - loaders) // len(UPSTREAMS)
    jobs = {u.name: per_upstream for u in UPSTREAMS} | {"loaders": loaders}
    spawn = multiprocessing.get_context("spawn")  # no fork of a process running a loop
    with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=spawn) as pool:
        futures = {name: pool.submit(_fuzz_one, name, n, seed) for name, n in jobs.items()}
        tallies = {name: future.result() for name, future in futures.items()}
    counts: dict[str, Any] = {
        name: f"{t.cases} cases, {t.items} items, {t.refused} refused"
        for name, t in tallies.items()
        if name != "loaders"
    }
    loaded = tallies["loaders"]
    counts["loaders"] = f"{loaded.cases} cases, {loaded.refused} refused with a located error"
    failures = [f for t in tallies.values() for f in t.failures]
    total = sum(t.cases for t in tallies.values())
    counts = {"cases": total, **counts, "failures": len(failures)}
    tried = (
        f"Hypothesis: {per_upstream} generated answers per upstream (mutated real entries, "
        "wrong types, missing and duplicate ids, cut, HTML, empty and error bodies) through "
        f"each source's poll; {loaders} generated configuration + rules + template sets "
        "through bot.app.load"
    )
    return Result("fuzz", tried, counts, not failures and total >= cases, failures[:5])
