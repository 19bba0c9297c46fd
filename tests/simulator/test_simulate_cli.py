"""``titrate simulate`` rejects bad input before touching the service: exit code 2, the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from simulator.presets import checkout_ab

# Nothing listens here: a command that got past validation would fail with exit code 1, not 2.
NOWHERE = ["--api-url", "http://127.0.0.1:9", "--api-key", "unused", "--quiet"]


def _simulate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["simulate", *args, *NOWHERE])
    return result.exit_code, " ".join(result.output.split())  # rich wraps the error box


def test_a_scenario_file_with_bad_shares_exits_2_naming_the_field(tmp_path: Path) -> None:
    document = checkout_ab().model_dump(mode="json")
    document["population"]["attributes"]["country"] = {"US": 0.5, "DE": 0.3}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    code, output = _simulate("--scenario", str(path))
    assert code == 2
    assert "population.attributes.country" in output
    assert "sum to 1" in output


def test_a_scenario_file_with_an_unknown_field_exits_2_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({**checkout_ab().model_dump(mode="json"), "dayz": 3}))
    code, output = _simulate("--scenario", str(path))
    assert code == 2
    assert "dayz" in output


@pytest.mark.parametrize(("args", "named"), [
    (["--preset", "nope"], "checkout-ab"),
    ([], "--preset"),
    (["--preset", "checkout-ab", "--harm-segment", "country"], "ATTRIBUTE=VALUE"),
    (["--preset", "checkout-ab", "--harm-segment", "country=XX"], "variants.one-page.segments.0.value"),
    (["--preset", "checkout-ab", "--harm-effect", "-0.3"], "--harm-segment"),
    (["--preset", "checkout-ab", "--lift", "-3"], "variants.one-page.effect"),
])
def test_bad_options_exit_2_naming_the_problem(args: list[str], named: str) -> None:
    code, output = _simulate(*args)
    assert code == 2
    assert named in output


def test_a_valid_scenario_without_a_service_fails_with_exit_code_1() -> None:
    code, output = _simulate("--preset", "checkout-ab", "--days", "1")
    assert code == 1
    assert "simulation failed" in output
