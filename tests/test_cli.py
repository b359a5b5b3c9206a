"""The command line explains itself: every subcommand and option has help, defaults are shown,
and global options work after the subcommand too. Walks the whole parser tree, so a subcommand
added later is held to the same rules (see the convention in visual_tourism/cli/__init__.py);
every command stops quietly when its reader goes away, and its tables fit 80 columns.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from visual_tourism.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if child.prog.endswith(" " + name):  # aliases would repeat a parser
                    yield from _walk(child, (*path, name))


PARSERS = list(_walk(build_parser()))
IDS = [" ".join(path) or "visual-tourism" for path, _ in PARSERS]


def test_the_tree_holds_the_known_commands():
    names = {" ".join(path) for path, _ in PARSERS}
    assert {"up", "status", "down", "ask", "local demo", "local serve", "local logs",
            "infra lint"} <= names


@pytest.mark.parametrize(("path", "parser"), PARSERS, ids=IDS)
def test_every_command_has_a_description_and_every_argument_help(path, parser):
    assert parser.description, f"{parser.prog}: no description"
    rendered = parser.format_help()
    for action in parser._actions:
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help is not argparse.SUPPRESS, (
            f"{parser.prog} {label}: no help text")
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{parser.prog} {choice.dest}: no one-line help"
            continue
        takes_value = action.option_strings and action.nargs != 0
        if not takes_value:
            continue
        if action.default not in (None, False, argparse.SUPPRESS):
            # The default is printed (argparse or the help itself states it).
            shown = str(action.default)
            assert shown in rendered or "default:" in action.help, (
                f"{parser.prog} {label}: default {shown!r} not shown in its help")
        else:
            assert "default" in action.help, (
                f"{parser.prog} {label}: no default; the help must say what happens without it")


@pytest.mark.parametrize(("path", "parser"), PARSERS, ids=IDS)
def test_help_exits_cleanly(path, parser, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*path, "--help"])
    assert stop.value.code == 0
    assert "usage: visual-tourism" in capsys.readouterr().out


def test_the_main_commands_have_descriptions_of_their_own():
    tree = dict(PARSERS)
    for name in ("up", "status", "down", "ask"):
        parser = tree[(name,)]
        # Longer than the one-line help: says what it does, what it changes, what it costs.
        assert len(parser.description) > 80, parser.description


def test_timeouts_and_ports_state_their_units():
    tree = dict(PARSERS)
    for path, option, unit in [(("ask",), "--timeout", "seconds"),
                               (("local", "demo"), "--timeout", "seconds"),
                               (("local", "serve"), "--port", "port"),
                               (("local", "serve"), "--model-port", "port"),
                               (("local", "logs"), "--lines", "lines")]:
        action = next(a for a in tree[path]._actions if option in a.option_strings)
        assert unit in action.help, (path, option, action.help)


@pytest.mark.parametrize("argv", [["-v", "status", "--json"], ["status", "--json", "-v"],
                                  ["status", "-v", "--json"]])
def test_verbose_works_before_and_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert args.verbose is True and args.json is True


def test_verbose_is_off_unless_asked():
    args = build_parser().parse_args(["status"])
    assert getattr(args, "verbose", False) is False


# -- what the command prints -------------------------------------------------------------------

def test_hints_name_the_command_as_it_can_be_typed_here(monkeypatch, capsys):
    """Outside an active venv the bare name is not on PATH: hints print the script's path."""
    from visual_tourism import cli, stack
    from visual_tourism.cli import common
    from visual_tourism.errors import NotDeployedError

    def not_deployed(*_args, **_kwargs):
        raise NotDeployedError("Lambda x does not exist: run 'visual-tourism up' first.")

    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(stack, "status", not_deployed)
    monkeypatch.setattr(common, "command", lambda: ".venv/bin/visual-tourism")
    assert main(["status"]) == 2
    assert "run '.venv/bin/visual-tourism up' first." in capsys.readouterr().err
    common.say("then `visual-tourism down` and 'visual-tourism-extra' alone")
    assert capsys.readouterr().out == (
        "then `.venv/bin/visual-tourism down` and 'visual-tourism-extra' alone\n")

    monkeypatch.setattr(common, "command", lambda: "visual-tourism")  # venv active
    assert main(["status"]) == 2
    assert "run 'visual-tourism up' first." in capsys.readouterr().err
    assert cli.as_typed is common.as_typed


def test_a_record_prints_without_terminal_control_characters(capsys):
    from visual_tourism.cli.common import print_result

    print_result({"status": "ok", "answer": "Paris.\x1b[2J\x1b]0;owned\x07 Eat\tat\x9bX.",
                  "result_key": "output/a.json", "seen_after_seconds": 1.0})
    print_result({"status": "error", "error": {"code": "model_failed\x1b[31m",
                                                "message": "bad\rline"}})
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\r" not in out
    assert "Paris." in out and "Eat" in out and "model_failed" in out


# -- in a pipe, and on an 80-column terminal ---------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("argv", "status"), [
    (["profiles"], 141), (["profiles", "--json"], 141),
    (["-h"], 0),  # argparse itself ignores a failed write of its help
], ids=["table", "json", "help"])
def test_output_to_a_closed_pipe_ends_quietly(argv, status):
    """`visual-tourism profiles | head -2`: the reader has gone before the command writes (its
    end of the pipe is closed here first, so the test does not race the reader)."""
    read, write = os.pipe()
    os.close(read)
    try:
        run = subprocess.run([sys.executable, "-m", "visual_tourism.cli", *argv], stdout=write,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    finally:
        os.close(write)
    assert run.stderr == "", run.stderr  # no BrokenPipeError traceback, no "Exception ignored"
    assert run.returncode == status  # 141: as a command stopped by SIGPIPE


def _lines(capsys, monkeypatch, argv, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(argv) == 0
    return capsys.readouterr().out.splitlines()


def test_the_profiles_table_fits_80_columns_and_says_how_to_see_the_rest(capsys, monkeypatch):
    from visual_tourism.profiles import PROFILES

    lines = _lines(capsys, monkeypatch, ["profiles"], 80)
    assert max(map(len, lines)) <= 80, [line for line in lines if len(line) > 80]
    for profile in PROFILES.values():
        assert any(line.startswith(profile.name) and profile.instance_type in line
                   for line in lines)
    text = " ".join(lines)
    assert "--wide shows the whole table" in text and "--json every field" in text
    wide = _lines(capsys, monkeypatch, ["profiles", "--wide"], 80)
    assert max(map(len, wide)) > 80 and "--wide" not in " ".join(wide)
    roomy = _lines(capsys, monkeypatch, ["profiles"], 1000)  # a window wide enough for all
    assert roomy[:len(PROFILES) + 2] == wide[:len(PROFILES) + 2]


def test_a_table_keeps_its_narrow_columns_and_cuts_what_still_overflows(monkeypatch):
    from visual_tourism.cli.common import table

    monkeypatch.setenv("COLUMNS", "30")
    rows = [("a", "1", "x" * 40), ("bb", "22", "short")]
    lines = table(("NAME", "N", "TITLE"), rows)
    assert lines[:4] == ["NAME  N   TITLE", "----  --  " + "-" * 19 + "\u2026",
                         "a     1   " + "x" * 19 + "\u2026", "bb    22  short"]
    assert "(lines cut to fit 30 columns" in " ".join(lines[4:])
    narrow = table(("NAME", "N", "TITLE"), rows, narrow=("NAME", "N"))
    assert narrow[:2] == ["NAME  N", "----  --"] and "(TITLE left out" in narrow[4]
    assert table(("NAME", "N", "TITLE"), rows, wide=True)[2] == "a     1   " + "x" * 40
    assert all(len(line) <= 30 for line in lines + narrow)


def test_every_subcommand_that_prints_a_table_offers_the_wide_form():
    """The commands that print a table through common.table take --wide (and --json)."""
    tables = {("profiles",), ("presets", "list")}
    for path, parser in PARSERS:
        if path in tables:
            options = {o for a in parser._actions for o in a.option_strings}
            assert {"--wide", "--json"} <= options, path


def test_status_wraps_each_part_to_the_terminal(capsys, monkeypatch):
    from visual_tourism import stack

    part = {"name": "visual-tourism-123456789012-us-east-1", "state": "exists",
            "objects": {"input": 3, "output": 2}, "note": "a long explanation " * 5}
    info = {"region": "us-east-1", "profile": "smolvlm-instruct",
            "model": {"kind": "sagemaker", "model_id": "HuggingFaceTB/SmolVLM-Instruct"},
            **dict.fromkeys(("bucket", "roles", "presets", "endpoint", "inference",
                             "autoscaling", "function", "delivery", "web"), part),
            "deadline": None, "cost": "$0.74/hour (1 x ml.g4dn.xlarge) " * 4,
            "cost_so_far": {"complete": False, "so_far_usd": 1.5, "next_hour_usd": 0.74,
                            "note": "estimate from list prices " * 6},
            "places_cost": "nearby places $0.004 per photo with a position " * 3}
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(stack, "status", lambda _cfg: info)
    lines = _lines(capsys, monkeypatch, ["status"], 80)
    assert max(map(len, lines)) <= 80, [line for line in lines if len(line) > 80]
    assert any(line.startswith("  places cost  nearby places $0.004") for line in lines)
    at = next(n for n, line in enumerate(lines) if line.startswith("  bucket       {"))
    assert lines[at + 1].startswith(" " * 15 + '"')  # a long part goes on, indented
    assert "cost so far  at least $1.5" in "\n".join(lines)
    assert json.loads("\n".join(_lines(capsys, monkeypatch, ["status", "--json"], 80))) == info
