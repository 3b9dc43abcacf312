"""YAML read from the parser's events: values, anchors and the line of every key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.errors import ConfigError
from bot.yamlfile import load_yaml

TEXT = """\
defaults: &d {every: 1m, rate: 4, enabled: true, none: ~, n: 1.5, quoted: '5', tagged: !!str 6}
accounts:
  one: *d
  two:
    - a
    - [b, {c: 2024-01-01}]
"""


def test_values_and_lines(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(TEXT)
    doc = load_yaml(tmp_path / "x.yaml")
    assert doc.data == yaml.safe_load(TEXT)
    assert doc.line(("accounts", "one", "rate")) == 3  # an alias: the line of its use
    assert doc.line(("accounts", "two", 1, 1, "c")) == 6
    assert doc.line(("defaults", "quoted")) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\n---\nb: 2\n", "x.yaml:2: YAML syntax error: expected a single document"),
        ("a: *nope\n", "x.yaml:1: YAML syntax error: unknown alias *nope"),
        ("a: 1\nb: {c: 1\n", "x.yaml:3: YAML syntax error"),
        ("a: 1\na: 2\n", "x.yaml:2: duplicate key 'a'"),
        ("? [1, 2]\n: 3\n", "x.yaml:1: keys must be text"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_yaml(tmp_path / "x.yaml")
    assert str(err.value).removeprefix(str(tmp_path) + "/").startswith(message)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("# nothing\n")
    assert load_yaml(tmp_path / "x.yaml").data is None
