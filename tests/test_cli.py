"""The command line explains itself: every subcommand and option has help, defaults are shown,
and global options work after the subcommand too. Walks the whole parser tree, so a subcommand
added later is held to the same rules (see the convention at the top of visual_tourism/cli.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

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
    from visual_tourism import cli, cli_common, stack
    from visual_tourism.errors import NotDeployedError

    def not_deployed(*_args, **_kwargs):
        raise NotDeployedError("Lambda x does not exist: run 'visual-tourism up' first.")

    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(stack, "status", not_deployed)
    monkeypatch.setattr(cli_common, "command", lambda: ".venv/bin/visual-tourism")
    assert main(["status"]) == 2
    assert "run '.venv/bin/visual-tourism up' first." in capsys.readouterr().err
    cli_common.say("then `visual-tourism down` and 'visual-tourism-extra' alone")
    assert capsys.readouterr().out == (
        "then `.venv/bin/visual-tourism down` and 'visual-tourism-extra' alone\n")

    monkeypatch.setattr(cli_common, "command", lambda: "visual-tourism")  # venv active
    assert main(["status"]) == 2
    assert "run 'visual-tourism up' first." in capsys.readouterr().err
    assert cli.as_typed is cli_common.as_typed


def test_a_record_prints_without_terminal_control_characters(capsys):
    from visual_tourism.cli import print_result

    print_result({"status": "ok", "answer": "Paris.\x1b[2J\x1b]0;owned\x07 Eat\tat\x9bX.",
                  "result_key": "output/a.json", "seen_after_seconds": 1.0})
    print_result({"status": "error", "error": {"code": "model_failed\x1b[31m",
                                                "message": "bad\rline"}})
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\r" not in out
    assert "Paris." in out and "Eat" in out and "model_failed" in out
