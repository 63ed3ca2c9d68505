"""Paths given to the CLI (issue: CLI input handling): every path offload writes follows one rule,
checked as the line is parsed (exit 2, before any work); a missing --profiles directory or
$OFFLOAD_PROFILES is bad input naming where it came from; the CLI takes its signal handling from
where it lives. No kernel, no privileges: each refusal comes before anything would need one."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from offload import cli
from offload.errors import UsageError
from offload.kernel import fs, signals
from offload.load import pins

# Every option that names a path offload writes, on a command line otherwise valid to the parser.
WRITTEN = [
    ["apply", "-f", "p.yaml", "--journal"],
    ["watch", "-f", "p.yaml", "--journal"],
    ["export", "systemd", "--journal"],
    ["export", "systemd", "--path"],
    ["export", "systemd", "--textfile-dir"],
    ["export", "nfd", "--path"],
    ["export", "prometheus", "--path"],
    ["export", "prometheus", "--textfile-dir"],
    ["watch", "-f", "p.yaml", "--textfile-dir"],
    ["bench", "--lab", "--csv"],
    ["bench", "--lab", "--plot"],
    ["demo", "--plot"],
]


def run(args: list[str], **env: str):
    return CliRunner().invoke(cli.main, args, prog_name="offload", env=env)


@pytest.mark.parametrize("args", WRITTEN, ids=" ".join)
@pytest.mark.parametrize("path", ["sub/../x", "../x", "/var/lib/offload/../../tmp/x", "a/.."])
def test_a_climb_in_a_written_path_is_refused_naming_the_option(args, path):
    res = run([*args, path])
    assert res.exit_code == 2, res.output
    assert f"Invalid value for '{args[-1]}'" in res.output and f"{path!r}: '..' is not allowed" in res.output
    assert "give the path without '..'" in res.output   # what to do


@pytest.mark.parametrize("args", [a for a in WRITTEN if a[-1] != "--textfile-dir"], ids=" ".join)
def test_a_written_file_needs_a_name(args):
    res = run([*args, "somedir/"])
    assert res.exit_code == 2 and "'somedir/': a file name is needed" in res.output, res.output


def test_a_written_path_error_is_a_json_document_with_json():
    res = run(["export", "systemd", "--json", "--path", "/etc/../x.service"])
    assert res.exit_code == 2
    assert '"exit_code": 2' in res.stdout and "'..' is not allowed" in res.stdout


def test_the_rule_itself():
    assert fs.output_path("x.jsonl", "--journal") == os.path.join(os.getcwd(), "x.jsonl")
    assert fs.output_path("./a//b", "--csv") == os.path.join(os.getcwd(), "a", "b")   # '.' and '//' are harmless
    assert fs.output_path("/srv/prom/", "--textfile-dir", directory=True) == "/srv/prom"
    for bad, needle in [("", "not a path"), ("a/../b", "'..' is not allowed"), ("a/", "a file name is needed"),
                        (".", "a file name is needed")]:
        with pytest.raises(UsageError, match=needle) as e:
            fs.output_path(bad, "--journal")
        assert e.value.message.startswith(f"--journal {bad!r}: ")


def test_the_journal_applies_the_rule_whoever_names_it(tmp_path, monkeypatch):
    from offload.orchestrate import apply

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(UsageError, match=r"--journal 'sub/\.\./j\.jsonl': '\.\.' is not allowed"):
        apply.Journal(Path("sub/../j.jsonl"))
    assert not (tmp_path / "j.jsonl").exists()


@pytest.mark.parametrize("command", [["probe"], ["profiles"], ["profiles", "--check"]], ids=" ".join)
def test_a_missing_profiles_directory_is_bad_input(command, tmp_path):
    missing = tmp_path / "nope"
    res = run([*command, "--profiles", str(missing)])
    assert res.exit_code == 2 and f"--profiles {missing}: no such directory" in res.output, res.output
    assert "hint: give the directory holding the driver profiles" in res.output
    res = run(command, OFFLOAD_PROFILES=str(missing))
    assert res.exit_code == 2 and f"OFFLOAD_PROFILES={missing}: no such directory" in res.output, res.output
    assert "unset OFFLOAD_PROFILES" in res.output


def test_profiles_from_the_variable_and_by_default_still_list(tmp_path, shipped_profiles):
    profs, _ = shipped_profiles
    (tmp_path / "veth.yaml").write_text(Path(profs["veth"].path).read_text())
    res = run(["profiles", "--json"], OFFLOAD_PROFILES=str(tmp_path))
    assert res.exit_code == 0 and '"driver": "veth"' in res.stdout and '"driver": "nfp"' not in res.stdout
    res = run(["profiles", "--json"])
    assert res.exit_code == 0 and '"driver": "nfp"' in res.stdout


def test_a_file_given_as_the_profiles_directory_is_bad_input(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    res = run(["profiles"], OFFLOAD_PROFILES=str(f))
    assert res.exit_code == 2 and f"OFFLOAD_PROFILES={f}: not a directory" in res.output, res.output


def test_the_cli_takes_sigterm_handling_from_kernel_signals():
    tree = ast.parse(Path(cli.__file__).read_text())
    reached = {f"{n.value.id}.{n.attr}" for n in ast.walk(tree)
               if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.attr == "sigterm_as_interrupt"}
    assert reached == {"signals.sigterm_as_interrupt"}
    assert cli.signals.sigterm_as_interrupt is signals.sigterm_as_interrupt


@pytest.mark.parametrize("name", ["a/b", "../x", "a.b%2f", "%"])
def test_a_pin_name_is_one_component_and_comes_back(name):
    escaped = pins._escape(name)
    assert "/" not in escaped and "." not in escaped and pins._unescape(escaped) == name


def test_the_cache_directory_named_by_the_variable_follows_the_rule(monkeypatch, tmp_path):
    from offload import data

    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path / "a" / ".." / "cache"))
    with pytest.raises(UsageError, match=r"\$OFFLOAD_CACHE_DIR '.*/a/\.\./cache': '\.\.' is not allowed"):
        data.owned_cache("objects")
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path / "cache"))
    assert data.owned_cache("objects") == tmp_path / "cache" / "objects"
