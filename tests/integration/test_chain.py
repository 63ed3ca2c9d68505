"""`offload attach --priority` (libxdp's multi-program dispatcher) on a kernel that refuses the
dispatcher's freplace programs, as this development machine's does (BPF_PROG_TYPE_EXT: EPERM): the
reason is shown, nothing is left attached or pinned, and the lone-program fallback happens only
with --allow-single. The chain itself runs in the VM lane (tests/vm/test_chain.py), whose kernel
has the JIT freplace needs. Checked against `ip -j link` and the bpffs, not offload's view."""

import json
import os

import pytest
from lib.helpers import PIN_ROOT
from lib.helpers import RUN_ROOT as _RUN
from lib.kernel import kernel_xdp
from lib.schemas import validate

from offload.load import chain, dispatcher

pytestmark = pytest.mark.root


@pytest.fixture
def refused() -> str:
    why = chain.freplace_refusal()
    if why is None:
        pytest.skip("this kernel runs freplace programs: libxdp builds its dispatcher here (tests/vm/test_chain.py)")
    return why


def ifindex(env) -> int:
    return json.loads(env.cmd("ip", "-j", "link", "show", env.ifname).stdout)[0]["ifindex"]


def nothing_left(env) -> None:
    assert kernel_xdp(env.ifname, env.netns) == {}
    assert not (PIN_ROOT / env.netns).exists(), "offload's pins left behind"
    assert not (_RUN / "attachments" / env.netns).exists(), "offload's record left behind"
    xdp_dir = f"{dispatcher.bpffs_root()}/xdp"
    prefix = f"dispatch-{ifindex(env)}-"
    assert not os.path.isdir(xdp_dir) or not [d for d in os.listdir(xdp_dir) if d.startswith(prefix)]


def test_refused_with_the_kernel_s_reason_and_nothing_half_attached(env, refused):
    res = env.offload("attach", env.ifname, "count_pass", "--priority", "20", check=False)
    assert res.returncode == 4, res.stderr                                 # ENVIRONMENT
    assert "BPF_PROG_TYPE_EXT" in res.stderr and refused in res.stderr and "nothing was attached" in res.stderr
    assert "--allow-single" in res.stderr and "Traceback" not in res.stderr
    nothing_left(env)
    doc = validate(json.loads(env.offload("attach", env.ifname, "count_pass", "--priority", "20", "--json",
                                          check=False).stdout), "error")
    assert doc["error"]["exit_code"] == 4 and refused in doc["error"]["message"]
    nothing_left(env)


def test_allow_single_attaches_it_alone_and_says_why(env, refused):
    res = env.offload_json("attach", env.ifname, "count_pass", "--priority", "20", "--allow-single",
                           "--mode", "generic")
    assert res["chain"] is None and res["mode"] == "generic"
    assert any("--allow-single" in w and refused in w for w in res["warnings"])
    assert kernel_xdp(env.ifname, env.netns) == {"generic": res["prog_id"]}
    (row,) = [r for r in env.offload_json("status")["attachments"] if r["interface"] == env.ifname]
    assert row["ours"] and row["prog_id"] == res["prog_id"] and row["dispatcher"] is None
    env.offload_json("detach", env.ifname)
    nothing_left(env)


@pytest.mark.parametrize("args, says", [
    (["--priority", "20", "--mode", "hw"], "a chain is never offloaded"),
    (["--priority", "20", "--min-mode", "hw"], "a chain is never offloaded"),
    (["--chain", "pass"], "go with --priority"),
    (["--allow-single"], "go with --priority"),
    (["--priority", "20", "--chain", "pass,teleport"], "unknown action 'teleport'"),
    (["--priority", "-1"], "--priority"),
])
def test_bad_chain_input_is_exit_2(env, args, says):
    res = env.offload("attach", env.ifname, "count_pass", *args, check=False)
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr
    nothing_left(env)


def test_libxdp_adapter_reads_what_the_kernel_has(env):
    """kernel.libxdp on this host: a lone program is libxdp's `legacy` case, in its mode, with the
    kernel's id; libxdp's own words come back with an error (its log, captured, not printed)."""
    import socket

    from offload.kernel import libxdp
    from offload.kernel import netns as netns_mod

    res = env.offload_json("attach", env.ifname, "count_pass", "--mode", "generic")
    with netns_mod.inside(env.netns):
        seen = libxdp.chain(socket.if_nametoindex(env.ifname))
    assert (seen.mode, seen.main_prog_id, seen.legacy, seen.members) == ("generic", res["prog_id"], True, ())
    assert kernel_xdp(env.ifname, env.netns) == {"generic": res["prog_id"]}
    with pytest.raises(libxdp.LibxdpError) as e:
        libxdp.Program.from_id(2**32 - 1)
    assert e.value.errno == 2 and any("program fd" in line for line in e.value.log)
    env.offload_json("detach", env.ifname)
    nothing_left(env)


# -- a policy's chain (`programs:`) on this kernel: refused with the reason, never half-built -----------
CHAIN_POLICY = """\
rules:
  - name: shared
    match: {{interfaces: ["{iface}"]}}
    programs:
{members}
{extra}  - name: alone
    match: {{interfaces: ["{peer}"]}}
    program: count_pass
"""
TWO = "      - {program: count_pass, priority: 10}\n      - {program: count_drop, priority: 20, chain: [pass]}\n"
ONE = "      - {program: count_pass, priority: 10}\n"


def chain_policy(env, tmp_path, members: str = TWO, extra: str = "") -> str:
    p = tmp_path / "chain.yaml"
    p.write_text(CHAIN_POLICY.format(iface=env.ifname, peer=env.peer, members=members, extra=extra))
    return str(p)


def test_policy_chain_fails_with_the_reason_and_the_run_leaves_nothing(env, refused, tmp_path):
    pol, journal = chain_policy(env, tmp_path), tmp_path / "journal.jsonl"
    plan = {i["interface"]: i for i in validate(env.offload_json("plan", "-f", pol), "plan")["plan"]}
    item = plan[env.ifname]
    assert item["chain"]["refused"] == refused and item["mode"] is None and "nothing will be attached" in item["reason"]
    assert [(m["state"], m["member"], m["priority"]) for m in item["chain"]["members"]] == [
        ("add", "count_pass", 10), ("add", "count_drop", 20)]
    res = env.offload("apply", "-f", pol, "--journal", str(journal), "--json", check=False)
    assert res.returncode == 1, res.stderr
    doc = validate(json.loads(res.stdout), "apply")
    (fail,) = doc["failed"]
    assert fail["interface"] == env.ifname and refused in fail["error"] and "nothing was attached" in fail["error"]
    assert doc["outcome"] == "failed" and set(doc["rolled_back"]) <= {env.peer}   # the transaction: all or nothing
    nothing_left(env)
    assert kernel_xdp(env.peer, env.netns) == {}
    steps = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [s["error"] for s in steps if s.get("status") == "failed"] == [fail["error"]]
    assert steps[-1]["event"] == "end" and steps[-1]["outcome"] == "failed"


def test_policy_chain_of_one_goes_alone_only_with_allow_single(env, refused, tmp_path):
    pol = chain_policy(env, tmp_path, ONE, "    allow_single: true\n    mode: {prefer: generic}\n")
    (item,) = [i for i in env.offload_json("plan", "-f", pol)["plan"] if i["interface"] == env.ifname]
    assert item["chain"] is None and refused in item["reason"] and "allow_single" in item["reason"]
    doc = validate(env.offload_json("apply", "-f", pol), "apply")
    assert doc["outcome"] == "ok"
    (step,) = [s for s in doc["steps"] if s["interface"] == env.ifname]
    assert (step["program"], step["mode"]) == ("count_pass", "generic")
    assert kernel_xdp(env.ifname, env.netns) == {"generic": step["prog_id"]}
    again = env.offload_json("apply", "-f", pol)                          # idempotent: nothing reloaded
    assert again["changed"] == 0 and kernel_xdp(env.ifname, env.netns) == {"generic": step["prog_id"]}
    env.offload_json("detach", env.ifname)
    env.offload_json("detach", env.peer)
    nothing_left(env)


def test_chain_member_slots_sit_beside_the_interface_s_own(env):
    """One record slot per (interface, program) for a policy's chain members (IFACE:KEY, the key
    escaped), beside the interface's own, which reads as it always did; status and gc know both."""
    from offload.load import pins

    own, member = pins.Slot(env.netns, env.ifname), pins.Slot(env.netns, env.ifname, "my.prog:x%")
    rec = {"interface": env.ifname, "program": "count_pass", "mode": "native", "prog_id": 1, "maps": []}
    env.defer(own.remove)
    env.defer(member.remove)
    own.put_record(rec)
    member.put_record({**rec, "program": "x", "member": "my.prog:x%", "chain": {"priority": 10,
                                                                             "chain_call_actions": ["pass"]}})
    assert member.meta_path.name == f"{env.ifname}:my%2eprog%3ax%25.json"
    assert set(pins.slots(env.netns)) == {own, member} and pins.interface_slots(env.netns, env.ifname) == [own, member]
    assert own.meta()["program"] == "count_pass" and member.meta()["member"] == "my.prog:x%"
    assert env.offload_json("status")["stale_pins"] == [env.ifname]          # the interface, once
    own.remove()   # only the member's record left: stats names it
    res = env.offload("stats", env.ifname, check=False)
    assert res.returncode == 10 and f"--member my.prog:x%" in res.stderr, res.stderr
    res = env.offload("stats", env.ifname, "--member", "x" * 65, check=False)
    assert res.returncode == 2 and "1..64 characters" in res.stderr and "Traceback" not in res.stderr
    own.put_record(rec)
    dry = [f for f in env.offload_json("gc", "--dry-run", netns=None)["freed"] if f["netns"] == env.netns]
    assert len(dry) == 2 and set(pins.slots(env.netns)) == {own, member}
    from offload.load import gc

    freed = gc.collect(only=env.netns)["freed"]    # this lab's namespace only: the host is shared
    assert len(freed) == 2 and {f["interface"] for f in freed} == {env.ifname}
    assert pins.slots(env.netns) == [] and not (_RUN / "attachments" / env.netns).exists()
