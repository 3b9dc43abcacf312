"""Every configuration in examples/ passes `inboxbot check` (with its variables set)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/**/*.yaml"))
CONFIGS = [p for p in EXAMPLES if "accounts:" in p.read_text()]


def test_there_are_examples() -> None:
    assert {p.name for p in CONFIGS} >= {"mailtd.yaml", "inboxbot.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_an_example_passes_check(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", config.read_text()):
        url = name.endswith("_URL")  # check refuses a URL that is not one
        monkeypatch.setenv(name, "https://example.org/hook" if url else "example-value")
    assert main(["--config", str(config), "check"]) == 0, capsys.readouterr().err
    assert ": ok (" in capsys.readouterr().out


def test_the_example_rule_tests_pass(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILTD_TOKEN", "example-value")
    config, cases = ROOT / "examples/mailtd.yaml", ROOT / "examples/mailtd-rule-tests.yaml"
    assert main(["--config", str(config), "test-rules", str(cases)]) == 0, capsys.readouterr().out
