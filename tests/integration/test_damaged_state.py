"""A damaged record or pin, of every kind a crash, a full disk, a hand edit or a hostile user can
leave, is one interface's warning or error: never an internal error (exit 70) of the command that
reads it, and `detach` still cleans it up."""

import json
import os
from pathlib import Path

import pytest
from lib.helpers import PIN_ROOT, RUN_ROOT
from lib.kernel import kernel_xdp

pytestmark = pytest.mark.root

POLICY = """\
rules:
  - name: lab
    match: {{interfaces: ["{iface}"]}}
    program: count_drop
"""


def _write(text: str):
    return lambda record, pins: record.write_text(text)


def _replace_with_dir(record: Path, pins: Path) -> None:
    record.unlink()
    record.mkdir()


def _replace_with_link(record: Path, pins: Path) -> None:
    record.unlink()
    record.symlink_to("/etc/passwd")


def _replace_with_fifo(record: Path, pins: Path) -> None:
    record.unlink()
    os.mkfifo(record)


def _field(**changes):
    def damage(record: Path, pins: Path) -> None:
        record.write_text(json.dumps({**json.loads(record.read_text()), **changes}))
    return damage


def _drop_map_pin(record: Path, pins: Path) -> None:
    (pins / "map_xdp_stats").unlink()


DAMAGE = {
    "nested-too-deep": _write("[" * 100_000 + "]" * 100_000),
    "program-is-a-number": _field(program=7),
    "maps-is-a-number": _field(maps=5),
    "prog-id-is-a-string": _field(prog_id="12"),
    "null": _write("null"),
    "not-utf8": _write('{"interface": "\xff\xfe"}'.encode("latin-1").decode("latin-1")),
    "a-directory": _replace_with_dir,
    "a-symlink": _replace_with_link,
    "a-fifo": _replace_with_fifo,
    "map-pin-missing": _drop_map_pin,
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_state_is_never_an_internal_error(env, tmp_path, kind):
    lab = env.make_lab(pairs=1)
    dev = lab.pairs[0].a
    env.offload_json("attach", dev, "count_drop", netns=lab.netns)
    record = RUN_ROOT / "attachments" / lab.netns / f"{dev}.json"
    DAMAGE[kind](record, PIN_ROOT / lab.netns / dev)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(iface=dev))
    commands = {
        "status": ["status", "--json"],
        "gc": ["gc", "--dry-run", "--json"],
        "plan": ["plan", "-f", str(policy), "--json"],
        "stats": ["stats", dev, "--json"],
        "filter": ["filter", "list", dev, "--json"],
        "export": ["export", "prometheus", "--path", str(tmp_path / "offload.prom"), "--json"],
    }
    for name, argv in commands.items():
        res = env.offload(*argv, netns=None if name == "gc" else lab.netns, check=False)
        assert res.returncode != 70, f"{name} on a record damaged by {kind}: {res.stderr}"
        assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    st = env.offload_json("status", netns=lab.netns)
    (row,) = [r for r in st["attachments"] if r["interface"] == dev]
    assert row["ours"] is True                       # the pin says so, whatever the record says
    if kind != "map-pin-missing":
        assert any(dev in w and "damaged" in w for w in st["warnings"]), st["warnings"]
    stats = env.offload("stats", dev, netns=lab.netns, check=False)
    assert stats.returncode == 1 and dev in stats.stderr, stats.stderr     # named, with what to do
    assert "offload detach" in stats.stderr or "offload gc" in stats.stderr
    applied = env.offload_json("apply", "-f", str(policy), "--journal", str(tmp_path / "j.jsonl"), netns=lab.netns)
    assert applied["outcome"] == "ok"                                      # the policy rewrites it whole
    st = env.offload_json("status", netns=lab.netns)
    assert [r["program"] for r in st["attachments"] if r["interface"] == dev] == ["count_drop"], st
    assert not any(dev in w for w in st["warnings"]), st["warnings"]
    assert env.offload_json("detach", dev, netns=lab.netns)["detached"]    # detach still cleans it
    assert kernel_xdp(dev, lab.netns) == {}
    assert not record.exists() and not record.is_symlink() and not (PIN_ROOT / lab.netns / dev).exists()
