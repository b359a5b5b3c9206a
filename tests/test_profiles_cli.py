"""`visual-tourism profiles`: the lineup as a table (every column with --wide), JSON and the
Markdown table of docs/models.md, for every profile, offline (no AWS credentials, no region)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from visual_tourism import prices, profiles
from visual_tourism.cli import main
from visual_tourism.config import DEFAULT_PROFILE
from visual_tourism.errors import ConfigError
from visual_tourism.profiles import PROFILES

ROOT = Path(__file__).resolve().parent.parent
MODELS_PAGE = ROOT / "docs" / "models.md"
START, END = "<!-- profiles:start -->", "<!-- profiles:end -->"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No credentials, no region: the command must not need AWS at all."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                 "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)


def _run(capsys, *argv: str) -> str:
    assert main(["profiles", *argv]) == 0
    return capsys.readouterr().out


def test_the_wide_table_shows_every_profile_with_its_facts(capsys):
    out = _run(capsys, "--wide")
    lines = out.splitlines()
    for profile in PROFILES.values():
        (row,) = [line for line in lines if line.startswith(profile.name + " ")]
        if profile.managed:  # Amazon Bedrock: no instance, no container, a price per token
            token = prices.TOKEN_USD[profile.model_id]
            assert profile.model_id in row and profile.licence in row
            assert "Amazon Bedrock (managed)" in row and "none (managed)" in row
            assert (f"$0/h; ${token.input_per_million:g}+${token.output_per_million:g}/1M tok"
                    in row)
            assert f"{profile.limits.max_total_tokens:,} tokens context" in row
            assert "8,000 px a side" in row
            continue
        assert profile.model_id in row and profile.instance_type in row
        assert profile.licence in row and profile.image_version in row
        assert (profile.revision[:12] if profile.revision else "not pinned") in row
        price = prices.HOURLY_USD.get(profile.instance_type)
        assert (f"${price:g}/h" if price is not None else "no price recorded") in row
        assert f"{profile.limits.max_input_tokens:,} input" in row
        assert f"{profile.limits.max_total_tokens:,} total" in row
        assert ("(default)" in row) == (profile.name == DEFAULT_PROFILE)
    assert f"The default is {DEFAULT_PROFILE}" in out
    assert prices.PRICE_DATE in out and prices.PRICE_REGION in out


def test_json_has_every_field_for_every_profile(capsys):
    rows = json.loads(_run(capsys, "--json"))
    assert [r["name"] for r in rows] == list(PROFILES)
    assert [r["name"] for r in rows if r["default"]] == [DEFAULT_PROFILE]
    for row in rows:
        profile = PROFILES[row["name"]]
        lim = profile.limits
        assert row["model_id"] == profile.model_id and row["revision"] == profile.revision
        assert row["image_family"] == profile.image_family
        assert row["image_version"] == profile.image_version
        assert row["instance_type"] == profile.instance_type
        assert row["licence"] == profile.licence
        assert row["request_style"] == profile.request_style
        assert row["price_per_hour_usd"] == prices.HOURLY_USD.get(profile.instance_type)
        assert row["limits"] == {
            "max_input_tokens": lim.max_input_tokens, "max_total_tokens": lim.max_total_tokens,
            "payload_limit_bytes": lim.payload_limit_bytes,
            "max_stop_sequences": lim.max_stop_sequences, "max_images": lim.max_images,
            "image_formula": lim.image_formula}


def test_markdown_has_a_row_per_profile(capsys):
    out = _run(capsys, "--markdown")
    lines = out.splitlines()
    assert lines[0].startswith("| Profile | Model @ revision | Container | Instance |")
    assert len(lines) == 2 + len(PROFILES)
    for profile, line in zip(PROFILES.values(), lines[2:], strict=True):
        assert line.startswith(f"| `{profile.name}`")
        assert line.count(" | ") == len(profiles.TABLE_HEADERS) - 1


def test_the_models_page_table_is_the_commands_markdown(capsys):
    text = MODELS_PAGE.read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    between = text.split(START)[1].split(END)[0].strip("\n") + "\n"
    assert between == _run(capsys, "--markdown"), (
        "docs/models.md's profile table is stale: replace it with 'visual-tourism profiles "
        "--markdown'")
    section = text.split("## The lineup")[1].split("\n## ")[0]
    assert START in section


def test_a_missing_price_is_said_not_guessed(capsys, monkeypatch):
    monkeypatch.delitem(prices.HOURLY_USD, PROFILES[DEFAULT_PROFILE].instance_type)
    row = next(line for line in _run(capsys).splitlines()
               if line.startswith(DEFAULT_PROFILE))
    assert "no price recorded" in row
    data = json.loads(_run(capsys, "--json"))
    assert data[0]["price_per_hour_usd"] is None and data[0]["price"] == "no price recorded"


def test_revisions_are_commits_or_honestly_unpinned():
    for profile in PROFILES.values():
        assert profile.revision is None or re.fullmatch(r"[0-9a-f]{40}", profile.revision)
        if profile.managed:  # Bedrock versions the model in its ID; no container to pin
            with pytest.raises(ConfigError, match="managed"):
                profile.container_env()
            continue
        env = profile.container_env()
        pinned = env.get("REVISION") or env.get("OPTION_REVISION")
        assert pinned == profile.revision


def test_json_and_markdown_are_exclusive(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["profiles", "--json", "--markdown"])
    assert stop.value.code == 2
