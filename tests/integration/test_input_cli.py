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
     ":line 1, column 4: not valid YAML: YAML anchors and aliases"),
    (RULE.encode() + b"    program: count_pass\n",
     ":line 5, column 5: not valid YAML: duplicate key 'program' (first at line 4)"),
    (b"rules: " + b"a" * 500_000 + b"\n", repr("a" * 40 + "…")),
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
        assert f"{opt} {str(path)!r}" in res.stderr and "hint:" in res.stderr, res.stderr   # the option, what to do
    made = {n for n in netns_list() - before if n.startswith(("offload-lab-demo", "offload-lab-bench"))}
    assert not made and target.read_text() == "keep me\n"


# -- issue #19: files offload reads or writes as root ------------------------------------------
def refused(code: int, *args: str, env=None) -> str:
    """`offload ARGS` exits `code` with a message, no traceback (a hang fails on the time-out)."""
    res = (env.offload if env else offload)(*args, check=False, timeout=120)
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    return res.stderr


@pytest.fixture
def nothing_policy(tmp_path) -> Path:
    f = tmp_path / "p.yaml"
    f.write_text(RULE)
    return f


def test_journal_that_is_no_regular_file_or_dir_is_refused(env, tmp_path, nothing_policy):
    """A journal on /dev/full grew without bound, a FIFO hung, a missing directory or /proc was
    exit 70: each is bad input now (exit 2) naming the journal, before anything is attached."""
    os.mkfifo(tmp_path / "fifo")
    for journal, needle in [("/dev/full", "is not a regular file (a character device)"),
                            (str(tmp_path / "fifo"), "is not a regular file (a FIFO)"),
                            (str(tmp_path / "missing" / "j.jsonl"), "no such directory (missing is missing)"),
                            ("/proc/offload-journal.jsonl", "/proc is on proc, a kernel interface"),
                            ("/proc/self/comm", "is on proc, a kernel interface")]:
        stderr = refused(2, "apply", "-f", str(nothing_policy), "--journal", journal, env=env)
        assert f"journal {journal}" in stderr and needle in stderr, stderr


def test_journal_directory_behind_someone_elses_link_is_refused(env, tmp_path, nothing_policy):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    os.lchown(link, 65534, 65534)
    stderr = refused(9, "apply", "-f", str(nothing_policy), "--journal", str(link / "j.jsonl"), env=env)
    assert "symbolic link owned by uid 65534" in stderr and f"journal {link}/j.jsonl" in stderr
    assert os.listdir(real) == []


def test_a_journal_others_could_swap_or_planted_is_refused(env, tmp_path, nothing_policy):
    """The journal is root's state: not in a directory others may write to (unless sticky, where
    they cannot move ours), and never a file someone else planted there beforehand."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    stderr = refused(9, "apply", "-f", str(nothing_policy), "--journal", str(shared / "j.jsonl"), env=env)
    assert f"journal {shared}/j.jsonl: its directory {shared} is not safe" in stderr and "hint:" in stderr, stderr
    assert os.listdir(shared) == []
    shared.chmod(0o1777)   # sticky, like /tmp: a journal of our own is fine, one of nobody's is not
    planted = shared / "planted.jsonl"
    planted.write_text("theirs\n")
    os.chown(planted, 65534, 65534)
    stderr = refused(9, "apply", "-f", str(nothing_policy), "--journal", str(planted), env=env)
    assert f"the journal {planted} belongs to uid 65534" in stderr, stderr
    assert planted.read_text() == "theirs\n"
    ours = shared / "ours.jsonl"
    env.offload("apply", "-f", str(nothing_policy), "--journal", str(ours))
    assert ours.stat().st_uid == os.geteuid() and ours.read_text().strip()


def test_what_root_reads_is_never_reached_through_someone_elses_link(env, tmp_path, nothing_policy):
    """A policy or a program behind a link another user controls is refused (exit 9), before it
    is read; a link of root's own (or a path with '..', as the kernel means it) is followed."""
    import shutil

    obj = tmp_path / "prog.o"
    shutil.copy(Path(__file__).parent.parent.parent / "bpf" / "obj" / "count_drop.o", obj)
    for real, args in [(nothing_policy, ["plan", "-f"]), (obj, ["check"])]:
        theirs = tmp_path / f"theirs-{real.name}"
        theirs.symlink_to(real)
        os.lchown(theirs, 65534, 65534)
        stderr = refused(9, *args, str(theirs), env=env)
        assert f"{theirs}: {theirs.name} is a symbolic link owned by uid 65534" in stderr, stderr
        assert "does not follow links others control" in stderr and "hint:" in stderr, stderr
        (tmp_path / "dir").mkdir(exist_ok=True)
        (tmp_path / "link").unlink(missing_ok=True)
        (tmp_path / "link").symlink_to(tmp_path / "dir")
        os.lchown(tmp_path / "link", 65534, 65534)   # a parent directory behind their link: refused too
        refused(9, *args, str(tmp_path / "link" / ".." / real.name), env=env)
        ours = tmp_path / f"ours-{real.name}"
        ours.symlink_to(real)
        env.offload(*args, str(ours))
        env.offload(*args, str(tmp_path / "dir" / ".." / real.name))


@pytest.fixture
def full_fs(tmp_path):
    """A 64 KiB tmpfs, for a journal to fill (filled by the test)."""
    import subprocess

    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


@pytest.mark.parametrize("size,needle", [
    (4096, "cannot write a record: No space left on device (ENOSPC)"),   # no byte fits: the write fails
    (4000, "a record was cut short"),                                     # 96 bytes fit: a short write
])
def test_a_full_disk_under_the_journal_names_it_and_leaves_no_half_line(env, full_fs, nothing_policy, size, needle):
    journal = full_fs / "j.jsonl"
    old = b'{"event": "xy"}\n' * (size // 16)
    journal.write_bytes(old)
    with open(full_fs / "filler", "wb", buffering=0) as f, pytest.raises(OSError, match="No space left"):
        while True:   # every page taken: the journal's next record finds no room (or part of one)
            f.write(b"\0" * 4096)
    stderr = refused(1, "apply", "-f", str(nothing_policy), "--journal", str(journal), env=env)
    assert f"journal {journal}" in stderr and needle in stderr, stderr
    assert journal.read_bytes() == old


def test_a_directory_planted_at_an_export_target_is_refused(tmp_path):
    for sub, name in [("nfd", "features"), ("prometheus", "offload.prom"), ("systemd", "offload.service")]:
        (tmp_path / name).mkdir()
        stderr = refused(2, "export", sub, "--path", str(tmp_path / name))
        assert f"{tmp_path / name} exists and is not a regular file (a directory)" in stderr
        assert os.listdir(tmp_path / name) == []


BENCH = '{"config": {"program": "count_drop"}, "results": [{"mode": "native", "rx_pps": 1.5}]}'


@pytest.mark.parametrize("content,needle", [
    ("SECRET-not-json", "not JSON: Expecting value at line 1 column 1"),
    ('["SECRET"]', "not a JSON object"),
    ('{"config": {"program": "x"}, "results": 1}', "results is not a list"),
    ('{"config": {"program": "x"}, "results": ["SECRET"]}', "results[0].mode is not a string"),
    ('{"config": {"program": "x"}, "results": [{"mode": "native", "rx_pps": "SECRET"}]}',
     "results[0].rx_pps is not a number"),
    ('{"config": {"program": 7}, "results": []}', "config.program is not a string"),
    ("[" * 100_000, "nested too deeply"),
    (BENCH + " " * (4 << 20), "is larger than 4194304 bytes"),
])
def test_a_bad_bench_json_is_bad_input_quoting_nothing_of_it(tmp_path, content, needle):
    f = tmp_path / "bench.json"
    f.write_text(content)
    stderr = refused(2, "export", "prometheus", "--path", str(tmp_path / "o.prom"), "--bench-json", str(f))
    assert f"--bench-json {f}" in stderr and needle in stderr and "SECRET" not in stderr, stderr
    assert not (tmp_path / "o.prom").exists()


def test_bench_json_that_is_no_regular_file_is_refused_without_reading(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    for path, kind in [("/dev/zero", "a character device"), (str(tmp_path / "fifo"), "a FIFO")]:
        stderr = refused(2, "export", "prometheus", "--path", str(tmp_path / "o.prom"), "--bench-json", path)
        assert f"--bench-json {path} is not a regular file ({kind})" in stderr


SHADOW = ("root:$y$j9T$SECRETSALT$SECRETHASHroot:19800:0:99999:7:::\n"
          "daemon:*:19800:0:99999:7:::\n"
          "alice:$6$SECRETSALT2$SECRETHASHalice:19800:0:99999:7:::\n")


@pytest.mark.parametrize("content", [SHADOW, SHADOW.replace(":::\n", "\n"), "x:\n\t" + SHADOW])
def test_a_file_that_is_no_policy_is_not_echoed(tmp_path, content):
    """`plan -f /etc/shadow` printed the hashes (jsonschema and PyYAML quote the document)."""
    f = tmp_path / "shadow"
    f.write_text(content)
    f.chmod(0o600)
    stderr = refused(2, "plan", "-f", str(f))
    assert str(f) in stderr and "SECRET" not in stderr, stderr


def test_the_real_shadow_file_is_not_echoed():
    if not os.path.exists("/etc/shadow"):
        pytest.skip("no /etc/shadow here")
    stderr = refused(2, "plan", "-f", "/etc/shadow")
    text = Path("/etc/shadow").read_text()
    hashes = {line.split(":")[1] for line in text.splitlines() if line.count(":") > 1}
    assert "/etc/shadow" in stderr and not any(h in stderr for h in hashes if len(h) > 1), stderr
    assert not any(text[i:i + 41] in stderr for i in range(len(text) - 40)), stderr   # nor a long excerpt


def test_a_huge_prefix_is_quoted_as_a_short_excerpt(tmp_path):
    stderr = refused(2, "filter", "add", "nosuch0", "1" * 5000)
    assert f"bad prefix {'1' * 40 + '…'!r}" in stderr and len(stderr) < 500, stderr
    f = tmp_path / "p.yaml"
    f.write_text(RULE.replace("count_drop", "filter") + f"    params: {{prefixes: ['{'2' * 5000}']}}\n")
    stderr = refused(2, "plan", "-f", str(f))
    assert f"bad prefix {'2' * 40 + '…'!r}" in stderr and len(stderr) < 500, stderr
