"""`check` proves the templates: each template file, inline title/message and reply is rendered
on a sample item of every upstream its rule can see, so a name a template gets wrong is
refused at check time (file:line, the rule's name) instead of losing the notification at run
time. Run as a user runs it: `python -m bot --config F check` in a temp folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
accounts:
  signup: {type: mailtd, account_id: me@mail.td, token: td_secret_token_value}
  furry:
    type: e621
    username: alice
    api_key: e621_secret_key
    feeds: {dmails: {}, comments: {search: {poster_id: 1}}}
  work: {type: rocketchat, base_url: "https://chat.example.org", user_id: u1, token: rc_secret}
sinks:
  screen: {type: console}
  phone: {type: ntfy, url: "https://ntfy.sh/alice", format: markdown}
rules: [rules/*.yaml]
templates: [templates]
"""

RULES = """\
- name: new-mail
  when: {kind: email, unread: true}
  notify: [{sink: screen, template: email}]

- name: verification-code
  when: {kind: email}
  extract:
    code: {from: text, regex: '(\\d{4,8})'}
    link: {from: links, regex: verify}
  notify:
    - sink: phone
      title: "Code {{ code }}"
      message: "{{ item.subject }}\\n{{ link }}"

- name: chat-reply
  when: {kind: chat}
  notify: [{sink: phone, template: chat}]
  then: [{reply: {message: "Thanks {{ item.sender }}, got it."}}]
"""

EMAIL = """\
{% block title %}{{ item.sender }}: {{ item.subject | truncate(80) }}{% endblock %}
{% block message %}
{{ item.text | truncate(240) }}
{% if item.attachments %}📎 {{ item.attachments | map(attribute='name') | join(', ') }}{% endif %}
{% endblock %}
"""

CHAT = """\
{% block title %}{{ item.sender }}{% endblock %}
{% block message %}{{ item.text | truncate(240) }}{% endblock %}
"""

MACROS = "{% macro short(text) %}{{ text | truncate(40) }}{% endmacro %}\n"

FILES = {
    "inboxbot.yaml": CONFIG,
    "rules/r.yaml": RULES,
    "templates/email.j2": EMAIL,
    "templates/chat.j2": CHAT,
    "templates/macros.j2": MACROS,
}
R, E, M = "rules/r.yaml", "templates/email.j2", "templates/macros.j2"

# (what the user got wrong, file, replace this, with that, file and line the error names,
#  the rule it names, text in the error)
MISTAKES = [
    # item fields misspelt, in every place a template can be
    ("inline message field typo", R, "{{ item.subject }}", "{{ item.subjct }}", (R, 13),
     "verification-code", "notify[0].message: 'item' has no field 'subjct' (fields: account, feed"),
    ("inline title field typo", R, '"Code {{ code }}"', '"Code {{ item.txt }}"', (R, 12),
     "verification-code", "notify[0].title: 'item' has no field 'txt'"),
    ("template file field typo", E, "{{ item.sender }}", "{{ item.sendr }}", (E, 1),
     "new-mail", "notify[0].template 'email' ({dir}/rules/r.yaml:3): 'item' has no field 'sendr'"),
    ("typo in a branch a sample does not take", E, "{% if item.attachments %}",
     "{% if not item.unread %}{{ item.bdy }}{% endif %}{% if item.attachments %}", (E, 4),
     "new-mail", "'item' has no field 'bdy'"),
    ("reply field typo", R, "Thanks {{ item.sender }}", "Thanks {{ item.from }}", (R, 18),
     "chat-reply", "then[0].reply.message: 'item' has no field 'from'"),
    ("a field the upstream never fills, used unguarded", R, "Thanks {{ item.sender }}",
     "Thanks {{ item.html | length }}", (R, 18), "chat-reply",
     "(on a rocketchat chat; it never has html: guard with {% if … %})"),
    ("subscript field typo", R, "{{ item.subject }}", "{{ item['subjekt'] }}", (R, 13),
     "verification-code", "'item' has no field 'subjekt'"),
    ("attachment field typo", E, "{{ item.attachments | map(attribute='name') | join(', ') }}",
     "{{ item.attachments[0].filename }}", (E, 4),
     "new-mail", "'attachment' has no field 'filename' (fields: name, content_type, size)"),
    ("loop variable field typo", R, "{{ item.subject }}",
     "{% for a in item.attachments %}{{ a.nme }}{% endfor %}", (R, 13),
     "verification-code", "'attachment' has no field 'nme'"),
    # names that are not there
    ("missing extraction", R, '"Code {{ code }}"', '"Code {{ cod }}"', (R, 12),
     "verification-code",
     "'cod' is undefined (extractions: code, link; also: item, rule, account, now, format)"),
    ("extraction in a rule without any", R, "Thanks {{ item.sender }}", "Thanks {{ code }}",
     (R, 18), "chat-reply", "'code' is undefined (extractions: none; also: item, rule"),
    ("format in a reply (only notifications have one)", R, "got it.", "{{ format }}", (R, 18),
     "chat-reply", "'format' is undefined"),
    ("a bare field name without item.", E, "{{ item.text | truncate(240) }}",
     "{{ text | truncate(240) }}", (E, 3), "new-mail", "'text' is undefined"),
    ("undefined macro", E, "{{ item.text | truncate(240) }}", "{{ shorten(item.text) }}",
     (E, 3), "new-mail", "'shorten' is undefined"),
    ("misspelt macro of an import", E, "{{ item.text | truncate(240) }}",
     "{% import 'macros.j2' as m %}{{ m.shrt(item.text) }}", (E, 3), "new-mail",
     "has no attribute 'shrt'"),
    # filters and tests
    ("unknown filter inline", R, "{{ item.subject }}", "{{ item.subject | upper_case }}",
     (R, 13), "verification-code", "No filter named 'upper_case'"),
    ("unknown filter in a template file", E, "truncate(80)", "trunc(80)", (E, 1), "new-mail",
     "No filter named 'trunc'"),
    ("unknown test", R, "{{ item.subject }}", "{% if item.subject is containing 'x' %}x{% endif %}",
     (R, 13), "verification-code", "No test named 'containing'"),
    ("ago on a text", R, "{{ item.subject }}", "{{ item.subject | ago }}", (R, 13),
     "verification-code", "filter 'ago' cannot take this value (AttributeError"),
    ("a list's field", E, "{{ item.attachments | map(attribute='name') | join(', ') }}",
     "{{ item.attachments.name }}", (E, 4), "new-mail", "'list object' has no attribute 'name'"),
    ("a duration's missing attribute", R, "{{ item.subject }}", "{{ item.age.minutes }}",
     (R, 13), "verification-code", "'datetime.timedelta object' has no attribute 'minutes'"),
    ("rule is a name, not an object", R, "Thanks {{ item.sender }}", "Thanks {{ rule.name }}",
     (R, 18), "chat-reply", "'str object' has no attribute 'name'"),
    ("a method text does not have", R, "{{ item.subject }}", "{{ item.subject.uppercase() }}",
     (R, 13), "verification-code", "has no attribute 'uppercase'"),
    # syntax
    ("inline syntax error", R, "{{ item.subject }}", "{{ item.subject }", (R, 13),
     "verification-code", "template syntax error: unexpected '}'"),
    ("reply syntax error", R, "Thanks {{ item.sender }}", "Thanks {{ item.sender ", (R, 18),
     "chat-reply", "template syntax error"),
    ("if without endif in a template file", E, "{% endif %}\n", "\n", (E, 5), "new-mail",
     "template syntax error"),
    ("block without endblock", E, "truncate(80) }}{% endblock %}", "truncate(80) }}", (E, 1),
     "new-mail", "template syntax error: '{% block %}' is never closed (add '{% endblock %}')"),
    # templates that are not there
    ("template name typo", R, "template: email}", "template: emial}", (R, 3), "new-mail",
     "template 'emial.j2' not found"),
    ("include of a missing template", E, "{% endblock %}\n{% block message %}",
     "{% endblock %}\n{% block message %}{% include 'footer.j2' %}", (E, 2), "new-mail",
     "template 'footer.j2' not found"),
    ("inline include of a missing template", R, "{{ item.subject }}",
     "{% include 'signature.j2' %}", (R, 13), "verification-code",
     "template 'signature.j2' not found"),
    ("extends a missing parent", E, "{% block title %}", "{% extends 'base.j2' %}{% block title %}",
     (E, 1), "new-mail", "template 'base.j2' not found"),
    ("template without a message block", E, "{% block message %}", "{% block body %}", (E, 1),
     "new-mail", "template 'email' lacks block 'message'"),
    ("template without a title block", E,
     "{% block title %}{{ item.sender }}: {{ item.subject | truncate(80) }}{% endblock %}\n", "",
     (E, 1), "new-mail", "template 'email' lacks block 'title'"),
    ("a block given twice", E, "{% block message %}",
     "{% block title %}{% endblock %}{% block message %}", (E, 2), "new-mail", "template syntax error: block 'title' defined twice"),
    # macros: their own names, and the fields of what they are given
    ("undefined name in the template's own macro", E, "{% block title %}",
     "{% macro who(i) %}{{ i.sender }}{{ sep }}{% endmacro %}{% block title %}", (E, 1),
     "new-mail", "'sep' is undefined"),
    ("field typo through a macro's argument", E, "{% block title %}{{ item.sender }}",
     "{% macro who(i) %}{{ i.sendr }}{% endmacro %}{% block title %}{{ who(item) }}", (E, 1),
     "new-mail", "'item' has no field 'sendr'"),
    # more of what fails on every item
    ("reply with an unknown filter", R, "Thanks {{ item.sender }}",
     "Thanks {{ item.sender | first_name }}", (R, 18), "chat-reply",
     "No filter named 'first_name'"),
    ("a filter from another tool", R, '"Code {{ code }}"',
     "\"{{ item.created_at | date('%H:%M') }}\"", (R, 12), "verification-code",
     "No filter named 'date'"),
    ("an if never closed in an inline title", R, '"Code {{ code }}"',
     '"{% if code %}Code {{ code }}"', (R, 12), "verification-code",
     "template syntax error: '{% if %}' is never closed (add '{% endif %}')"),
    ("endfor closing an if", R, "{{ item.subject }}", "{% if item.unread %}new{% endfor %}",
     (R, 13), "verification-code", "Encountered unknown tag 'endfor'"),
    ("a loop attribute that does not exist", E, "{{ item.text | truncate(240) }}",
     "{% for l in item.links %}{{ loop.idx }}. {{ l }}{% endfor %}", (E, 3), "new-mail",
     "has no attribute 'idx'"),
    ("an age compared to a number", R, "{{ item.subject }}",
     "{% if item.age > 60 %}late{% endif %}", (R, 13), "verification-code",
     "TypeError: '>' not supported between instances of 'datetime.timedelta' and 'int'"),
    ("a text plus a number", R, "{{ item.subject }}", "{{ item.subject + 1 }}", (R, 13),
     "verification-code", "TypeError: can only concatenate str"),
    ("strftime without a format", R, '"Code {{ code }}"', '"{{ item.created_at.strftime() }}"',
     (R, 12), "verification-code", "TypeError: strftime() missing required argument"),
    ("truncate given a text", E, "truncate(240)", "truncate('240')", (E, 3), "new-mail",
     "filter 'truncate' cannot take this value (TypeError"),
    ("a keyword's value not quoted", R, "{{ item.subject }}",
     "{{ item.subject | truncate(20, end=dots) }}", (R, 13), "verification-code",
     "'dots' is undefined"),
    ("an attribute of an extraction", R, '"Code {{ code }}"', '"Code {{ code.value }}"',
     (R, 12), "verification-code", "'str object' has no attribute 'value'"),
]  # fmt: skip

# Mistakes in a template another one imports, includes or extends: (what, {file: (replace
# this, with that)}, where, rule, text); a file not in FILES is new, given as ("", its text).
SIG, CHILD, BASE = "templates/sig.j2", "templates/child.j2", "templates/base.j2"
HEAD = "{% endmacro %}\n{% macro head() %}{{ item.subject }}{% endmacro %}\n"
USE_HEAD = (
    "{{ item.text | truncate(240) }}",
    "{% import 'macros.j2' as m with context %}{{ m.head() }}",
)
INCLUDE = ("{% endif %}\n", "{% endif %}\n{% include 'sig.j2' %}\n")
TO_CHILD = ("template: email}", "template: child}")
IN_FILES = [
    ("field typo in a macro imported with context",
     {M: ("{% endmacro %}\n", HEAD.replace("subject", "subjct")), E: USE_HEAD}, (M, 2),
     "new-mail", "'item' has no field 'subjct'"),
    ("an imported macro reads the item without context",
     {M: ("{% endmacro %}\n", HEAD), E: (USE_HEAD[0], USE_HEAD[1].replace(" with context", ""))},
     (M, 2), "new-mail",
     "'item' is undefined (an imported macro sees it only when imported `with context`)"),
    ("field typo in an included part", {SIG: ("", "-- {{ item.acount }}\n"), E: INCLUDE},
     (SIG, 1), "new-mail", "'item' has no field 'acount'"),
    ("undefined name in an included part", {SIG: ("", "-- {{ signature }}\n"), E: INCLUDE},
     (SIG, 1), "new-mail", "'signature' is undefined"),
    ("unknown filter in an included part",
     {SIG: ("", "-- {{ item.sender | shout }}\n"), E: INCLUDE}, (SIG, 1), "new-mail",
     "No filter named 'shout'"),
    ("field typo in a parent template", {
        R: TO_CHILD,
        CHILD: ("", "{% extends 'base.j2' %}{% block title %}{{ item.subject }}{% endblock %}\n"),
        BASE: ("", "{% block title %}{% endblock %}\n{% block message %}{{ item.bdy }}{% endblock %}"),
     }, (BASE, 2), "new-mail", "'item' has no field 'bdy'"),
    ("a parent without the message block", {
        R: TO_CHILD,
        CHILD: ("", "{% extends 'base.j2' %}{% block title %}{{ item.subject }}{% endblock %}\n"),
        BASE: ("", "{% block title %}{% endblock %}\n"),
     }, (CHILD, 1), "new-mail", "template 'child' lacks block 'message'"),
    ("field typo in a child's block", {
        R: TO_CHILD,
        CHILD: ("", "{% extends 'email.j2' %}\n{% block title %}{{ super() }} {{ item.sendr }}"
                    "{% endblock %}\n"),
     }, (CHILD, 2), "new-mail", "'item' has no field 'sendr'"),
    ("undefined name in a parent's top", {
        R: TO_CHILD,
        CHILD: ("", "{% extends 'base.j2' %}{% block title %}{{ item.subject }}{% endblock %}\n"),
        BASE: ("", "{{ brand }}\n{% block title %}{% endblock %}{% block message %}{% endblock %}"),
     }, (BASE, 1), "new-mail", "'brand' is undefined"),
]  # fmt: skip

# Templates that are fine on real items, and so must pass (raw keys a sample lacks, filters on
# the values they are made for, loops, tests, names every template has).
VALID = [
    ("raw key the sample lacks", "{{ item.raw.something }} {{ item.raw.deep.deeper | upper }}"),
    ("raw key compared", "{% if item.raw.score > 5 or item.raw.tmid %}hot{% endif %}"),
    ("arithmetic on a raw key", "{{ item.raw.size + 1 }} {{ item.raw.nothing | round }}"),
    ("raw get with a default", "{{ item.raw.get('u', {}).get('name') or item.sender }}"),
    ("raw key that exists", "{{ item.raw.id }} {{ item.raw.get('subject') }}"),
    ("html to text", "{{ item.html | html2text | truncate(100) }}"),
    ("attachments counted", "{{ item.attachments | length }} files"),
    ("attachment fields", "{% for a in item.attachments %}{{ a.name }} {{ a.size }}{% endfor %}"),
    ("names of attachments", "{{ item.attachments | map(attribute='content_type') | join }}"),
    ("loop over links", "{% for l in item.links %}{{ loop.index }}. {{ l }}\n{% endfor %}"),
    ("links of a text", "{{ item.text | links | first }} {{ item.html | links | length }}"),
    ("unread test", "{% if item.unread %}new: {% endif %}{{ item.subject | md_escape }}"),
    ("times", "{{ item.created_at | ago }} {{ item.age | ago }} {{ now.year }}"),
    ("strftime", "{{ item.created_at.strftime('%H:%M') }}"),
    ("the other names", "{{ rule }} {{ account }} {% if format == 'markdown' %}*{% endif %}"),
    ("extractions", "{{ code or 'no code' }} {{ link | truncate(20, end='...') }}"),
    ("set and namespace", "{% set ns = namespace(n=0) %}{% set n = item.links | length %}{{ n }}"),
    ("own macro", "{% macro b(t) %}**{{ t }}**{% endmacro %}{{ b(item.subject) }}"),
    ("imported macro", "{% import 'macros.j2' as m %}{{ m.short(item.text) }}"),
    ("from import", "{% from 'macros.j2' import short %}{{ short(item.subject) }}"),
    ("a loop variable named item", "{% for item in item.links %}{{ item }}{% endfor %}"),
    ("url may be empty", "{{ item.url or '' }} {{ item.kind | upper }} {{ item.upstream }}"),
    (
        "optional fields guarded",
        "{% if item.html %}{{ item.html | length }}{% endif %}"
        " {{ item.recipient | default('me') }} {{ (item.url or '') | length }}",
    ),
    (
        "raw keys guarded",
        "{% if item.raw.tmid is defined %}thread{% endif %} {{ item.raw.msg"
        " | default(item.text) }} {{ item.raw.get('x') or '-' }}",
    ),
    ("range and filters", "{{ range(3) | list | length }} {{ item.text | wordcount }}"),
]


def write(tmp_path: Path, changes: dict[str, tuple[str, str]]) -> Path:
    files = dict(FILES)
    for file, (old, new) in changes.items():
        assert old in files.get(file, ""), f"case does not apply: {old!r}"
        files[file] = files[file].replace(old, new, 1) if old else new
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path / "inboxbot.yaml"


def inboxbot(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(tmp_path / "inboxbot.yaml"), *args],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip


def errors_of(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    for line in lines:
        assert re.match(r"\S+:\d+: ", line), f"not located: {line}"
        assert "secret" not in line
    return lines


def test_the_base_configuration_passes(tmp_path: Path) -> None:
    write(tmp_path, {})
    proc = inboxbot(tmp_path, "check")
    assert proc.returncode == 0, proc.stderr
    assert "ok (4 feeds, 3 rules, 2 sinks)" in proc.stdout


CASES = [(c, {file: (old, new)}, *rest) for c, file, old, new, *rest in MISTAKES] + IN_FILES


@pytest.mark.parametrize(
    ("case", "changes", "where", "rule", "text"), CASES, ids=[c[0] for c in CASES]
)
def test_a_template_mistake_is_refused_by_check(
    tmp_path: Path, case: str, changes: dict[str, tuple[str, str]],
    where: tuple[str, int], rule: str, text: str,
) -> None:  # fmt: skip
    write(tmp_path, changes)
    lines = errors_of(inboxbot(tmp_path, "check"))
    assert len(lines) == 1, lines
    located, line = where
    assert lines[0].startswith(f"{tmp_path / located}:{line}: "), lines[0]
    text = text.replace("{dir}", str(tmp_path))
    assert f"rule {rule!r}" in lines[0] and text in lines[0], lines[0]


def test_there_are_enough_mistakes() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize(("case", "source"), VALID, ids=[v[0] for v in VALID])
def test_a_template_fine_on_real_items_passes(tmp_path: Path, case: str, source: str) -> None:
    """Each source inline (a markdown sink) and in a template file (a text sink)."""
    rule = (
        "\n- name: valid\n  extract: {code: {from: text, regex: '(\\d+)'}, link: {from: links, "
        f"regex: x}}}}\n  notify:\n    - sink: phone\n      message: {json.dumps(source)}\n"
        "    - {sink: screen, template: valid}\n"
    )
    write(tmp_path, {R: (RULES, RULES + rule)})
    blocks = (
        f"{{% block title %}}{source}{{% endblock %}}{{% block message %}}{source}{{% endblock %}}"
    )
    (tmp_path / "templates" / "valid.j2").write_text(blocks)
    proc = inboxbot(tmp_path, "check")
    assert proc.returncode == 0, proc.stderr


# Template files that are fine on real items: (what, {file: text}); rule `valid` uses valid.j2.
V = "templates/valid.j2"
VALID_FILES = [
    ("a block sees what the template's top sets and defines", {V: (
        "{% set sep = ' · ' %}{% macro who(i) %}{{ i.sender }}{% endmacro %}"
        "{% block title %}{{ who(item) }}{{ sep }}{{ item.subject }}{% endblock %}"
        "{% block message %}{{ item.text }}{% endblock %}")}),
    ("a child fills its parent's blocks, with super() and the parent's names", {
        BASE: "{% set brand = 'inboxbot' %}{% block title %}[{{ brand }}]{% endblock %}"
              "{% block message %}{{ item.text }}{% endblock %}",
        V: "{% extends 'base.j2' %}{% block title %}{{ super() }} {{ brand }}{% endblock %}"}),
    ("a macro imported with context reads the item", {
        "templates/ctx.j2": "{% macro head() %}{{ item.sender }}: {{ item.subject }}{% endmacro %}",
        V: "{% import 'ctx.j2' as c with context %}{% block title %}{{ c.head() }}{% endblock %}"
           "{% block message %}{{ item.text }}{% endblock %}"}),
    ("an included part sees the includer's names", {
        SIG: "-- {{ sig }} for {{ account }} ({{ rule }})",
        V: "{% block title %}{{ item.subject }}{% endblock %}{% block message %}"
           "{% set sig = 'bot' %}{{ item.text }}\n{% include 'sig.j2' %}{% endblock %}"}),
    ("call blocks, block sets and self", {V: (
        "{% macro box() %}[{{ caller() }}]{% endmacro %}"
        "{% block title %}{% call box() %}{{ item.subject }}{% endcall %}{% endblock %}"
        "{% block message %}{% set t %}{{ item.subject }}{% endset %}{{ t }} {{ self.title() }}"
        "{% endblock %}")}),
    ("an include named by the item, if there is one", {V: (
        "{% block title %}{{ item.subject }}{% endblock %}{% block message %}"
        "{% include 'parts/' ~ item.kind ~ '.j2' ignore missing %}{% endblock %}")}),
    ("optional fields and raw keys guarded", {V: (
        "{% block title %}{{ item.url | default('', true) }}{% endblock %}{% block message %}"
        "{% if item.html %}{{ item.html | html2text }}{% endif %}{{ item.recipient or 'me' }}"
        "{% if item.raw.tmid is defined %}thread{% endif %}{{ item.raw.msg | default(item.text) }}"
        "{% endblock %}")}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "files"), VALID_FILES, ids=[v[0] for v in VALID_FILES])
def test_a_template_file_fine_on_real_items_passes(
    tmp_path: Path, case: str, files: dict[str, str]
) -> None:
    rule = "- name: valid\n  notify: [{sink: phone, template: valid}]\n"
    write(tmp_path, {R: (RULES, RULES + rule), **{f: ("", text) for f, text in files.items()}})
    proc = inboxbot(tmp_path, "check")
    assert proc.returncode == 0, proc.stderr


def test_every_error_of_a_file_is_told_at_once(tmp_path: Path) -> None:
    write(tmp_path, {
        R: ("{{ item.subject }}", "{{ item.subjct }} {{ lnk }}"),
        E: ("{{ item.text", "{% if not item.unread %}{{ item.bdy }}{% endif %}{{ item.txt"),
    })  # fmt: skip
    lines = errors_of(inboxbot(tmp_path, "check"))
    assert len(lines) == 4, lines
    assert sorted(line.split(": ", 1)[0] for line in lines) == sorted(
        [f"{tmp_path / R}:13", f"{tmp_path / R}:13", f"{tmp_path / E}:3", f"{tmp_path / E}:3"]
    )
    text = "\n".join(lines)
    for name in ("'subjct'", "'lnk' is undefined", "'bdy'", "'txt'"):
        assert name in text, text


def test_a_shared_template_is_told_once(tmp_path: Path) -> None:
    second = "- name: any-mail\n  when: {kind: email}\n  notify: [{sink: phone, template: email}]\n"
    write(tmp_path, {R: (RULES, RULES + second), E: ("{{ item.sender }}", "{{ item.sendr }}")})
    lines = errors_of(inboxbot(tmp_path, "check"))
    assert len(lines) == 1 and "rule 'new-mail'" in lines[0], lines


def test_an_upstream_specific_raw_key_is_judged_on_that_upstream(tmp_path: Path) -> None:
    rule = (
        "- name: comments\n  when: {kind: comment}\n  notify:\n    - sink: phone\n"
        '      message: "{{ item.raw.post_id + 1 }}: {{ item.raw.score | abs }} {{ item.raw.x.y }}"\n'
    )
    write(tmp_path, {R: (RULES, RULES + rule)})
    assert inboxbot(tmp_path, "check").returncode == 0


def test_every_shipped_template_passes_for_every_upstream(tmp_path: Path) -> None:
    write(tmp_path, {})
    shipped = sorted({p.name for p in [*ROOT.glob("templates/*.j2"),
                                      *ROOT.glob("examples/**/templates/*.j2")]})  # fmt: skip
    assert shipped
    for folder in [ROOT / "templates", *ROOT.glob("examples/**/templates")]:
        for path in folder.glob("*.j2"):
            shutil.copy(path, tmp_path / "templates" / path.name)
        rules = "".join(
            f"- name: {Path(n).stem}\n  notify: [{{sink: phone, template: {Path(n).stem}}}]\n"
            for n in shipped
            if (folder / n).exists()
        )
        (tmp_path / R).write_text(rules)
        proc = inboxbot(tmp_path, "check")
        assert proc.returncode == 0, (folder, proc.stderr)


# --- test-rules and render --item ---------------------------------------------------


def test_test_rules_fails_a_case_whose_notification_would_not_render(tmp_path: Path) -> None:
    rule = (
        "- name: sized\n  when: {kind: email, subject: {contains: size}}\n  notify:\n"
        "    - {sink: phone, message: '{{ item.html | length }} {{ item.raw.size + 1 }}'}\n"
    )
    write(tmp_path, {R: (RULES, rule)})
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- name: with html\n  item: {account: signup, subject: size, html: '<p>x</p>'}\n"
        "  match: [sized]\n"
        "- name: without html\n  item: {account: signup, subject: size}\n  match: [sized]\n"
        "- name: raw without the key\n"
        "  item: {account: signup, subject: size, html: '<p>x</p>', raw: {id: 1}}\n"
        "  match: [sized]\n"
    )
    assert inboxbot(tmp_path, "check").returncode == 0
    proc = inboxbot(tmp_path, "test-rules", str(cases))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "PASS with html"
    assert out[1] == (
        "FAIL without html: rule 'sized' notify[0].message would not render: "
        "TypeError: object of type 'NoneType' has no len()"
    )
    assert out[2].startswith("FAIL raw without the key: rule 'sized' notify[0].message")
    assert "has no attribute 'size'" in out[2]
    assert out[3] == "1 passed, 2 failed"


def test_test_rules_fails_a_case_whose_reply_would_not_render(tmp_path: Path) -> None:
    reply = "Thanks {{ item.sender }}, {{ item.raw.u.name | upper }}"
    write(tmp_path, {R: ("Thanks {{ item.sender }}, got it.", reply)})
    cases = tmp_path / "cases.yaml"
    cases.write_text("- item: {account: work, kind: chat, raw: {u: x}}\n  match: [chat-reply]\n")
    proc = inboxbot(tmp_path, "test-rules", str(cases))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "rule 'chat-reply' then[0].reply.message would not render" in proc.stdout


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ({"attachments": [{"name": "a.pdf"}]}, "attachments[0]: content_type missing"),
        ({"attachments": {"name": "a.pdf"}}, "attachments: Input should be a valid list"),
        ({"created_at": "yesterday"}, "created_at: Input should be a valid datetime"),
        ({"unread": "maybe"}, "unread: Input should be a valid boolean"),
        ({"kind": "mail"}, "kind: Input should be 'dmail', 'comment', 'email' or 'chat'"),
        ({"colour": "red"}, "unknown item fields ['colour']"),
        ([1, 2], "an item is a mapping of its fields"),
    ],
)
def test_render_item_is_validated(tmp_path: Path, item: object, error: str) -> None:
    write(tmp_path, {})
    (tmp_path / "item.json").write_text(json.dumps(item))
    proc = inboxbot(tmp_path, "render", "email", "--item", str(tmp_path / "item.json"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().startswith(f"{tmp_path / 'item.json'}: "), proc.stderr
    assert error in proc.stderr


def test_render_item_takes_what_a_user_writes(tmp_path: Path) -> None:
    write(tmp_path, {})
    item = {
        "subject": "Invoice", "text": "See attached", "id": 7, "sender": "shop",
        "created_at": "2024-05-01T10:00:00",  # naive: taken as UTC
        "attachments": [{"name": "a.pdf", "content_type": "application/pdf", "size": 10}],
    }  # fmt: skip
    (tmp_path / "item.json").write_text(json.dumps(item))
    proc = inboxbot(tmp_path, "render", "email", "--item", str(tmp_path / "item.json"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "shop: Invoice\n\nSee attached\n📎 a.pdf\n"
