"""A corpus of realistic mistakes in the main file and in a rule file, each run through the
real command (`python -m bot --config F check`): exit 2, no traceback, every line
`file:line: …`, naming the rule where there is one, all errors at once; or valid on
purpose, and then the table says why. Template mistakes: tests/test_check_templates.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CONFIG = """\
accounts:
  signup:
    type: mailtd
    account_id: me@mail.td
    token: td_secret
    every: 30s
  furry:
    type: e621
    username: alice
    api_key: e621-key
    feeds:
      dmails: {every: 2m}
sinks:
  phone: {type: ntfy, url: "https://ntfy.sh/alice-inbox"}
  hooks: {type: webhook, url: "http://127.0.0.1:8080/hook", rate: 30/min}
  screen: {type: console}
rules: [rules.yaml]
templates: [templates]
"""

RULES = """\
- name: verification-code
  when:
    kind: email
    subject: {regex: '(?i)code'}
  extract:
    code: {from: text, regex: '\\b(\\d{6})\\b'}
  notify:
    - sink: phone
      title: "Code {{ code }}"
      message: "{{ item.subject }}"
      priority: high
  then: [mark_read, {delete: {after: 1h}}]
  stop: true
- name: staff-dmail
  when:
    upstream: e621
    kind: dmail
    unread: true
  notify: {sink: screen, message: "{{ item.subject }}"}
  then: [mark_read]
- name: every-mail
  when: {upstream: mailtd}
  notify: [{sink: hooks, message: "{{ item.subject }}"}]
"""

VARIABLES = ("MAILTD_TOKEN", "E621_KEY", "HOOK_URL", "TOKEN", "NTFY_TOPIC")


def bad(
    category: str, name: str, file: str, old: str, new: str, line: int, *texts: str,
    also: tuple[tuple[str, str], ...] = (), named: bool = True,
) -> Any:  # fmt: skip
    """A mistake ``check`` must refuse: ``old`` replaced by ``new`` in ``file`` (and each pair
    of ``also``) gives an error on ``line`` holding ``texts[0]``, the other texts anywhere;
    ``named``: every line about the rule file names the rule."""
    expect = {"line": line, "texts": texts, "named": named}
    return pytest.param(file, ((old, new), *also), expect, id=f"{category}-{name}")


def valid(
    category: str, name: str, file: str, old: str, new: str, why: str, warns: str = ""
) -> Any:
    """Not a mistake, on purpose (``why``); ``warns``: a warning ``check`` prints, exit 0."""
    expect = {"valid": why, "warns": warns}
    return pytest.param(file, ((old, new),), expect, id=f"{category}-{name}")


C, R = "inboxbot.yaml", "rules.yaml"
AT_ONCE = (
    ("api_key: e621-key", "api_key: ${E621_KEY}"),
    ('"http://127.0.0.1:8080/hook"', '"${HOOK_URL}"'),
)
CODE = "subject: {regex: '(?i)code'}"
PH = '  phone: {type: ntfy, url: "https://ntfy.sh/alice-inbox"}'
# fmt: off
CASES = [
    # typos, at every level
    bad("typo", "top-key", C, "rules: [", "rule: [", 17, "rule: unknown key"),
    bad("typo", "top-key-templates", C, "templates:", "template:", 18, "template: unknown key"),
    bad("typo", "account-key", C, "    every: 30s", "    evry: 30s", 6, "accounts.signup.evry: unknown key"),
    bad("typo", "account-secret-key", C, "    token: td", "    tokn: td", 2,
        "accounts.signup.token: required key is missing", "accounts.signup.tokn: unknown key"),
    bad("typo", "account-type", C, "type: mailtd", "type: maildt", 3, "'maildt'; allowed: e621, imap, mailtd"),
    bad("typo", "feed-name", C, "dmails: {every", "dmail: {every", 11, "unknown feed 'dmail'"),
    bad("typo", "feed-key", C, "dmails: {every", "dmails: {evry", 12, "feeds.dmails.evry: unknown key"),
    bad("typo", "sink-key", C, "ntfy, url:", "ntfy, ulr:", 14, "sinks.phone.ulr: unknown key"),
    bad("typo", "sink-type", C, "type: console", "type: consol", 16, "sinks.screen.type: 'consol'"),
    bad("typo", "backlog-value", C, "templates: [templates]", "templates: [templates]\nbacklog: skipp", 19,
        "backlog: Input should be 'skip' or 'notify', not 'skipp'"),
    bad("typo", "alerts-to", C, "templates: [templates]", "templates: [templates]\nalerts_to: phon", 19,
        "alerts_to: unknown sink 'phon'"),
    bad("typo", "rule-key", R, "  stop: true", "  stopp: true", 13, "rule 'verification-code' stopp: unknown key"),
    bad("typo", "notify-key", R, "      priority: high", "      priorty: high", 11,
        "rule 'verification-code' notify.0.priorty: unknown key"),
    bad("typo", "field", R, "    subject: {regex", "    subjet: {regex", 4,
        "rule 'verification-code' when.subjet: unknown field 'subjet'"),
    bad("typo", "operator", R, "{regex: '(?i)code'}", "{regexp: '(?i)code'}", 4, "unknown operator 'regexp'"),
    bad("typo", "combinator", R, CODE, "anyof: [{subject: x}]", 4, "unknown field 'anyof'"),
    bad("typo", "action", R, "then: [mark_read, {", "then: [mark_as_read, {", 12,
        "rule 'verification-code' then.0: action 'mark_as_read' is not available"),
    bad("typo", "sink-name", R, "    - sink: phone", "    - sink: phon", 8,
        "rule 'verification-code' notify.0.sink: unknown sink 'phon'; configured: hooks, phone, screen"),
    bad("typo", "extract-from", R, "{from: text,", "{from: txt,", 6, "extract.code.from: unknown field 'txt'"),
    bad("typo", "if-field", R, "unread: true", "if: \"{{ item.subjct == 'x' }}\"", 18,
        "rule 'staff-dmail' when.if: 'item' has no field 'subjct' (fields: account, feed"),
    bad("typo", "if-name", R, "unread: true", "if: \"{{ code == '123456' }}\"", 18,
        "when.if: 'code' is not defined here; a condition sees: item, account, now"),
    bad("typo", "action-argument", R, "{delete: {after: 1h}}", "{delete: {aftr: 1h}}", 12,
        "rule 'verification-code' then.1.delete.aftr: unknown argument; allowed: after, message"),
    bad("typo", "raw-without-dot", R, "unread: true", "raw: {is_read: 1}", 18,
        "rule 'staff-dmail' when.raw: raw takes the upstream's key after a dot: raw.<key>"),
    bad("typo", "priority-capital", R, "priority: high", "priority: High", 11,
        "notify.0.priority: Input should be 'min', 'low', 'default', 'high' or 'urgent', not 'High'"),
    bad("typo", "notify-sinks", R, "      priority: high", "      priority: high\n      sinks: screen", 12,
        "rule 'verification-code' notify.0.sinks: unknown key"),
    # wrong types
    bad("type", "duration", C, "every: 30s", "every: soon", 6, "'soon' is not a duration"),
    bad("type", "sink-not-mapping", C, "  screen: {type: console}", "  screen: console", 16, "sinks.screen.type: missing"),
    bad("type", "integer", C, "templates: [templates]", "templates: [templates]\nmax_actions_per_poll: lots", 19,
        "max_actions_per_poll: Input should be a valid integer"),
    bad("type", "rules-not-list", C, "rules: [rules.yaml]", "rules: rules.yaml", 17, "rules: Input should be a valid list"),
    bad("type", "feed-enabled", C, "dmails: {every: 2m}", "dmails: {every: 2m, enabled: maybe}", 12,
        "feeds.dmails.enabled: Input should be a valid boolean"),
    bad("type", "priority", R, "priority: high", "priority: highest", 11, "rule 'verification-code' notify.0.priority"),
    bad("type", "stop", R, "  stop: true", "  stop: at once", 13,
        "rule 'verification-code' stop: Input should be a valid boolean"),
    bad("type", "notify-a-name", R, '  notify: {sink: screen, message: "{{ item.subject }}"}', "  notify: screen", 19,
        "rule 'staff-dmail' notify.0: Input should be a valid dictionary"),
    bad("type", "rule-file-mapping", R, "- name: verification-code\n", "rules:\n- name: verification-code\n", 1,
        "a rule file is a list of rules", named=False),
    bad("type", "feed-shorthand", C, "dmails: {every: 2m}", "dmails: 2m", 12,
        "accounts.furry.feeds.dmails: Input should be a valid dictionary"),
    bad("type", "headers-list", C, "rate: 30/min}", "rate: 30/min, headers: [Authorization: x]}", 15,
        "sinks.hooks.headers: Input should be a valid dictionary"),
    bad("type", "sink-a-list", R, "    - sink: phone", "    - sink: [phone, screen]", 8,
        "rule 'verification-code' notify.0.sink: Input should be a valid string"),
    bad("type", "when-a-list", R, "    upstream: e621\n    kind: dmail\n    unread: true",
        "    - upstream: e621\n    - kind: dmail", 15, "rule 'staff-dmail' when: Input should be a valid dictionary"),
    bad("type", "any-a-mapping", R, CODE, "any: {subject: code, text: code}", 4,
        "rule 'verification-code' when.any: any takes a non-empty list of conditions"),
    bad("type", "not-a-list", R, "unread: true", "not: [kind: email]", 18,
        "rule 'staff-dmail' when.not: conditions must be a mapping of fields to values"),
    bad("type", "message-on-mark-read", R, "  then: [mark_read]\n", "  then: [{mark_read: {message: seen}}]\n", 20,
        "rule 'staff-dmail' then.0: mark_read takes no message (only reply does)"),
    bad("type", "extract-a-field-name", R, "    code: {from", "    code: text\n    other: {from", 6,
        "rule 'verification-code' extract.code: Input should be a valid dictionary"),
    bad("type", "extract-from-raw", R, "{from: text,", "{from: raw.code,", 6, "extract.code.from: unknown field 'raw.code'"),
    bad("type", "extract-bad-regex", R, "regex: '\\b(\\d{6})\\b'", "regex: '(\\d{6}'", 6, "extract.code.regex: bad regex"),
    # indentation
    bad("indent", "account-key-too-far-left", C, "    token: td_secret", "  token: td_secret", 6,
        "YAML syntax error", "check the indentation"),
    bad("indent", "conditions-beside-when", R, "    kind: email\n    subject:", "  kind: email\n  subject:", 2,
        "rule 'verification-code' when: Input should be a valid dictionary", "kind: unknown key"),
    bad("indent", "sink-at-top", C, "sinks:\n  phone:", "sinks:\nphone:", 15, "YAML syntax error", "check the indentation"),
    bad("indent", "notify-key-too-far-left", R, "    - sink: phone", "    - sink: phone\n   title: x", 9,
        "YAML syntax error", named=False),
    # tabs
    bad("tab", "config", C, "    every: 30s", "\tevery: 30s", 6, "YAML syntax error", "indent with spaces, not tabs"),
    bad("tab", "rules", R, "    kind: email", "\tkind: email", 3, "indent with spaces, not tabs", named=False),
    # duplicate keys
    bad("duplicate", "config-key", C, "    every: 30s", "    every: 30s\n    every: 1m", 7,
        "duplicate key 'every' (first on line 6)"),
    bad("duplicate", "account", C, "  furry:", "  signup:", 7, "duplicate key 'signup'"),
    bad("duplicate", "rule-key", R, "    kind: email", "    kind: email\n    kind: chat", 4,
        "rule 'verification-code': duplicate key 'kind' (first on line 3)"),
    bad("duplicate", "rule-name", R, "- name: staff-dmail", "- name: verification-code", 14,
        "rule name 'verification-code' is used twice"),
    # closed sets: what the configuration has
    bad("closed-set", "kind", R, "    kind: email", "    kind: mail", 3,
        "rule 'verification-code' when.kind: 'mail' is not a kind of any configured account; kinds: email, dmail, comment"),
    bad("closed-set", "kind-in-list", R, "    kind: email", "    kind: [email, e-mail]", 3, "when.kind.1: 'e-mail' is not a kind"),
    bad("closed-set", "kind-not-configured", R, "    kind: email", "    kind: chat", 3, "'chat' is not a kind of any configured account"),
    bad("closed-set", "upstream", R, "upstream: e621", "upstream: e926", 16,
        "rule 'staff-dmail' when.upstream: 'e926' is not the type of any configured account; configured: mailtd, e621"),
    bad("closed-set", "upstream-with-dot", R, "upstream: e621", "upstream: mail.td", 16, "'mail.td' is not the type"),
    bad("closed-set", "account", R, "    kind: email", "    account: singup", 3,
        "when.account: unknown account 'singup'; configured: signup, furry"),
    bad("closed-set", "feed", R, "    kind: email", "    feed: message", 3,
        "when.feed: 'message' is not a feed of any configured account; feeds: messages, dmails"),
    bad("closed-set", "ne", R, "    kind: email", "    kind: {ne: mails}", 3, "when.kind.ne: 'mails' is not a kind"),
    bad("closed-set", "reaches-no-account", R, "upstream: e621", "upstream: mailtd", 15,
        "rule 'staff-dmail' when: no configured account has upstream: mailtd, kind: dmail together"),
    bad("closed-set", "action-of-other-kind", R, "  then: [mark_read]\n", "  then: [vote_up]\n", 20,
        "rule 'staff-dmail' then.0: action 'vote_up' is not available for account 'furry' (e621 dmail)"),
    # operators that cannot apply to the field's type
    bad("operator-type", "regex-on-boolean", R, "unread: true", "unread: {regex: 'yes'}", 18,
        "rule 'staff-dmail' when.unread.regex: regex tests text, and unread is a boolean"),
    bad("operator-type", "gt-on-text", R, CODE, "subject: {gt: 5}", 4,
        "when.subject.gt: gt compares numbers, dates, durations and the count of a list field, and subject is text"),
    bad("operator-type", "text-for-boolean", R, "unread: true", "unread: 'yes'", 18, "when.unread: 'yes' is not a boolean"),
    bad("operator-type", "contains-on-duration", R, CODE, "age: {contains: 1h}", 4, "contains tests text, and age is a duration"),
    bad("operator-type", "startswith-on-date", R, CODE, "created_at: {startswith: '2026'}", 4, "created_at is a date"),
    bad("operator-type", "boolean-for-text", R, CODE, "subject: yes", 4,
        "subject is text, not True: YAML reads yes/no/on/off as booleans; quote the value"),
    bad("operator-type", "count-not-number", R, CODE, "links: {gt: many}", 4, "expected a number, not 'many'"),
    bad("operator-type", "bad-date", R, CODE, "created_at: {gt: yesterday}", 4, "when.created_at.gt"),
    bad("operator-type", "bad-regex", R, "(?i)code'}", "(?i)code['}", 4, "bad regex"),
    bad("operator-type", "in-without-list", R, "    kind: email", "    kind: {in: email}", 3, "in takes a list of values"),
    bad("operator-type", "several-in-one-rule", R, f"    kind: email\n    {CODE}", "    kind: mail\n    subject: {gt: 5, regex: '['}", 3,
        "'mail' is not a kind", "subject.gt:", "subject.regex: bad regex"),
    bad("operator-type", "no-operator", R, CODE, "subject: {}", 4,
        "rule 'verification-code' when.subject: {} names no operator"),
    bad("operator-type", "empty-list", R, "    kind: email", "    kind: []", 3, "when.kind: an empty list matches nothing"),
    bad("operator-type", "eq-text-on-boolean", R, "unread: true", "unread: {eq: 'yes'}", 18, "when.unread.eq: 'yes' is not a boolean"),
    bad("operator-type", "contains-a-list", R, CODE, "subject: {contains: [code, pin]}", 4,
        "when.subject.contains: contains takes text"),
    bad("operator-type", "age-in-words", R, CODE, "age: {lt: 10 minutes}", 4, "when.age.lt: '10 minutes' is not a duration"),
    # missing pieces
    bad("missing", "sink-type", C, "  screen: {type: console}", "  screen: {}", 16,
        "sinks.screen.type: missing; allowed: console, discord"),
    bad("missing", "smtp-keys", C, "  screen: {type: console}", "  screen: {type: smtp, host: mail.example.org}", 16,
        "sinks.screen.from: required key is missing", "sinks.screen.to: required key is missing"),
    bad("missing", "rule-files", C, "rules: [rules.yaml]", "rules: [rule/*.yaml]", 17, "rules: 'rule/*.yaml' names no file"),
    bad("missing", "templates-folder", C, "templates: [templates]", "templates: [tmpl]", 18, "tmpl is not a folder"),
    bad("missing", "notify-message", R, '      message: "{{ item.subject }}"\n', "", 8,
        "rule 'verification-code' notify.0: give a template, or an inline message (and title)"),
    bad("missing", "alerts-to", C, "templates: [templates]", "templates: [templates]\nalerts_after: 30m", 19,
        "alerts_after: no alert is sent without alerts_to: SINK"),
    bad("missing", "rule-name", R, "- name: staff-dmail\n  when:", "- when:", 14, "rule #2 name: required key is missing"),
    # YAML reading what the user did not mean
    bad("yaml", "unquoted-template", R, 'message: "{{ item.subject }}"\n      priority', "message: {{ item.subject }}\n      priority", 10,
        'rule \'verification-code\': YAML reads an unquoted {{ … }} as a mapping; quote it: "{{ … }}"'),
    bad("yaml", "unquoted-colon", R, 'title: "Code {{ code }}"', "title: Code: {{ code }}", 9,
        "YAML syntax error: mapping values are not allowed here; check the indentation, or quote a value that holds ': '",
        named=False),
    bad("yaml", "extraction-named-item", R, "    code: {from", "    item: {from", 6,
        "rule 'verification-code' extract.item: 'item' is a name templates already have"),
    # variables
    bad("variable", "several-unset", C, "token: td_secret", "token: ${MAILTD_TOKEN}", 5,
        "accounts.signup.token: environment variable MAILTD_TOKEN is not set",
        "accounts.furry.api_key: environment variable E621_KEY is not set",
        "sinks.hooks.url: environment variable HOOK_URL is not set", also=AT_ONCE),
    bad("variable", "unclosed", C, "token: td_secret", "token: ${MAILTD_TOKEN", 5, "a ${ without its }"),
    bad("variable", "unreadable-file", C, "token: td_secret", "token: ${file:/nonexistent/token}", 5,
        "cannot read /nonexistent/token"),
    bad("variable", "not-a-name", C, "token: td_secret", "token: ${MAILTD TOKEN}", 5, "is neither a variable name nor file:PATH"),
    bad("variable", "in-a-rule-file", R, 'title: "Code {{ code }}"', 'title: "${PREFIX} {{ code }}"', 9,
        "rule 'verification-code' notify.0.title: environment variable PREFIX is not set"),
    valid("variable", "dollar-before-template", R, 'title: "Code {{ code }}"', 'title: "Price ${{ code }}"',
          "${{ … }} is a $ before a template, not a variable"),
    # URLs
    bad("url", "base-url-without-scheme", C, "    type: mailtd\n", "    type: mailtd\n    base_url: api.mail.td\n", 4,
        "accounts.signup.base_url: 'api.mail.td' is not a server's address (it does not start with http:// or https://); write e.g. https://example.org"),
    bad("url", "base-url-ftp", C, "    type: e621\n", "    type: e621\n    base_url: ftp://e621.net\n", 9,
        "ftp:// is not one of http://, https://"),
    bad("url", "webhook-without-scheme", C, "http://127.0.0.1:8080/hook", "127.0.0.1:8080/hook", 15,
        "sinks.hooks.url: not a URL (it does not start with http:// or https://); write e.g. https://"),
    bad("url", "webhook-without-host", C, "http://127.0.0.1:8080/hook", "https:///hook", 15, "it has no host"),
    bad("url", "ntfy-without-topic", C, "https://ntfy.sh/alice-inbox", "https://ntfy.sh", 14, "sinks.phone.url: the URL must end with a topic"),
    bad("url", "mqtt-as-http", C, "  screen: {type: console}", '  screen: {type: mqtt, url: "http://broker:1883", topic: x}', 16,
        "sinks.screen.url: write mqtt://host:1883 or mqtts://host:8883"),
    bad("url", "discord-without-scheme", C, "  screen: {type: console}", '  screen: {type: discord, url: "discord.com/api/webhooks/1/x"}', 16,
        "sinks.screen.url: not a URL", "the value is not shown"),
    # secrets
    bad("secret", "empty-default", C, "token: td_secret", "token: ${TOKEN:-}", 5, "accounts.signup.token: is empty"),
    bad("secret", "empty-literal", C, "api_key: e621-key", "api_key: ''", 10, "accounts.furry.api_key: is empty"),
    bad("secret", "dollar-without-braces", C, "token: td_secret", "token: $MAILTD_TOKEN", 5,
        "accounts.signup.token: '$MAILTD_TOKEN' is taken as it is written; write ${MAILTD_TOKEN}"),
    bad("secret", "empty-header", C, "rate: 30/min}", 'rate: 30/min, headers: {Authorization: "${TOKEN:-}"}}', 15,
        "sinks.hooks.headers: is empty"),
    bad("secret", "empty-sink-token", C, 'alice-inbox"}', 'alice-inbox", token: ""}', 14, "sinks.phone.token: is empty"),
    bad("secret", "empty-username", C, "username: alice", "username: ''", 9, "accounts.furry.username: String should have at least 1 character"),
    # intervals
    bad("interval", "milliseconds", C, "every: 30s", "every: 100ms", 6, "accounts.signup.every: 0.1s is too often"),
    bad("interval", "zero", C, "every: 30s", "every: 0", 6, "0s is too often"),
    bad("interval", "feed", C, "dmails: {every: 2m}", "dmails: {every: 0.5s}", 12, "feeds.dmails.every: 0.5s is too often"),
    bad("interval", "negative", C, "every: 30s", "every: -5s", 6, "accounts.signup.every: '-5s' is not a duration"),
    bad("interval", "in-words", C, "every: 30s", "every: 30 seconds", 6, "'30 seconds' is not a duration; write e.g. 30s, 2m"),
    valid("interval", "compound", C, "every: 30s", "every: 1h30m", "durations combine units"),
    valid("interval", "bare-number", C, "every: 30s", "every: 30", "a bare number is seconds"),
    valid("interval", "e621-every-second", C, "dmails: {every: 2m}", "dmails: {every: 1s}",
          "allowed, but e621 asks for 1 request/s: check warns",
          "warning: accounts.furry.feeds.dmails.every: 1s means 60 requests/min; e621 asks for at most 1 request/s"),
    valid("interval", "mailtd-every-second", C, "every: 30s", "every: 1s", "Mail.td's budget is 4 requests/s: far from it"),
    # rates
    bad("rate", "sink-words", C, "rate: 30/min", "rate: 30 per minute", 15,
        "sinks.hooks.rate: '30 per minute' is not a rate; write e.g. 4/s, 20/min, 100/hour"),
    bad("rate", "sink-bare-number", C, "rate: 30/min", "rate: 30", 15, "sinks.hooks.rate: 30 is not a rate"),
    bad("rate", "zero", C, "rate: 30/min", "rate: 0/s", 15, "'0/s' is not a rate"),
    bad("rate", "account-unit", C, "every: 30s", "every: 30s\n    rate: 4/ms", 7, "accounts.signup.rate: '4/ms' is not a rate"),
    bad("rate", "fraction", C, "rate: 30/min", "rate: 0.5/s", 15, "'0.5/s' is not a rate", "1/2s is one every 2 s"),
    bad("rate", "negative", C, "rate: 30/min", "rate: -1/s", 15, "'-1/s' is not a rate"),
    valid("rate", "every-two-seconds", C, "rate: 30/min", "rate: 1/2s", "a count per a number of units"),
    valid("rate", "spaces", C, "rate: 30/min", "rate: 30 / min", "spaces around the slash are ignored"),
    valid("rate", "account-bare-number", C, "every: 30s", "every: 30s\n    rate: 4", "an account's bare number is per second"),
    valid("rate", "account-per-second", C, "every: 30s", "every: 30s\n    rate: 10/s", "Mail.td Pro"),
    valid("rate", "sink-per-hour", C, "rate: 30/min", "rate: 100/hour", "any of s, min, hour, day"),
    valid("rate", "sink-plural-unit", C, "rate: 30/min", "rate: 30/minutes", "plural units read as singular"),
    # noise control: quiet hours, limits, groups
    bad("noise", "zone-typo", C, PH, PH[:-1] + ', quiet: {from: "22:00", to: "07:00", tz: Europe/Berln}}', 14,
        "sinks.phone.quiet.tz: unknown time zone 'Europe/Berln'; closest: Europe/Berlin"),
    bad("noise", "time", C, PH, PH[:-1] + ', quiet: {from: "10pm", to: "07:00"}}', 14,
        "sinks.phone.quiet.from: '10pm' is not a time of day; write it as \"22:00\""),
    bad("noise", "hour-25", C, PH, PH[:-1] + ', quiet: {from: "25:00", to: "07:00"}}', 14, "'25:00' is not a time of day"),
    bad("noise", "same-times", C, PH, PH[:-1] + ', quiet: {from: "07:00", to: "07:00"}}', 14,
        "from and to are the same time"),
    bad("noise", "day", C, PH, PH[:-1] + ', quiet: {from: "22:00", to: "07:00", days: [mon, thr]}}', 14,
        "unknown day 'thr'; allowed: mon, tue, wed, thu, fri, sat, sun"),
    bad("noise", "except-priority", C, PH, PH[:-1] + ', quiet: {from: "22:00", to: "07:00", except: loud}}', 14,
        "sinks.phone.quiet.except: Input should be 'min', 'low', 'default', 'high' or 'urgent'"),
    bad("noise", "quiet-key", C, PH, PH[:-1] + ', quiet: {start: "22:00", to: "07:00"}}', 14,
        "sinks.phone.quiet.start: unknown key"),
    bad("noise", "limit-zero", C, PH, PH[:-1] + ", limit: 0/1h}", 14, "sinks.phone.limit: '0/1h' lets nothing through"),
    bad("noise", "limit-words", C, PH, PH[:-1] + ", limit: 5 per hour}", 14, "'5 per hour' is not a rate"),
    bad("noise", "group-by-field", R, "      priority: high", "      priority: high\n      group: {by: [sendr]}", 12,
        "rule 'verification-code' notify.0.group.by.0: unknown field 'sendr'; allowed: account"),
    bad("noise", "group-wait", R, "      priority: high", "      priority: high\n      group: {wait: soon}", 12,
        "rule 'verification-code' notify.0.group.wait: 'soon' is not a duration"),
    bad("noise", "group-max", R, "      priority: high", "      priority: high\n      group: {max: 0}", 12,
        "notify.0.group.max: Input should be greater than or equal to 1"),
    bad("noise", "group-template", R, "      priority: high", "      priority: high\n      group: {template: nope}", 12,
        "group.template 'nope'"),
    bad("noise", "rule-limit", R, "  stop: true", "  stop: true\n  limit: 0/10min", 14,
        "rule 'verification-code' limit: '0/10min' lets nothing through"),
    valid("noise", "unquoted-times", C, PH, PH[:-1] + ", quiet: {from: 22:00, to: 07:00, tz: Europe/Berlin}}",
          "YAML 1.1 reads 22:00 as minutes (1320): taken as the time"),
    valid("noise", "zone-case", C, PH, PH[:-1] + ', quiet: {from: "22:00", to: "07:00", tz: europe/berlin}}',
          "a zone in other case is the zone"),
    valid("noise", "group-by-extraction", R, "      priority: high", "      priority: high\n      group: {by: [code]}",
          "by takes the rule's extractions too"),
    valid("noise", "rule-group", R, "  stop: true", "  stop: true\n  group: {wait: 1m}", "a rule-level group applies to its notifies"),
    # valid on purpose
    valid("valid", "number-on-text-field", R, "    kind: email", "    kind: email\n    id: 12345", "a whole number on a text field means its digits"),
    valid("valid", "unread-null", R, "unread: true", "unread: null", "null matches upstreams without read state"),
    valid("valid", "raw-anything", R, "unread: true", "raw.is_read: {gt: 0, regex: x}", "raw.<key> is the upstream's own data"),
    valid("valid", "priority-number", R, "priority: high", "priority: 4", "1–5 map to min…urgent"),
    valid("valid", "then-as-text", R, "  then: [mark_read]\n", "  then: mark_read\n", "a single action needs no list"),
    valid("valid", "count-of-list", R, CODE, "attachments: {gte: 1}", "a comparison on a list compares the count"),
    valid("valid", "text-test-on-list", R, CODE, "links: {contains: verify}", "a text test on a list holds for one element"),
    valid("valid", "if-expression", R, "unread: true", "if: \"item.sender | lower == 'admin' and account == 'furry'\"",
          "a bare Jinja expression over item, account and now"),
    valid("valid", "unquoted-date", R, CODE, "created_at: {gt: 2024-01-01}", "YAML's date is a date"),
    valid("valid", "variable-default", C, '"http://127.0.0.1:8080/hook"', '"${HOOK_URL:-http://127.0.0.1:8080/hook}"',
          "a default stands for an unset variable"),
    valid("valid", "string-boolean", R, "  stop: true", '  stop: "true"', "true/false in quotes still read as booleans"),
    valid("valid", "disabled-draft", R, "    kind: dmail\n    unread: true", "    kind: dmails\n    unread: true\n  enabled: false",
          "a disabled rule is a draft: not compiled until enabled (then check proves it)",
          "accounts.furry: no rule sees its items"),
    valid("valid", "no-notify", R, '  notify: {sink: screen, message: "{{ item.subject }}"}', "  notify: []",
          "a rule may only act", "sinks.screen: no rule sends to it"),
]
# fmt: on


def check(tmp_path: Path, config: str, rules: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / C).write_text(config)
    (tmp_path / R).write_text(rules)
    clean = {
        k: v for k, v in os.environ.items() if k not in VARIABLES and not k.startswith("INBOXBOT_")
    }
    return subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(tmp_path / C), "check"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean,
    )  # fmt: skip


def test_the_base_files_pass(tmp_path: Path) -> None:
    proc = check(tmp_path, CONFIG, RULES)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "ok (2 feeds, 3 rules, 3 sinks)" in proc.stdout


def test_the_corpus_is_large_enough() -> None:
    categories = {c.id.split("-")[0] for c in CASES}  # type: ignore[union-attr]
    assert len(CASES) >= 70 and len(categories) >= 12


@pytest.mark.parametrize(("file", "edits", "expect"), CASES)
def test_a_mistake_is_refused_or_valid_on_purpose(
    tmp_path: Path, file: str, edits: tuple[tuple[str, str], ...], expect: dict[str, Any]
) -> None:
    texts = {C: CONFIG, R: RULES}
    for old, new in edits:
        assert texts[file].count(old) == 1, f"{old!r} must occur once in {file}"
        texts[file] = texts[file].replace(old, new)
    proc = check(tmp_path, texts[C], texts[R])
    assert "Traceback" not in proc.stderr, proc.stderr
    if "valid" in expect:
        assert proc.returncode == 0, proc.stderr
        assert expect["warns"] in proc.stderr if expect["warns"] else proc.stderr == "", proc.stderr
        return
    assert proc.returncode == 2, proc.stdout
    lines = proc.stderr.strip().splitlines()
    path = str(tmp_path / file)
    for line in lines:
        assert re.match(rf"{re.escape(str(tmp_path))}/\S+:\d+: ", line), line
        if line.startswith(f"{tmp_path / R}:") and expect["named"]:
            assert re.search(r"rule (name )?('[^']+'|#\d+)", line), line
    first, *others = expect["texts"]
    assert any(line.startswith(f"{path}:{expect['line']}: ") and first in line for line in lines), (
        f"want {path}:{expect['line']}: …{first}…, got:\n{proc.stderr}"
    )
    for text in others:
        assert text in proc.stderr, proc.stderr


def test_every_error_of_a_file_at_once_sorted_by_line_naming_its_rule(tmp_path: Path) -> None:
    rules = RULES.replace("kind: email", "kind: mail").replace("priority: high", "priority: top")
    rules = rules.replace("unread: true", "unread: {regex: 'yes'}").replace("txt", "text")
    proc = check(tmp_path, CONFIG, rules)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    found = [re.match(r"(\S+):(\d+): (.*)", line) for line in proc.stderr.splitlines()]
    assert all(found), proc.stderr
    where = [(Path(m[1]).name, int(m[2])) for m in found if m]
    assert where == [(R, 3), (R, 11), (R, 18)], proc.stderr
    names = [m[3].split(" ")[1] for m in found if m and m[1].endswith(R)]
    assert names == ["'verification-code'"] * 2 + ["'staff-dmail'"], proc.stderr


def test_a_reply_needs_its_message(tmp_path: Path) -> None:
    config = CONFIG.replace(
        "      dmails: {every: 2m}", "      comments: {every: 10m, search: {poster_id: 7}}"
    )
    rules = "- name: thank\n  when: {kind: comment}\n  then: [reply]\n"
    proc = check(tmp_path, config, rules)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        f"{tmp_path / R}:3: rule 'thank' then.0: reply needs a message: "
        '{reply: {message: "…"}}\n'
    )
    ok = rules.replace("[reply]", "[{reply: {message: 'Thanks, {{ item.sender }}!'}}]")
    assert check(tmp_path, config, ok).returncode == 0
