from pathlib import Path

import pytest

from services.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_readme_configuration_table_matches_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "keys"]) == 0
    generated = capsys.readouterr().out.strip()
    readme = (ROOT / "README.md").read_text()
    documented = readme.split("<!-- config-table:start -->", 1)[1].split("<!-- config-table:end -->", 1)[0]
    assert documented.strip() == generated, "run `risk-monitor config keys` and paste it into the README"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec ./scripts/test" in ci
    assert "./scripts/test" in (ROOT / "README.md").read_text()
