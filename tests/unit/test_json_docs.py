"""The JSON contract: a schema per document kind, every --json command covered, one timestamp
format, errors as documents, and libxdp's dispatcher configuration decoded."""

import importlib
import json
import struct
import time
from datetime import datetime
from pathlib import Path

import click
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lib.cli import offload
from lib.schemas import validate

from offload import cli, jsondoc
from offload.kernel import clock
from offload.load import dispatcher

SCHEMAS = Path(jsondoc.__file__).with_name("schemas")


def json_commands(group: click.Group = cli.main, path: tuple = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        if any(p.name == "as_json" for p in cmd.params):
            out.append((*path, name))
        if isinstance(cmd, click.Group):
            out += json_commands(cmd, (*path, name))
    return out


def kind_of(path: tuple[str, ...]) -> str:
    """`bench prog` -> bench-prog; the filter subcommands share one kind (filter)."""
    k = "-".join(path)
    return k if k in jsondoc.VERSIONS else "-".join(path[:-1])


def test_every_json_command_has_a_kind_and_a_schema():
    cmds = json_commands()
    assert len(cmds) >= 20 and ("bench", "prog") in cmds and ("lab", "down") in cmds and ("status",) in cmds
    for path in cmds:
        assert kind_of(path) in jsondoc.VERSIONS, path
        assert (SCHEMAS / f"{kind_of(path)}.schema.json").is_file(), path


def test_every_json_command_is_in_the_command_table():
    """Each --json command is shown through cli.OUTPUTS: a known kind, and a renderer that exists
    (imported here only: a command imports it when it prints for a person)."""
    for path in json_commands():
        name = " ".join(path) if " ".join(path) in cli.OUTPUTS else " ".join(path[:-1])   # filter add -> filter
        assert cli.OUTPUTS[name].kind == kind_of(path), path
    for output in cli.OUTPUTS.values():
        module, _, fn = output.render.partition(":")
        assert output.kind in jsondoc.VERSIONS and callable(getattr(importlib.import_module(module), fn)), output


@pytest.mark.parametrize("kind", sorted(jsondoc.VERSIONS))
def test_schema_is_valid_2020_12_and_names_its_version(kind):
    s = jsondoc.schema(kind)
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["properties"]["schema_version"] == {"const": jsondoc.VERSIONS[kind]}
    assert "schema_version" in s["required"]


def test_envelope_puts_the_version_first_and_keeps_the_keys():
    doc = jsondoc.document("detach", {"interface": "x", "detached": None, "removed_stale_pins": False})
    assert list(doc)[0] == "schema_version" and validate(doc, "detach")["interface"] == "x"
    with pytest.raises(AssertionError, match="removed_stale_pins"):
        validate({"schema_version": 1, "interface": "x", "detached": None}, "detach")


def test_error_document():
    validate(jsondoc.error("eth9: no such interface", None, 2), "error")
    with pytest.raises(AssertionError):
        validate(jsondoc.error("x", None, 0), "error")   # an error never exits 0


def test_usage_errors_are_json_with_clicks_exit_code():
    res = offload("stats", "lo", "--interval", "nan", "--json", check=False)
    doc = validate(json.loads(res.stdout), "error")
    assert res.returncode == 2 == doc["error"]["exit_code"] and "not a finite number" in doc["error"]["message"]
    assert "not a finite number" in res.stderr          # and still said to a person
    res = offload("attach", "--no-such-option", "--json", check=False)
    assert res.returncode == 2 and "--no-such-option" in validate(json.loads(res.stdout), "error")["error"]["message"]
    plain = offload("attach", "--no-such-option", check=False)   # without --json: click's own text only
    assert plain.returncode == 2 and plain.stdout == ""


def test_programs_and_profiles_validate():
    validate(json.loads(offload("programs", "--json").stdout), "programs")
    validate(json.loads(offload("profiles", "--json").stdout), "profiles")


# ---- timestamps -----------------------------------------------------------------------------------

def test_rfc3339_is_utc_with_microseconds():
    s = clock.rfc3339(0)
    assert s == "1970-01-01T00:00:00.000000Z"
    t0 = time.time()
    now = clock.rfc3339()
    assert t0 - 1e-5 <= _epoch(now) <= time.time() + 1e-5   # bracketed, never a time bound


def test_normalise_reads_old_records_and_refuses_junk():
    assert clock.normalise("2025-01-31T12:00:05+0000") == "2025-01-31T12:00:05.000000Z"
    assert clock.normalise("2025-01-31T13:00:05+0100") == "2025-01-31T12:00:05.000000Z"
    assert clock.normalise("2025-01-31T12:00:05.250000Z") == "2025-01-31T12:00:05.250000Z"
    for junk in (None, 5, "yesterday", "[/]", ["2025"]):
        assert clock.normalise(junk) is None


@given(st.floats(min_value=0, max_value=4e9))
def test_rfc3339_round_trips(t):
    s = clock.rfc3339(t)
    assert clock.normalise(s) == s
    assert abs(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() - t) < 1e-5


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_boottime_conversion_is_now_for_now():
    t0 = time.time()
    now_boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    stamp = clock.from_boottime_ns(now_boot)
    t1 = time.time()
    # The conversion reads both clocks itself, and however long the scheduler kept it between
    # those reads (at most t1 - t0) shifts the result back by as much: bracketed, no time bound.
    assert t0 - (t1 - t0) - 1e-5 <= _epoch(stamp) <= t1 + 1e-5
    assert clock.from_boottime_ns(0) is None


# ---- libxdp's dispatcher configuration ------------------------------------------------------------

def v2(num, chain, prios, frags=0):
    pad = lambda xs: list(xs) + [0] * (10 - len(xs))   # noqa: E731
    return struct.pack("=BBBB10I10I10I", dispatcher.MAGIC, 2, num, frags, *pad(chain), *pad(prios), *[0] * 10)


def test_decode_v2():
    cfg = dispatcher.decode_config(v2(2, [1 << 2, (1 << 2) | (1 << 1)], [10, 50], frags=1))
    assert (cfg.version, cfg.num_progs, cfg.frags, cfg.run_prios) == (2, 2, True, [10, 50])
    assert [dispatcher.action_names(m) for m in cfg.chain_call_actions] == [["pass"], ["drop", "pass"]]


def test_decode_v1_has_no_magic():
    raw = struct.pack("=B3x10I10I", 3, *([1 << 2] * 10), *range(10))
    cfg = dispatcher.decode_config(raw)
    assert (cfg.version, cfg.num_progs, cfg.frags, cfg.run_prios) == (1, 3, None, [0, 1, 2])


def test_decode_refuses_what_is_not_a_config():
    assert dispatcher.decode_config(b"") is None
    assert dispatcher.decode_config(b"\0" * 16) is None
    assert dispatcher.decode_config(v2(11, [], [])) is None      # more slots than libxdp has
    assert dispatcher.action_names(1 << 31) == []                 # XDP_DISPATCHER_RETVAL: no action


def test_internal_error_is_json_with_exit_70(monkeypatch):
    """A bug (here: an exception injected where the catalogue is read) is exit 70, and with --json
    an error document naming it, no traceback."""
    from click.testing import CliRunner

    from offload.load import programs

    def broken():
        raise RuntimeError("injected")

    monkeypatch.setattr(programs, "catalogue", broken)
    res = CliRunner().invoke(cli.main, ["programs", "--json"])
    assert res.exit_code == 70
    first = next(line for line in res.stdout.splitlines() if line.startswith("{"))   # stderr may be mixed in
    doc = validate(json.loads(first), "error")["error"]
    assert doc["exit_code"] == 70 and doc["message"] == "RuntimeError: injected" and "OFFLOAD_DEBUG" in doc["hint"]
    assert "Traceback" not in res.output
