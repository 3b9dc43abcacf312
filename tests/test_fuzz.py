"""A short form of the proof suite's fuzz scenario (``make proof`` runs 100,000 cases):
every upstream's parsing of generated answers and the loaders on generated files, plus the
malformed entries it found once."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
import yaml

from bot.errors import ConfigError
from bot.http import Limiters
from bot.sources import SOURCES
from bot.sources.rocketchat import parse_time
from bot.yamlfile import load_yaml
from proof.fuzz import (
    BASE_CONFIG,
    BASE_RULES,
    BASE_TEMPLATES,
    MAILTD,
    MINUTEMAIL,
    RC_MSG,
    RC_SUB,
    UPSTREAMS,
    Answer,
    Tally,
    Upstream,
    fuzz_loaders,
    fuzz_upstream,
    load_account,
    load_once,
    poll_once,
)


@pytest.mark.parametrize("upstream", UPSTREAMS, ids=lambda u: u.name)
def test_generated_answers_never_crash_a_poll_nor_build_a_malformed_item(
    upstream: Upstream,
) -> None:
    tally = Tally()
    fuzz_upstream(upstream, 750, 2026, tally)
    assert tally.failures == []
    assert tally.cases >= 750 and tally.items > 0  # some answers were good enough to build items


def test_generated_configuration_rules_and_templates_fail_only_with_a_located_error() -> None:
    tally = Tally()
    fuzz_loaders(60, 2026, tally)
    assert tally.failures == []
    assert tally.refused > 0


BROKEN_IDS = [None, [None], {"a": 1}, "", True]


@pytest.mark.parametrize("name", ["mailtd", "minutemail", "rocketchat"])
@pytest.mark.parametrize("bad", BROKEN_IDS, ids=repr)
async def test_an_entry_without_a_proper_id_builds_no_item(name: str, bad: object) -> None:
    upstream = next(u for u in UPSTREAMS if u.name == name)
    entry = {**{"mailtd": MAILTD, "minutemail": MINUTEMAIL, "rocketchat": RC_MSG}[name]}
    entry[upstream.id_key] = bad
    key = {"mailtd": "/messages", "minutemail": "/mails", "rocketchat": "dm.history"}[name]
    answers = {key: Answer(200, json.dumps({"messages": [entry], "items": [entry]}).encode()),
               "/mailboxes/": Answer(200, b'{"address": "x@minutemail.co"}'),
               "subscriptions.get": Answer(200, json.dumps({"update": [RC_SUB]}).encode())}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        source = SOURCES[name](name, load_account(upstream), session, Limiters())
        assert await poll_once(source, upstream, answers, upstream.feeds[0]) == 0


def test_a_control_character_in_yaml_is_a_located_config_error(tmp_path: Path) -> None:
    path = tmp_path / "inboxbot.yaml"
    path.write_text("accounts:\n  a: \x1f\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert err.value.file == str(path) and err.value.line == 2
    assert "control characters" in str(err.value)


@pytest.mark.parametrize("ms", [2**63, -(2**63), 1e300])
def test_an_epoch_time_out_of_range_is_a_value_error(ms: float) -> None:

    with pytest.raises(ValueError):  # what poll turns into one logged reason
        parse_time({"$date": ms})


@pytest.mark.parametrize("key", ["account", "upstream", "kind", "feed"])
def test_a_list_inside_a_rules_closed_key_is_a_located_config_error(
    tmp_path: Path, key: str
) -> None:
    rules = [{**BASE_RULES[0], "when": {**BASE_RULES[0]["when"], key: [["mailtd"]]}}]
    template = next(iter(BASE_TEMPLATES.items()))
    config = yaml.safe_dump(BASE_CONFIG)
    assert load_once(tmp_path, config, yaml.safe_dump(rules), template) == "refused"
