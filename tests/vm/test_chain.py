"""offload's program beside xdp-loader's in libxdp's multi-program dispatcher, for real: the VM
lane's kernel has the BPF JIT, which freplace (BPF_PROG_TYPE_EXT) needs. Both programs count the
frames sent; the counters are read with bpftool (xdp-loader's) and `offload stats` (offload's),
the chain with `xdp-loader status` as well as `offload status`."""

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from lib.cli import offload, offload_json
from lib.helpers import need_tool
from lib.kernel import kernel_xdp

from offload.kernel import netns as netns_mod
from offload.load import chain
from offload.load.programs import library_object

pytestmark = pytest.mark.vm
N = 40
XDP_PASS, XDP_DROP = 2, 1


@pytest.fixture(autouse=True)
def freplace(env):
    why = chain.freplace_refusal()
    if why is not None:
        pytest.skip(f"this kernel cannot run libxdp's dispatcher: {why}")
    for dev in ("all", "default", env.ifname, env.peer):   # no IPv6 chatter: only the frames sent are counted
        env.cmd("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")


def loader(env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """xdp-loader in the lab's network namespace, in this mount namespace (the host's bpffs)."""
    res = subprocess.run(["nsenter", f"--net=/run/netns/{env.netns}", need_tool("xdp-loader"), *args],
                         capture_output=True, text=True)
    assert not check or res.returncode == 0, res.stderr
    return res


def loader_chain(env) -> list[tuple[int, str, int, list[str]]]:
    """`xdp-loader status`'s programs in the dispatcher: (priority, name, id, chain actions)."""
    out = loader(env, "status", env.ifname).stdout
    rows = [ln.split() for ln in out.splitlines() if ln.split()[:1] == ["=>"]]
    return [(int(r[1]), r[2], int(r[3]), sorted(a.removeprefix("XDP_").lower() for a in ",".join(r[5:]).split(",")
                                                 if a)) for r in rows]


def offload_chain(env) -> list[dict]:
    st = offload_json("status", netns=env.netns)
    (row,) = [r for r in st["attachments"] if r["interface"] == env.ifname]
    assert row["name"] == "xdp_dispatcher" and not row["dispatcher"]["warnings"]
    return row["dispatcher"]["programs"]


def agree(env) -> list[dict]:
    """offload status and xdp-loader status list the same chain, in the same order."""
    progs = offload_chain(env)
    assert [(p["priority"], p["name"], p["prog_id"], sorted(p["chain_call_actions"])) for p in progs] \
        == loader_chain(env)
    return progs


def packets(prog_id: int, action: int) -> int:
    """A library program's packets for `action`, summed over CPUs and over the interfaces it
    counted for (bpf/offload_stats.h: per ingress ifindex, a fast slot of xdp_stats_fast tagged
    with it or an entry of xdp_stats), read by bpftool."""
    bpftool = need_tool("bpftool")
    info = json.loads(subprocess.run([bpftool, "prog", "show", "id", str(prog_id), "-j"], capture_output=True,
                                     text=True, check=True).stdout)
    # where struct offload_counters starts in each map's value: the fast slot's follows its tag (u32, pad)
    head = {"xdp_stats": 0, "xdp_stats_fast": 8}
    total = 0
    for m in info["map_ids"]:
        name = json.loads(subprocess.run([bpftool, "map", "show", "id", str(m), "-j"], capture_output=True,
                                         text=True, check=True).stdout)["name"]
        if name not in head:
            continue
        dump = json.loads(subprocess.run([bpftool, "map", "dump", "id", str(m), "-j"], capture_output=True,
                                         text=True, check=True).stdout)
        at = head[name] + 16 * action   # packets and bytes per action
        total += sum(int.from_bytes(bytes(int(b, 16) for b in v["value"][at:at + 8]), "little")
                     for entry in dump for v in entry["values"])
    return total


def send(env, n: int = N) -> None:
    """n broadcast frames from the peer: they arrive at the lab's interface, through its XDP."""
    frame = b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x88\xb5" + bytes(50)   # local experimental type
    with netns_mod.inside(env.netns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with s:
        s.bind((env.peer, 0))
        for _ in range(n):
            s.send(frame)


def ours_packets(env, action: str = "pass") -> int:
    return offload_json("stats", env.ifname, netns=env.netns)["packets"][action]


def not_collected(env) -> bool:
    """gc counts offload's program in the dispatcher as attached: nothing of this lab to free."""
    freed = offload_json("gc", "--dry-run")["freed"]
    return not [f for f in freed if f["netns"] == env.netns]


def test_beside_xdp_loader_both_count_in_priority_order(env):
    env.defer(loader, env, "unload", "--all", env.ifname, check=False)
    loader(env, "load", "-m", "native", "--prio", "10", env.ifname, str(library_object("count_pass", False)))
    res = offload_json("attach", env.ifname, "count_pass", "--priority", "20", netns=env.netns)
    env.defer(offload, "detach", env.ifname, netns=env.netns, check=False)
    assert res["mode"] == "native" and res["chain"]["priority"] == 20
    theirs, ours = agree(env)
    assert (theirs["priority"], theirs["ours"], ours["priority"], ours["ours"]) == (10, False, 20, True)
    assert ours["prog_id"] == res["prog_id"] and ours["program"] == "count_pass"
    t0, o0 = packets(theirs["prog_id"], XDP_PASS), ours_packets(env)
    send(env)
    dt, do = packets(theirs["prog_id"], XDP_PASS) - t0, ours_packets(env) - o0
    assert dt >= N and do == dt          # every frame through xdp-loader's, then through ours

    # ours first now, and it drops: xdp-loader's (priority 10) sees nothing
    res = offload_json("attach", env.ifname, "count_drop", "--priority", "5", netns=env.netns)
    assert res["replaced"] == ours["prog_id"]
    first, second = agree(env)
    assert (first["prog_id"], first["name"], second["prog_id"]) == (res["prog_id"], "count_drop", theirs["prog_id"])
    t0, o0 = packets(theirs["prog_id"], XDP_PASS), ours_packets(env, "drop")
    send(env)
    assert ours_packets(env, "drop") - o0 >= N and packets(theirs["prog_id"], XDP_PASS) == t0

    # offload's leaves; xdp-loader's keeps running alone in the dispatcher
    assert offload_json("detach", env.ifname, netns=env.netns)["detached"]["prog_id"] == res["prog_id"]
    (only,) = agree(env)
    assert only["prog_id"] == theirs["prog_id"]
    t0 = packets(theirs["prog_id"], XDP_PASS)
    send(env)
    assert packets(theirs["prog_id"], XDP_PASS) - t0 >= N
    assert not_collected(env)


def test_xdp_loader_joins_offload_s_dispatcher_and_leaves_it(env):
    env.defer(loader, env, "unload", "--all", env.ifname, check=False)
    res = offload_json("attach", env.ifname, "count_pass", "--priority", "20", netns=env.netns)
    env.defer(offload, "detach", env.ifname, netns=env.netns, check=False)
    (solo,) = agree(env)
    assert solo["ours"] and solo["prog_id"] == res["prog_id"]
    loader(env, "load", "-m", "native", "--prio", "10", env.ifname, str(library_object("count_pass", False)))
    theirs, ours = agree(env)
    assert ours["prog_id"] == res["prog_id"] and not theirs["ours"]   # ours kept its program through the rebuild
    t0, o0 = packets(theirs["prog_id"], XDP_PASS), ours_packets(env)
    send(env)
    dt = packets(theirs["prog_id"], XDP_PASS) - t0
    assert dt >= N and ours_packets(env) - o0 == dt

    loader(env, "unload", "-i", str(theirs["prog_id"]), env.ifname)
    (left,) = agree(env)
    assert left["prog_id"] == res["prog_id"]
    o0 = ours_packets(env)
    send(env)
    assert ours_packets(env) - o0 >= N
    assert not_collected(env)

    offload_json("detach", env.ifname, netns=env.netns)
    assert kernel_xdp(env.ifname, env.netns) == {}            # the last program took the dispatcher along
    ifindex = json.loads(subprocess.run(["ip", "-n", env.netns, "-j", "link", "show", env.ifname],
                                        capture_output=True, text=True, check=True).stdout)[0]["ifindex"]
    assert not [d for d in os.listdir("/sys/fs/bpf/xdp") if d.startswith(f"dispatch-{ifindex}-")]


# -- a policy's chain: plan, apply, drift repaired under watch, a failed member rolled back ------------
POLICY = """\
rules:
  - name: shared
    match: {{interfaces: ["{iface}"]}}
    mode: {{prefer: native}}
    programs:
{members}"""
MEMBERS = ("      - {program: count_pass, priority: 10}\n"
           "      - {program: count_drop, priority: 20, chain: [pass]}\n")


def write_policy(path, env, members: str) -> str:
    path.write_text(POLICY.format(iface=env.ifname, members=members))
    return str(path)


def chain_ids(env) -> list[tuple[int, int, bool]]:
    """(priority, prog id, ours) of the chain, in run order, as both tools agree."""
    return [(p["priority"], p["prog_id"], p["ours"]) for p in agree(env)]


def scraped(env, member: str, action: str) -> float:
    """offload_xdp_packets_total of chain member `member` as /metrics exports it (the collector,
    scraped in this process)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from offload.orchestrate.metrics import OffloadCollector

    reg = CollectorRegistry()
    reg.register(OffloadCollector())
    with netns_mod.inside(env.netns):
        text = generate_latest(reg).decode()
    (got,) = [s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "offload_xdp_packets_total" and (s.labels["member"], s.labels["action"]) == (member, action)]
    return got


def test_policy_chain_beside_xdp_loader_plan_apply_watch_and_roll_back(env, tmp_path):
    from lib.objects import unchecked_object

    from offload.orchestrate.policy import load as load_policy
    from offload.orchestrate.watch import Watcher

    env.defer(loader, env, "unload", "--all", env.ifname, check=False)
    loader(env, "load", "-m", "native", "--prio", "15", env.ifname, str(library_object("count_pass", False)))
    (theirs,) = agree(env)
    pol = write_policy(tmp_path / "chain.yaml", env, MEMBERS)
    env.defer(offload, "detach", env.ifname, netns=env.netns, check=False)

    # plan: offload's two around xdp-loader's, in run order; then apply builds exactly that
    (item,) = [i for i in offload_json("plan", "-f", pol, netns=env.netns)["plan"] if i["interface"] == env.ifname]
    assert (item["action"], item["mode"]) == ("attach", "native")
    assert [(m["state"], m["priority"]) for m in item["chain"]["members"]] == [("add", 10), ("foreign", 15),
                                                                                ("add", 20)]
    journal = str(tmp_path / "journal.jsonl")   # the guest's root is read-only
    assert offload_json("apply", "-f", pol, "--journal", journal, netns=env.netns)["outcome"] == "ok"
    built = chain_ids(env)
    assert [(p, o) for p, _, o in built] == [(10, True), (15, False), (20, True)] and built[1][1] == theirs["prog_id"]
    pass_id, drop_id = built[0][1], built[2][1]
    t0, p0, d0 = packets(theirs["prog_id"], XDP_PASS), packets(pass_id, XDP_PASS), packets(drop_id, XDP_DROP)
    s0 = offload_json("stats", env.ifname, "--member", "count_drop", netns=env.netns)["packets"]["drop"]
    send(env)
    dt = packets(theirs["prog_id"], XDP_PASS) - t0
    assert dt >= N and packets(pass_id, XDP_PASS) - p0 == dt and packets(drop_id, XDP_DROP) - d0 == dt
    s1 = offload_json("stats", env.ifname, "--member", "count_drop", netns=env.netns)["packets"]["drop"]
    assert s1 - s0 == dt and scraped(env, "count_drop", "drop") == s1   # /metrics: the member's own counter
    assert offload_json("apply", "-f", pol, "--journal", journal, netns=env.netns)["changed"] == 0
    assert chain_ids(env) == built

    # watch: xdp-loader takes offload's member out; the next reconcile puts it back, the foreign one
    # runs on (watch's own reconcile, in this process: no interpreter start per period under TCG)
    log: list[str] = []
    with netns_mod.inside(env.netns):
        watcher = Watcher(load_policy(pol), interval=3600, detach_on_exit=False, journal=Path(journal),
                          log=log.append)
        watcher.start()
    loader(env, "unload", "-i", str(drop_id), env.ifname)
    assert [i for _, i, _ in chain_ids(env)] == [pass_id, theirs["prog_id"]]
    with netns_mod.inside(env.netns):
        watcher.reconcile("periodic")
    assert any("reconcile=periodic" in line and "action=replace" in line for line in log), log
    repaired = chain_ids(env)
    assert [(p, o) for p, _, o in repaired] == [(10, True), (15, False), (20, True)]
    assert repaired[0][1] == pass_id and repaired[1][1] == theirs["prog_id"] and repaired[2][1] != drop_id

    # a member that cannot join (the verifier refuses it): the chain is put back as it was, ids and all
    bad = unchecked_object(tmp_path)
    worse = write_policy(tmp_path / "worse.yaml", env, MEMBERS.replace("priority: 10", "priority: 5")
                         + f"      - {{program: {bad}, priority: 30}}\n")
    res = offload("apply", "-f", worse, "--journal", journal, "--json", netns=env.netns, check=False)
    assert res.returncode == 1, res.stderr
    (fail,) = json.loads(res.stdout)["failed"]
    assert "could not add unchecked" in fail["error"] and "the chain is as it was" in fail["error"]
    assert chain_ids(env) == repaired
    st = offload_chain(env)
    assert [(p["member"], p["program"]) for p in st if p["ours"]] == [("count_pass", "count_pass"),
                                                                       ("count_drop", "count_drop")]

    # a program dropped from the rule: only that member of offload's leaves
    fewer = write_policy(tmp_path / "fewer.yaml", env, MEMBERS.splitlines(keepends=True)[0])
    done = offload_json("apply", "-f", fewer, "--journal", journal, netns=env.netns)
    (step,) = [st for st in done["steps"] if st["interface"] == env.ifname]
    assert done["outcome"] == "ok" and step["built"]["removed"] == [repaired[2][1]]
    assert chain_ids(env) == repaired[:2]

    # SIGKILLs while apply replaces members: the next apply finds the killed run's programs offload's
    # (leftovers, taken out by id), never foreign. Two members change in each run; the kill comes at
    # the second, so one kill covers two windows: 1) the first member committed (the one it replaces
    # still runs), the second added by libxdp and not yet staged; 2) the first committed, the second
    # staged and not committed
    moved = write_policy(tmp_path / "moved.yaml", env, MEMBERS.replace("priority: 10", "priority: 11")
                         .replace("priority: 20", "priority: 25"))
    for target, at, prios in ((moved, "attached", (11, 25)), (pol, "staged", (10, 20))):
        killed_apply(env, target, journal, at, nth=2)
        progs = offload_chain(env)
        assert [p["ours"] for p in progs] == [p["prog_id"] != theirs["prog_id"] for p in progs], (at, progs)
        stale = sorted(p["prog_id"] for p in progs if p["leftover"])
        assert len(stale) == 2, (at, progs)
        if at == "attached":
            named = offload_json("gc", "--dry-run")["leftovers"]
            assert sorted(x["prog_id"] for x in named if x["netns"] == env.netns) == stale
        assert offload_json("apply", "-f", target, "--journal", journal, netns=env.netns)["outcome"] == "ok"
        now = chain_ids(env)   # exactly the rule's members; the foreign one kept its id
        assert [(p, o) for p, _, o in now] == [(prios[0], True), (15, False), (prios[1], True)], (at, now)
        assert now[1][1] == theirs["prog_id"] and not set(stale) & {i for _, i, _ in now} and nothing_staged(env)
    assert not_collected(env)

    # detach: offload's members leave, xdp-loader's runs on alone
    assert len(offload_json("detach", env.ifname, netns=env.netns)["members"]) == 2
    assert [i for _, i, _ in chain_ids(env)] == [theirs["prog_id"]]
    assert not_collected(env)


@pytest.mark.parametrize("via", ["netlink", "link"])
def test_a_rule_switches_between_a_chain_and_one_program_as_one_transaction(env, tmp_path, via):
    """`programs:` -> `program:` and back, each a replace in one transaction: the lone program in
    the dispatcher's place (a failed run swaps the dispatcher back, ids and all), then the chain.
    With `via: link` the kernel puts no bpf_link in the place of libxdp's dispatcher (held by
    netlink): the plan says the switch is not atomic, apply takes the dispatcher off first and the
    program ends held by offload's link, never by netlink."""
    env.defer(offload, "detach", env.ifname, netns=env.netns, check=False)
    journal = str(tmp_path / "journal.jsonl")
    chained = write_policy(tmp_path / "chain.yaml", env, MEMBERS)
    single = write_policy(tmp_path / "single.yaml", env, "")
    Path(single).write_text(Path(single).read_text().replace("    programs:\n",
                                                             f"    program: count_drop\n    via: {via}\n"))
    offload_json("apply", "-f", chained, "--journal", journal, netns=env.netns)
    before = [(p["priority"], p["prog_id"], p["ours"]) for p in offload_chain(env)]
    assert [(p, o) for p, _, o in before] == [(10, True), (20, True)]
    (item,) = [i for i in offload_json("plan", "-f", single, netns=env.netns)["plan"] if i["interface"] == env.ifname]
    atomic = via == "netlink"
    assert (item["action"], item["via"], item["chain"]["alone"], item["chain"]["atomic"]) == \
        ("replace", via, True, atomic) and ("not atomic" in item["reason"]) is not atomic

    # the run fails once the program stands alone: the dispatcher comes back with its members
    killed_apply(env, single, journal, "committed", fail=True)
    assert [(p["priority"], p["prog_id"], p["ours"]) for p in offload_chain(env)] == before and nothing_staged(env)

    done = offload_json("apply", "-f", single, "--journal", journal, netns=env.netns)
    (step,) = [st for st in done["steps"] if st["interface"] == env.ifname]
    assert (done["outcome"], step["action"], step["chain"]["alone"]) == ("ok", "replace", True)
    assert (step["via"], step["chain"]["atomic"]) == (via, atomic)
    assert any("before offload's link was made" in w for w in done["warnings"]) is not atomic
    assert [m["state"] for m in step["chain"]["members"]] == ["remove", "remove"]
    assert sorted(step["built"]["removed"]) == sorted(i for _, i, _ in before)
    assert kernel_xdp(env.ifname, env.netns) == {"native": step["prog_id"]}   # alone: no dispatcher
    (row,) = [r for r in offload_json("status", netns=env.netns)["attachments"] if r["interface"] == env.ifname]
    assert (row["via"], row["ours"], row["prog_id"]) == (via, True, step["prog_id"])
    ifindex = json.loads(subprocess.run(["ip", "-n", env.netns, "-j", "link", "show", env.ifname],
                                        capture_output=True, text=True, check=True).stdout)[0]["ifindex"]
    assert not [d for d in os.listdir("/sys/fs/bpf/xdp") if d.startswith(f"dispatch-{ifindex}-")]
    assert not_collected(env) and nothing_staged(env)
    again = offload_json("apply", "-f", single, "--journal", journal, netns=env.netns)
    assert [st["status"] for st in again["steps"] if st["interface"] == env.ifname] == ["kept"]

    # and back: the lone program makes way for the chain
    done = offload_json("apply", "-f", chained, "--journal", journal, netns=env.netns)
    (step,) = [st for st in done["steps"] if st["interface"] == env.ifname]
    assert (step["action"], [m["state"] for m in step["chain"]["members"]]) == ("replace", ["add", "add"])
    assert [(p["priority"], p["ours"]) for p in offload_chain(env)] == [(10, True), (20, True)]
    assert not_collected(env) and nothing_staged(env)


# -- a SIGKILL while apply replaces a member: the next apply finds offload's leftover, never foreign ---
def killed_apply(env, pol: str, journal: str, at: str, nth: int = 1, fail: bool = False) -> None:
    """apply in a child forked from this process, SIGKILLed by itself at `at`, the `nth` time it
    gets there: right after libxdp added a member (`attached`), after a member's pins were staged,
    before their commit (`staged`), or once all are committed, before the members they replace
    leave (`committed`). With `fail`, an error is raised there instead (apply rolls back)."""
    import signal

    from offload.kernel import libxdp
    from offload.load import chain as chain_mod
    from offload.load import pins
    from offload.orchestrate import apply as apply_mod
    from offload.orchestrate.policy import load as load_policy

    seen = [0]

    def die(*args, **kwargs):
        seen[0] += 1
        if seen[0] < nth:
            return real_commit(*args, **kwargs) if at == "staged" else None
        if fail:
            raise RuntimeError("injected failure")
        os.kill(os.getpid(), signal.SIGKILL)

    def attach_then_die(self, *args, **kwargs):
        real_attach(self, *args, **kwargs)
        die()

    real_attach, real_commit = libxdp.Program.attach, pins.Slot.commit
    pid = os.fork()
    if pid == 0:   # the child: patched, never returns
        try:
            if at == "attached":
                libxdp.Program.attach = attach_then_die
            elif at == "staged":
                pins.Slot.commit = die
            else:
                chain_mod.Built.finish = die
            with netns_mod.inside(env.netns):
                apply_mod.apply(load_policy(pol), journal=Path(journal))
        finally:
            os._exit(3)   # not killed: the test fails below
    _, status = os.waitpid(pid, 0)
    if fail:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3, f"{at}: child status {status:#x}"
    else:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{at}: child status {status:#x}"


def nothing_staged(env) -> bool:
    """No staging directory or staged record of offload's left in the lab's namespace."""
    from offload.load import pins

    where = [pins.BPFFS / "offload" / env.netns, pins.RUN / "attachments" / env.netns]
    return not [n for d in where if d.is_dir() for n in os.listdir(d) if "%new" in n or n.endswith(".tmp")]
