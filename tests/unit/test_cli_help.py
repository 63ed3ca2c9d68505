"""`--help` at 80 columns (issue 21): every option of every subcommand says what it does, and a
group lists its commands with their first sentence in full, wrapped under its column, never cut
("..."), no line wider than the terminal, no trailing spaces."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from offload.cli import main


def walk(cmd: click.Command, path: tuple[str, ...] = ("offload",)):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from walk(sub, (*path, name))


COMMANDS = list(walk(main))
GROUPS = [(p, c) for p, c in COMMANDS if isinstance(c, click.Group)]


def test_the_walk_reaches_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"offload attach", "offload bench prog", "offload export systemd", "offload filter list",
            "offload lab down", "offload watch"} <= names
    assert len(names) >= 25


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_help(path, cmd):
    bare = [p.opts for p in cmd.params if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not bare, f"{' '.join(path)}: options without help text: {bare}"
    assert (cmd.help or "").strip(), f"{' '.join(path)} has no help text"


def help_text(path: tuple[str, ...]) -> str:
    res = CliRunner().invoke(main, [*path[1:], "--help"], prog_name="offload", terminal_width=80)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_at_80_columns_is_whole(path, cmd):
    text = help_text(path)
    lines = text.splitlines()
    assert not [ln for ln in lines if len(ln) > 80], text
    assert not [ln for ln in lines if ln != ln.rstrip()], text
    listed = lines[lines.index("Commands:") + 1:] if "Commands:" in lines else []
    assert not [ln for ln in listed if ln.endswith("...")], text   # click's cut of a description


@pytest.mark.parametrize("path,group", GROUPS, ids=[" ".join(p) for p, _ in GROUPS])
def test_a_group_lists_each_command_with_its_first_sentence_in_full(path, group):
    flat = " ".join(help_text(path).split())
    for name, sub in group.commands.items():
        first = sub.get_short_help_str()
        assert first and not first.endswith("..."), name
        assert f"{name} {first}" in flat, f"{name}: {first!r} not in full in\n{flat}"
        assert " ".join((sub.help or "").split()).startswith(first), name


def test_the_first_sentence_is_the_whole_first_one():
    assert main.commands["demo"].get_short_help_str() == (
        "The whole story in seconds on a veth lab (pairs at MTU 1500 and 9000): probe, attach with fallback, "
        "native vs generic measured and plotted; then everything is removed.")
    assert main.commands["attach"].get_short_help_str() == "Attach PROGRAM to IFACE in the best mode it takes."
