"""offload as a root tool on a shared host: no argument becomes a path, the state tree is trusted
only when verified (bpffs is mode 1777 here), transactions hold on every error, and nothing is
left behind that `offload gc` does not find."""

import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from lib.cli import OFFLOAD, offload, offload_json
from lib.helpers import BPFFS, PIN_ROOT, RUN_ROOT, need_tool
from lib.kernel import kernel_xdp

pytestmark = pytest.mark.root


@pytest.fixture
def no_state():
    """The tests that plant things in offload's state tree need it absent (and restore that)."""
    if PIN_ROOT.exists() or (RUN_ROOT / "attachments").exists():
        pytest.skip(f"{PIN_ROOT} or {RUN_ROOT}/attachments exists (something else holds offload state now)")
    yield
    for p in (PIN_ROOT, RUN_ROOT / "attachments"):
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.exists():
            shutil.rmtree(p)


@pytest.mark.parametrize("name", ["/srv/victim", "", ".", "..", "a/b", "x" * 300, "a b", "eth0:1"])
def test_interface_names_never_become_paths(env, tmp_path, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    for args in (["detach", name], ["stats", name], ["filter", "list", name], ["attach", name, "count_drop"]):
        res = env.offload(*args, check=False)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (args, res.stderr)
    assert (victim / "keep").read_text() == "precious"


@pytest.mark.parametrize("ns", ["../../proc/1/ns/net", "", ".", "a/b", "/run/netns/x"])
def test_namespace_names_are_names(env, ns):
    res = offload("status", "--netns", ns, check=False)
    assert res.returncode == 2 and "namespace" in res.stderr, res.stderr


def test_state_tree_made_by_someone_else_is_refused(env, no_state):
    if stat.S_IMODE(BPFFS.stat().st_mode) & 0o002 == 0:
        pytest.skip(f"{BPFFS} is not world-writable here: no one else can plant {PIN_ROOT}")
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "mkdir", str(PIN_ROOT)],
                   check=True)
    res = env.offload("attach", env.ifname, "count_drop", check=False)
    assert res.returncode == 9 and str(PIN_ROOT) in res.stderr and "uid 65534" in res.stderr, res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}            # nothing attached: the check comes first


def test_symlinked_namespace_directory_is_not_followed(env, no_state):
    PIN_ROOT.mkdir(mode=0o700)
    elsewhere = BPFFS / f"victim-{os.getpid()}"
    elsewhere.mkdir(mode=0o700)
    try:
        (elsewhere / "keep").mkdir()
        (PIN_ROOT / env.netns).symlink_to(elsewhere)
        for args in (["attach", env.ifname, "count_drop"], ["detach", env.ifname]):
            res = env.offload(*args, check=False)
            assert res.returncode == 9 and "symbolic link" in res.stderr, (args, res.stderr)
        assert (elsewhere / "keep").is_dir()
        assert kernel_xdp(env.ifname, env.netns) == {}
    finally:
        shutil.rmtree(elsewhere)


def test_modes_ignore_the_umask(env):
    res = subprocess.run(["sh", "-c", 'umask 000; exec "$@"', "sh", "offload", "attach", env.ifname, "count_drop",
                          "--netns", env.netns], capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"})
    assert res.returncode == 0, res.stderr
    meta = RUN_ROOT / "attachments" / env.netns / f"{env.ifname}.json"
    assert stat.S_IMODE(meta.stat().st_mode) == 0o600
    for d in (meta.parent, PIN_ROOT / env.netns, PIN_ROOT / env.netns / env.ifname):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_symlinked_journal_and_lock_are_refused(env, tmp_path):
    target = tmp_path / "target"
    target.write_text("untouched\n")
    link = tmp_path / "journal.jsonl"
    link.symlink_to(target)
    pol = tmp_path / "p.yaml"
    pol.write_text(f"rules:\n  - name: r\n    match: {{interfaces: ['{env.ifname}']}}\n    program: count_drop\n")
    res = env.offload("apply", "-f", str(pol), "--journal", str(link), check=False)
    assert res.returncode == 9 and "symbolic link" in res.stderr, res.stderr
    assert target.read_text() == "untouched\n" and kernel_xdp(env.ifname, env.netns) == {}


def test_a_failing_journal_rolls_the_run_back(env, tmp_path, monkeypatch):
    """The journal fails after the first change was made: that change is undone, the journal's
    last word is the end record, and the kernel is as before."""
    from offload.kernel import netns
    from offload.orchestrate import apply as apply_mod
    from offload.orchestrate.policy import parse

    lab = env.make_lab(pairs=2)
    pol = parse(f"rules:\n  - name: r\n    match: {{interfaces: ['{lab.name}-a*']}}\n    program: count_drop\n")
    journal = tmp_path / "j.jsonl"
    real = apply_mod.Journal.write
    calls = []

    def failing(self, event, **fields):
        calls.append(event)
        if event == "step" and calls.count("step") == 2:
            raise OSError(27, "File too large")
        return real(self, event, **fields)

    monkeypatch.setattr(apply_mod.Journal, "write", failing)
    with netns.inside(lab.netns), pytest.raises(OSError):
        apply_mod.apply(pol, journal=journal)
    assert {d: kernel_xdp(d, lab.netns) for d in (f"{lab.name}-a0", f"{lab.name}-a1")} == \
        {f"{lab.name}-a0": {}, f"{lab.name}-a1": {}}
    events = [json.loads(ln) for ln in journal.read_text().splitlines()]
    assert events[-1]["event"] == "end" and events[-1]["outcome"] == "failed" and "File too large" in events[-1]["error"]
    assert [e["event"] for e in events].count("rollback") == 2
    assert not (PIN_ROOT / lab.netns).exists()


def test_an_interrupted_run_is_reported_by_the_next(env, tmp_path):
    journal = tmp_path / "j.jsonl"
    journal.write_text(json.dumps({"event": "start", "run": "20261125T000000-1"}) + "\n"
                       + '{"event": "step", "run": "20261125T000000-1", "trunc')      # killed mid-write
    pol = tmp_path / "p.yaml"
    pol.write_text(f"rules:\n  - name: r\n    match: {{interfaces: ['{env.ifname}']}}\n    program: count_drop\n")
    res = env.offload_json("apply", "-f", str(pol), "--journal", str(journal))
    assert any("20261125T000000-1" in w and "interrupted" in w for w in res["warnings"])
    lines = journal.read_text().splitlines()
    start = json.loads(lines[2])      # the cut record kept its own line; the new run starts on the next
    assert start["event"] == "start" and start["previous_interrupted"] == "20261125T000000-1"


def test_gc_frees_what_nothing_uses(env):
    lab = env.make_lab(pairs=3)
    a0, a1, a2 = (f"{lab.name}-a{i}" for i in range(3))
    for dev in (a0, a1, a2):
        env.offload_json("attach", dev, "count_drop", netns=lab.netns)
    subprocess.run(["ip", "-n", lab.netns, "link", "del", a0], check=True)               # interface gone
    subprocess.run(["ip", "-n", lab.netns, "link", "set", "dev", a1, "xdp", "off"], check=True)  # detached by hand
    subprocess.run(["ip", "-n", lab.netns, "link", "set", "dev", a2, "name", f"{lab.name}-r2"], check=True)
    seen = offload_json("status", "--all-namespaces")
    orphans = {(o["netns"], o["interface"]) for o in seen["orphans"]}
    assert {(lab.netns, a0), (lab.netns, a1)} <= orphans
    assert {"netns": lab.netns, "interface": a2, "now": f"{lab.name}-r2"} in seen["renamed"]
    dry = offload_json("gc", "--dry-run")
    assert (PIN_ROOT / lab.netns / a0).exists() and {(f["netns"], f["interface"]) for f in dry["freed"]} >= orphans
    done = offload_json("gc")
    assert {(f["netns"], f["interface"]) for f in done["freed"]} >= {(lab.netns, a0), (lab.netns, a1)}
    assert not (PIN_ROOT / lab.netns / a0).exists() and not (PIN_ROOT / lab.netns / a1).exists()
    assert (PIN_ROOT / lab.netns / f"{lab.name}-r2" / "prog").exists()                  # followed the rename
    st = env.offload_json("status", netns=lab.netns)
    (row,) = st["attachments"]
    assert row["interface"] == f"{lab.name}-r2" and row["ours"] is True


def test_gc_after_the_namespace_was_deleted(env):
    lab = env.make_lab(pairs=1)
    env.offload_json("attach", lab.pairs[0].a, "count_drop", netns=lab.netns)
    subprocess.run(["ip", "netns", "del", lab.netns], check=True)
    assert any(o["netns"] == lab.netns for o in offload_json("status", "-A")["orphans"])
    freed = offload_json("gc")["freed"]
    assert any(f["netns"] == lab.netns and "namespace is gone" in f["reason"] for f in freed)
    assert not (PIN_ROOT / lab.netns).exists() and not (RUN_ROOT / "attachments" / lab.netns).exists()


def test_a_damaged_record_is_one_warning(env):
    lab = env.make_lab(pairs=2)
    a0, a1 = lab.pairs[0].a, lab.pairs[1].a
    for dev in (a0, a1):
        env.offload_json("attach", dev, "count_drop", netns=lab.netns)
    (RUN_ROOT / "attachments" / lab.netns / f"{a0}.json").write_text('{"interface": "tr')
    st = env.offload_json("status", netns=lab.netns)
    assert any(a0 in w and "damaged" in w for w in st["warnings"])
    assert [r["ours"] for r in st["attachments"] if r["interface"] == a1] == [True]
    res = env.offload("stats", a0, netns=lab.netns, check=False)
    assert res.returncode == 1 and "damaged" in res.stderr and "Traceback" not in res.stderr
    assert env.offload_json("detach", a0, netns=lab.netns)["detached"]          # detach still cleans it
    assert kernel_xdp(a0, lab.netns) == {}


def consistency(ns: str, devs: list[str]) -> list[str]:
    """Kernel, pins and records against each other: every attached program is offload's (pinned,
    recorded with its id), and every pin or record belongs to an attached program."""
    problems = []
    st = offload_json("status", "--netns", ns)
    rows = {r["interface"]: r for r in st["attachments"]}
    for d in devs:
        attached = kernel_xdp(d, ns)
        pinned = (PIN_ROOT / ns / d / "prog").exists()
        meta = RUN_ROOT / "attachments" / ns / f"{d}.json"
        if attached:
            if not rows.get(d, {}).get("ours"):
                problems.append(f"{d}: attached {attached} but not offload's")
            elif json.loads(meta.read_text())["prog_id"] not in attached.values():
                problems.append(f"{d}: record says prog {json.loads(meta.read_text())['prog_id']}, kernel {attached}")
        elif pinned or meta.exists():
            problems.append(f"{d}: pins or record without an attached program")
    left = [p.name for p in (PIN_ROOT / ns).glob("*%new")] if (PIN_ROOT / ns).exists() else []
    return problems + [f"staging left: {left}"] * bool(left)


def test_sigkill_at_random_points_of_apply(env, tmp_path):
    """apply killed anywhere: one `offload gc` restores agreement between kernel, pins and
    records, and the next apply completes the policy."""
    import random
    import signal
    import time

    from lib.cli import OFFLOAD

    rng = random.Random(11)
    lab = env.make_lab(pairs=4)
    devs = [p.a for p in lab.pairs]
    pols = []
    for prog in ("count_drop", "count_pass"):
        p = tmp_path / f"{prog}.yaml"
        p.write_text(f"rules:\n  - name: {prog}\n    match: {{interfaces: ['{lab.name}-a*']}}\n    program: {prog}\n")
        pols.append(p)
    for i in range(6):
        proc = subprocess.Popen([OFFLOAD, "apply", "-f", str(pols[i % 2]), "--netns", lab.netns, "--journal",
                                 str(tmp_path / "j.jsonl")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        offload_json("gc")
        assert consistency(lab.netns, devs) == [], f"after kill {i}"
    final = offload_json("apply", "-f", str(pols[0]), "--netns", lab.netns, "--journal", str(tmp_path / "j.jsonl"))
    assert final["outcome"] == "ok"
    assert all(kernel_xdp(d, lab.netns) for d in devs) and consistency(lab.netns, devs) == []


def test_killed_between_kernel_swap_and_pin_swap(env):
    """The state a SIGKILL leaves right after the kernel swap (staged pins, program attached, no
    record): the program is still offload's, and gc finishes the attach."""
    from offload.kernel import netns, xdp
    from offload.load import loader, pins, programs

    with netns.inside(env.netns):
        ld = loader.load(programs.resolve("count_drop"))
        try:
            slot = pins.Slot(env.netns, env.ifname)
            slot.stage(ld.fd, ld.maps())
            xdp.set_prog(socket.if_nametoindex(env.ifname), ld.fd, "native")
        finally:
            ld.close()
    st = env.offload_json("status")
    (row,) = st["attachments"]
    assert row["ours"] is True and row["prog_id"] == kernel_xdp(env.ifname, env.netns)["native"]
    res = offload_json("gc")
    assert [r["interface"] for r in res["recovered"]] == [env.ifname]
    assert consistency(env.netns, [env.ifname]) == []
    assert env.offload_json("detach", env.ifname)["detached"]["mode"] == "native"
    assert kernel_xdp(env.ifname, env.netns) == {}


def test_an_unnamed_namespace_is_not_filed_as_host(env):
    """A namespace with no /run/netns name (unshare -n, a container without /run/netns) must not
    have its state filed under "host": the host's gc would then free pins of programs still
    attached there. offload refuses to keep state for it and says how to name it."""
    from lib.cli import OFFLOAD

    before = sorted(p.name for p in (PIN_ROOT / "host").iterdir()) if (PIN_ROOT / "host").is_dir() else []
    for args in (["attach", "lo", "count_drop", "--mode", "generic"], ["status"]):
        res = subprocess.run(["unshare", "-n", OFFLOAD, *args], capture_output=True, text=True, timeout=60)
        assert res.returncode == 4, (args, res.returncode, res.stderr)
        assert "no name under /run/netns" in res.stderr and "ip netns attach" in res.stderr, res.stderr
    after = sorted(p.name for p in (PIN_ROOT / "host").iterdir()) if (PIN_ROOT / "host").is_dir() else []
    assert after == before and "lo" not in after
    assert offload_json("status")["netns"] == "host"              # the host itself is still "host"


KERNEL_NAME = {"count_drop": "count_drop", "count_pass": "count_pass"}   # library program -> its kernel name


def agreement(ns: str, devs: list[str]) -> list[str]:
    """consistency(), and the record names the program the kernel runs (its kernel name)."""
    problems = consistency(ns, devs)
    for r in offload_json("status", "--netns", ns)["attachments"]:
        if r["interface"] in devs and r["ours"]:
            meta = json.loads((RUN_ROOT / "attachments" / ns / f"{r['interface']}.json").read_text())
            if KERNEL_NAME.get(meta["program"], meta["program"]) != r["name"]:
                problems.append(f"{r['interface']}: record says {meta['program']}, the kernel runs {r['name']}")
            if meta.get("recovered"):   # every interrupted attach staged its own record: none is guessed
                problems.append(f"{r['interface']}: record rebuilt from the kernel, the attach's own was lost")
    return problems


@pytest.mark.parametrize("syscalls", ["fsync", "syncfs", "renameat", "renameat2"])   # strace counts when=N per syscall
def test_sigkill_at_every_fsync_and_rename_of_apply(env, tmp_path, syscalls):
    """apply from policy A to policy B, killed at its 1st, 2nd, ... fsync (or rename): after each,
    one `offload gc` leaves kernel, pins and records agreeing, the record names the program that
    runs, `plan -f A` never says "keep" for an interface that runs B, and the next apply enforces."""
    strace = need_tool("strace")
    lab = env.make_lab(pairs=2)
    devs = [p.a for p in lab.pairs]
    pols = {}
    for prog in ("count_drop", "count_pass"):
        pols[prog] = tmp_path / f"{prog}.yaml"
        pols[prog].write_text(f"rules:\n  - name: edge\n    match: {{interfaces: ['{lab.name}-a*']}}\n"
                              f"    program: {prog}\n")
    journal = ["--journal", str(tmp_path / "j.jsonl"), "--netns", lab.netns]
    offload_json("apply", "-f", str(pols["count_drop"]), *journal)
    for n in range(1, 9):
        res = subprocess.run([strace, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscalls}", "-e",
                              f"inject={syscalls}:signal=SIGKILL:when={n}", OFFLOAD, "apply", "-f",
                              str(pols["count_pass"]), *journal], capture_output=True, text=True, timeout=300)
        offload_json("gc")
        assert agreement(lab.netns, devs) == [], f"killed at {syscalls} #{n} (exit {res.returncode})"
        for item in offload_json("plan", "-f", str(pols["count_drop"]), "--netns", lab.netns)["plan"]:
            runs = next(r["name"] for r in offload_json("status", "--netns", lab.netns)["attachments"]
                        if r["interface"] == item["interface"])
            assert item["action"] != "keep" or runs == "count_drop", f"plan keeps {runs} on {item['interface']}"
        assert offload_json("apply", "-f", str(pols["count_drop"]), *journal)["outcome"] == "ok"
        assert all(kernel_xdp(d, lab.netns) for d in devs) and agreement(lab.netns, devs) == []
        if res.returncode == 0:
            break   # apply ran to its end without meeting the n-th call: every point was tried
    # one syncfs per run (the group commit of its records and steps): killed once, then it completes
    least = 1 if syscalls == "syncfs" else 2
    assert n > least, f"apply was killed at fewer than {least} points: the injection did not take"


def test_apply_syncs_once_per_run_not_per_interface(env, tmp_path):
    """Group commit: apply's fsyncs and syncfs calls do not grow with the number of interfaces it
    attaches (the journal's start and end, and one syncfs for the run's records and steps)."""
    strace = need_tool("strace")
    lab = env.make_lab(pairs=6)
    counts = []
    for n in (2, 6):
        pol = tmp_path / f"p{n}.yaml"
        pol.write_text("rules:\n" + "".join(f"  - name: r{i}\n    match: {{interfaces: ['{lab.name}-a{i}']}}\n"
                                             "    program: count_drop\n" for i in range(n)))
        trace = tmp_path / f"trace{n}"
        subprocess.run([strace, "-f", "-qq", "-o", str(trace), "-e", "trace=fsync,fdatasync,syncfs", OFFLOAD,
                        "apply", "-f", str(pol), "--netns", lab.netns, "--journal", str(tmp_path / "j.jsonl")],
                       check=True, capture_output=True, timeout=300)
        lines = trace.read_text().splitlines()
        counts.append({call: sum(f" {call}(" in ln or ln.startswith(f"{call}(") for ln in lines)
                       for call in ("fsync", "fdatasync", "syncfs")})
        assert sum(bool(kernel_xdp(f"{lab.name}-a{i}", lab.netns)) for i in range(6)) == n
    assert counts[0] == counts[1], counts
    assert counts[1]["syncfs"] >= 1 and counts[1]["fsync"] <= 2, counts


def test_one_lock_for_every_change_and_none_for_reads(env, tmp_path):
    """While the state lock is held, attach, detach, gc, filter edits and apply wait, then give up
    naming the lock and its holder (exit 9); status, stats, plan, filter list and gc --dry-run do not wait."""
    from offload.load import pins

    env.offload_json("attach", env.ifname, "filter")
    pol = tmp_path / "p.yaml"
    pol.write_text(f"rules:\n  - name: r\n    match: {{interfaces: ['{env.ifname}']}}\n    program: count_drop\n")
    quick = {"OFFLOAD_LOCK_TIMEOUT": "0.5"}
    changes = [["attach", env.ifname, "count_pass", "--force"], ["detach", env.ifname], ["gc"],
               ["filter", "add", env.ifname, "192.0.2.0/24"], ["apply", "-f", str(pol), "--lock-timeout", "0.5",
                                                              "--journal", str(tmp_path / "j.jsonl")]]
    reads = [["status"], ["stats", env.ifname], ["plan", "-f", str(pol)], ["filter", "list", env.ifname],
             ["gc", "--dry-run"]]
    with pins.locked(pins.STATE_LOCK, 5, "the test", ""):
        for argv in changes:
            res = env.offload(*argv, check=False, extra_env=quick) if argv[0] != "gc" else \
                offload(*argv, check=False, extra_env=quick)
            assert res.returncode == 9, f"{argv}: {res.returncode} {res.stderr}"
            assert f"holds {RUN_ROOT / pins.STATE_LOCK} (pid {os.getpid()})" in res.stderr, res.stderr
        for argv in reads:
            res = env.offload(*argv, check=False, extra_env=quick) if argv[0] != "gc" else \
                offload(*argv, check=False, extra_env=quick)
            assert res.returncode == 0, f"{argv} waited on the lock: {res.stderr}"
    assert [r["program"] for r in env.offload_json("status")["attachments"]] == ["filter"]   # nothing changed


def test_gc_never_frees_an_attach_in_progress(env):
    """attach/detach cycles against two gc loops: no command fails inside, and every attach that
    said so is attached, pinned and recorded afterwards (the issue's race: gc "freed" attaches in
    progress, and both exited 70)."""
    import threading

    lab = env.make_lab(pairs=2)
    devs = [p.a for p in lab.pairs]
    stop, gc_codes = threading.Event(), []

    def gc_loop() -> None:
        while not stop.is_set():
            gc_codes.append(offload("gc", "--json", check=False, timeout=120).returncode)

    loops = [threading.Thread(target=gc_loop) for _ in range(2)]
    for t in loops:
        t.start()
    try:
        for i in range(12):
            dev = devs[i % 2]
            res = env.offload("attach", dev, ("count_drop", "count_pass")[i % 2], "--json", netns=lab.netns,
                              check=False)
            assert res.returncode == 0, res.stderr
            assert consistency(lab.netns, [dev]) == [], f"cycle {i}"
            if i % 3 == 2:
                assert env.offload_json("detach", dev, netns=lab.netns)["detached"]
    finally:
        stop.set()
        for t in loops:
            t.join(timeout=180)
    assert gc_codes and set(gc_codes) == {0}, gc_codes
    assert consistency(lab.netns, devs) == []
