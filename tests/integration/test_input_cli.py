"""Bounded, well-formed input through the CLI: hostile policies and numeric options exit 2 with a
clear message (never a traceback, exit 70, or a hang), and an unprivileged `watch` exits 3 at once."""

import os
import tempfile
from pathlib import Path

import pytest
from lib.cli import offload

pytestmark = pytest.mark.root

RULE = "rules:\n  - name: x\n    match: {interfaces: [nothing*]}\n    program: count_drop\n"
NOBODY = "65534"


@pytest.fixture
def shared_dir():
    """A directory user nobody can read (pytest's own tmp tree is root's alone)."""
    with tempfile.TemporaryDirectory(prefix="offload-input-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


# A command that would read forever or wait is caught by this time-out, generous because the
# machine is shared: how long a refusal takes is never asserted.
HANG = 120


def exits(code: int, *args: str, user: str | None = None) -> str:
    res = offload(*args, check=False, user=user, timeout=HANG)
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    return res.stderr


@pytest.mark.parametrize("command", ["plan", "apply", "watch"])
def test_dev_zero_and_a_fifo_are_refused_without_reading(command, tmp_path):
    assert "/dev/zero is not a regular file (a character device)" in exits(2, command, "-f", "/dev/zero")
    if command == "plan":  # a FIFO without a writer: opening it must not wait
        os.mkfifo(tmp_path / "fifo")
        assert "fifo is not a regular file (a FIFO)" in exits(2, command, "-f", str(tmp_path / "fifo"))


@pytest.mark.parametrize("content,needle", [
    (RULE.encode() + b"#" * (1 << 20), "is larger than 1048576 bytes"),
    (RULE.encode() + b"# \xff\n", f"not UTF-8 text: invalid byte 0xff at byte offset {len(RULE) + 2}"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\n".encode() + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n".encode() for i in range(9)),
     ":line 1: not valid YAML: YAML anchors and aliases"),
    (RULE.encode() + b"    program: count_pass\n", ":line 5: not valid YAML: duplicate key program (first at line 4)"),
    (b"rules: " + b"a" * 500_000 + b"\n", "...a"),
])
def test_bad_policies_exit_2_naming_the_file(tmp_path, content, needle):
    f = tmp_path / "p.yaml"
    f.write_bytes(content)
    stderr = exits(2, "plan", "-f", str(f))
    assert str(f) in stderr and needle in stderr and len(stderr) < 1000


@pytest.mark.parametrize("args", [
    ["stats", "lo", "--interval", "nan"], ["stats", "lo", "--interval", "0"], ["stats", "lo", "--interval", "3601"],
    ["apply", "-f", "p.yaml", "--lock-timeout", "nan"], ["apply", "-f", "p.yaml", "--lock-timeout", "-1"],
    ["watch", "-f", "p.yaml", "--interval", "0"], ["watch", "-f", "p.yaml", "--interval", "-1"],
    ["watch", "-f", "p.yaml", "--interval", "inf"],
    *(["bench", "--lab", opt, v] for opt, v in (
        ("--duration", "nan"), ("--warmup", "-1"), ("--pkt-size", "59"), ("--threads", "0"), ("--repeat", "0"),
        ("--count", str(10**10)))),
    ["bench", "prog", "count_drop", "--repeat", "0"], ["bench", "prog", "count_drop", "--pkt-size", "70000"],
    ["lab", "up", "--pairs", "0"], ["lab", "up", "--mtu", "65536"],
], ids=" ".join)
def test_numeric_options_are_finite_and_in_range(args):
    # As nobody: the parser refuses before anything would need a privilege or a device.
    stderr = exits(2, *args, user=NOBODY)
    assert f"Invalid value for '{args[-2]}'" in stderr


def test_watch_without_privileges_exits_3_at_once_naming_the_capabilities(shared_dir):
    f = shared_dir / "p.yaml"
    f.write_text(RULE)
    f.chmod(0o644)
    # "at once": before the first of its hour-long intervals, which would outlast HANG
    stderr = exits(3, "watch", "-f", str(f), "--interval", "3600", user=NOBODY)
    assert "CAP_NET_ADMIN" in stderr and "watching a policy" in stderr


@pytest.mark.parametrize("command", [["bench", "--lab", "--modes", "native", "--duration", "0.2"], ["demo"]])
def test_unwritable_outputs_are_refused_before_any_work(command, tmp_path):
    """offload runs as root: a --plot/--csv path in a missing directory, or a symlink someone else
    planted there, is refused (exit 2) before a lab is built, and the link's target is untouched."""
    from lib.kernel import netns_list

    target = tmp_path / "precious"
    target.write_text("keep me\n")
    planted = tmp_path / "out.png"
    planted.symlink_to(target)
    os.lchown(planted, 65534, 65534)
    before = netns_list()
    for opt, path, needle in [("--plot", tmp_path / "missing" / "x.png", "no such directory"),
                              ("--plot", planted, "not a regular file"),
                              ("--csv", planted, "not a regular file")]:
        if command[0] == "demo" and opt == "--csv":
            continue
        res = offload(*command, opt, str(path), check=False)
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr, res.stderr
    made = {n for n in netns_list() - before if n.startswith(("offload-lab-demo", "offload-lab-bench"))}
    assert not made and target.read_text() == "keep me\n"
