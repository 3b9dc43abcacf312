"""Every YAML block of README.md that is a whole configuration, and every rules block,
copied verbatim into a temp folder, passes ``inboxbot check`` (run as a user runs it), so
the README cannot drift from what the code accepts. A block gets only the companions it
cannot do without: the folders it names, a rule file for a configuration, a configuration
that reaches a rules block, and dummy values for the variables it uses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"^```yaml\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
CONFIGS = [b for b in BLOCKS if re.search(r"^(accounts|sinks):", b, re.M)]
RULES = [b for b in BLOCKS if b not in CONFIGS and re.match(r"(#.*\n)*- name:", b)]
# the smallest account that yields each kind (the e621 one yields both of its kinds)
ACCOUNTS = {
    "mailtd": "type: mailtd, account_id: me@mail.td, token: t",
    "minutemail": "type: minutemail, api_key: k, mailbox_id: m",
    "e621": "type: e621, username: u, api_key: k, feeds: {dmails: {}, comments: {search: {poster_id: 1}}}",
    "rocketchat": "type: rocketchat, base_url: 'https://chat.example.org', user_id: u, token: t",
}
KINDS = {"email": "mailtd", "dmail": "e621", "comment": "e621", "chat": "rocketchat"}
TEMPLATE = "{% block title %}{{ item.subject }}{% endblock %}{% block message %}x{% endblock %}"


def check(folder: Path, config: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``inboxbot --config CONFIG check``, with every ``${NAME}`` of ``text`` set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXBOT_")}
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text):
        env[name] = "https://example.org/hook" if name.endswith("_URL") else "dummy-value"
    return subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config), "check"],
        capture_output=True, text=True, timeout=60, cwd=folder, env=env,
    )  # fmt: skip


def leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v)
    elif value is not None:
        yield str(value)


def named(when: Any, key: str) -> Iterator[str]:
    """Every value a condition gives ``key`` (``kind: [a, b]``, ``kind: {in: …}``, nested)."""
    if isinstance(when, dict):
        for k, v in when.items():
            yield from leaves(v) if k == key else named(v, key)
    elif isinstance(when, list):
        for v in when:
            yield from named(v, key)


def companion_config(rules: list[dict[str, Any]]) -> str:
    """A configuration reaching ``rules``: an account of each upstream they name (Mail.td
    when none), and a console sink for each sink they name."""
    whens = [r.get("when") for r in rules]
    types = {KINDS.get(k, k) for k in named(whens, "kind")} | set(named(whens, "upstream"))
    types &= set(ACCOUNTS)  # a kind no upstream has is left for check to refuse
    sinks = {n["sink"] for r in rules for n in listed(r.get("notify"))} or {"screen"}
    lines = ["accounts:"]
    lines += [f"  {t}: {{{ACCOUNTS[t]}}}" for t in sorted(types or {"mailtd"})]
    lines += ["sinks:", *(f"  {s}: {{type: console}}" for s in sorted(sinks))]
    return "\n".join([*lines, "rules: [rules.yaml]", "templates: [templates]", ""])


def listed(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def with_templates(folder: Path, text: str, dirs: list[str] | None = None) -> None:
    """The template folders a block names (``templates/`` by default), holding each
    template its rules name."""
    for each in dirs or ["templates"]:
        (folder / each).mkdir(parents=True, exist_ok=True)
        for name in re.findall(r"\btemplate: *['\"]?([\w.-]+)", text):
            (folder / each / f"{name.removesuffix('.j2')}.j2").write_text(TEMPLATE)


def test_the_readme_has_a_configuration_and_rules() -> None:
    assert CONFIGS and RULES


@pytest.mark.parametrize("block", CONFIGS, ids=[f"config{i}" for i in range(len(CONFIGS))])
def test_a_configuration_of_the_readme_passes_check(tmp_path: Path, block: str) -> None:
    """With one rule reaching every account, in the folder the block's ``rules:`` names."""
    data = yaml.safe_load(block)
    sink = next(iter(data["sinks"]))
    patterns = data.get("rules") or ["rules/*.yaml"]
    rules = tmp_path / Path(patterns[0].replace("*", "readme"))
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(f"- name: any-item\n  notify: {{sink: {sink}, message: x}}\n")
    with_templates(tmp_path, block, data.get("templates"))
    (tmp_path / "inboxbot.yaml").write_text(block)
    proc = check(tmp_path, tmp_path / "inboxbot.yaml", block)
    assert proc.returncode == 0 and ": ok (" in proc.stdout, block + proc.stderr


@pytest.mark.parametrize("block", RULES, ids=[f"rules{i}" for i in range(len(RULES))])
def test_a_rules_block_of_the_readme_passes_check(tmp_path: Path, block: str) -> None:
    config = companion_config(yaml.safe_load(block))
    (tmp_path / "rules.yaml").write_text(block)
    with_templates(tmp_path, block)
    (tmp_path / "inboxbot.yaml").write_text(config)
    proc = check(tmp_path, tmp_path / "inboxbot.yaml", block)
    assert proc.returncode == 0 and ": ok (" in proc.stdout, config + proc.stderr


def test_the_readme_rules_pass_with_the_readme_configuration(tmp_path: Path) -> None:
    """The README's first configuration with all its rules blocks, as a reader copies them."""
    config = CONFIGS[0]
    data = yaml.safe_load(config)
    patterns = data.get("rules") or ["rules/*.yaml"]
    for i, block in enumerate(RULES):
        path = tmp_path / Path(patterns[0].replace("*", f"readme{i}"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
    with_templates(tmp_path, config + "".join(RULES), data.get("templates"))
    (tmp_path / "inboxbot.yaml").write_text(config)
    proc = check(tmp_path, tmp_path / "inboxbot.yaml", config)
    assert proc.returncode == 0 and ": ok (" in proc.stdout, proc.stderr
