"""attach --via link (and a policy's `via: link`) on real veths: the program held by a bpf_link
pinned in offload's state, checked against the kernel's own view (iproute2, bpftool, the link's
info), through its whole lifecycle: attach, atomic replace, status, detach, gc, apply, and SIGKILL."""

import json
import subprocess

import pytest
from lib.cli import OFFLOAD, offload_json
from lib.helpers import PIN_ROOT, RUN_ROOT, need_tool
from lib.kernel import kernel_xdp

from offload.kernel import xdplink

pytestmark = pytest.mark.root

RECORDS = RUN_ROOT / "attachments"


def pinned_link(ns: str, dev: str) -> xdplink.XdpLink | None:
    return xdplink.pinned(str(PIN_ROOT / ns / dev / "link"))


def netlink_clear(ns: str, dev: str, mode: str) -> subprocess.CompletedProcess:
    """What any other tool's detach is: RTM_SETLINK without a program, in `mode`."""
    return subprocess.run(["ip", "-n", ns, "link", "set", "dev", dev, {"native": "xdpdrv", "generic": "xdpgeneric"}[mode],
                           "off"], capture_output=True, text=True)


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_link_lifecycle(env, mode):
    res = env.offload_json("attach", env.ifname, "count_drop", "--mode", mode, "--via", "link")
    assert res["via"] == "link" and res["mode"] == mode
    assert kernel_xdp(env.ifname, env.netns) == {mode: res["prog_id"]}
    link = pinned_link(env.netns, env.ifname)
    assert link is not None and link.id == res["link_id"] and link.prog_id == res["prog_id"]
    meta = json.loads((RECORDS / env.netns / f"{env.ifname}.json").read_text())
    assert meta["via"] == "link" and meta["link_id"] == link.id
    # held by the link: netlink cannot take it off (the kernel's EBUSY), so it stays
    off = netlink_clear(env.netns, env.ifname, mode)
    assert off.returncode != 0 and "BPF XDP link" in off.stderr
    (row,) = env.offload_json("status")["attachments"]
    assert row["via"] == "link" and row["ours"] is True and row["prog_id"] == res["prog_id"]

    # replace: the same link, updated atomically to the new program
    new = env.offload_json("attach", env.ifname, "count_pass", "--mode", mode, "--via", "link")
    assert new["replaced"] == res["prog_id"] and new["link_id"] == res["link_id"]
    assert kernel_xdp(env.ifname, env.netns) == {mode: new["prog_id"]}
    assert pinned_link(env.netns, env.ifname).prog_id == new["prog_id"]
    assert not list((PIN_ROOT / env.netns).glob("*%new")), "staging left"

    out = env.offload_json("detach", env.ifname)
    assert out["via"] == "link" and out["detached"] == {"mode": mode, "prog_id": new["prog_id"]}
    assert kernel_xdp(env.ifname, env.netns) == {}
    assert link.id not in {k.id for k in xdplink.all_links()}, "the link outlived its pin"
    assert not (PIN_ROOT / env.netns).exists() and not (RECORDS / env.netns).exists()


def test_netlink_and_link_do_not_replace_each_other(env):
    """The kernel puts neither over the other: offload says so before loading anything, and
    what is attached stays."""
    first = env.offload_json("attach", env.ifname, "count_drop")
    res = env.offload("attach", env.ifname, "count_pass", "--via", "link", check=False)
    assert res.returncode != 0 and "attached by netlink" in res.stderr and f"offload detach {env.ifname}" in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {"native": first["prog_id"]}
    env.offload_json("detach", env.ifname)
    linked = env.offload_json("attach", env.ifname, "count_drop", "--via", "link")
    res = env.offload("attach", env.ifname, "count_pass", check=False)
    assert res.returncode != 0 and "held by a bpf_link" in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {"native": linked["prog_id"]}
    env.offload_json("detach", env.ifname)


def test_a_link_that_is_not_offloads_is_never_touched(env, tmp_path):
    """Another tool's link: status says via link, attach refuses it as foreign, detach finds
    nothing of offload's, and the link still holds its program after all of them."""
    bpftool = need_tool("bpftool")
    from offload.kernel import bpfsys, netns
    from offload.load import loader, programs

    with netns.inside(env.netns):
        import socket

        ld = loader.load(programs.resolve("count_pass"))
        fd = xdplink.create(ld.fd, socket.if_nametoindex(env.ifname), "generic")
    try:
        pid = bpfsys.obj_info_id(ld.fd)
        (row,) = env.offload_json("status")["attachments"]
        assert row["via"] == "link" and row["ours"] is False and row["prog_id"] == pid
        assert env.offload("attach", env.ifname, "count_drop", "--via", "link", check=False).returncode != 0
        assert env.offload("detach", env.ifname, check=False).returncode != 0
        assert kernel_xdp(env.ifname, env.netns) == {"generic": pid}
        assert subprocess.run([bpftool, "link", "show", "id", str(xdplink.info(fd).id)],
                              capture_output=True).returncode == 0
    finally:
        import os

        os.close(fd)
        ld.close()
    assert kernel_xdp(env.ifname, env.netns) == {}


def test_gc_frees_the_pins_of_a_link_whose_device_is_gone(env):
    lab = env.make_lab(pairs=1)
    dev = lab.pairs[0].a
    res = offload_json("attach", dev, "count_drop", "--via", "link", "--netns", lab.netns)
    subprocess.run(["ip", "-n", lab.netns, "link", "del", dev], check=True)
    link = pinned_link(lab.netns, dev)
    assert link is not None and link.defunct and link.id == res["link_id"]
    freed = offload_json("gc")["freed"]
    assert {"netns": lab.netns, "interface": dev} in [{k: f[k] for k in ("netns", "interface")} for f in freed]
    assert not (PIN_ROOT / lab.netns / dev).exists()
    assert res["link_id"] not in {k.id for k in xdplink.all_links()}


def test_apply_via_link_replace_and_detach(env, tmp_path):
    lab = env.make_lab(pairs=3)
    devs = [p.a for p in lab.pairs]
    pol = tmp_path / "p.yaml"

    def policy(prog: str) -> str:
        pol.write_text(f"rules:\n  - name: edge\n    match: {{interfaces: ['{lab.name}-a*']}}\n"
                       f"    program: {prog}\n    via: link\n")
        return str(pol)

    first = offload_json("apply", "-f", policy("count_drop"), "--netns", lab.netns)
    assert first["outcome"] == "ok"
    links = {d: pinned_link(lab.netns, d) for d in devs}
    assert all(link and kernel_xdp(d, lab.netns) == {"native": link.prog_id} for d, link in links.items())
    st = offload_json("status", "--netns", lab.netns)["attachments"]
    assert {r["interface"]: r["via"] for r in st} == dict.fromkeys(devs, "link")
    assert offload_json("plan", "-f", str(pol), "--netns", lab.netns)["plan"][0]["action"] == "keep"

    again = offload_json("apply", "-f", policy("count_pass"), "--netns", lab.netns)
    assert again["outcome"] == "ok"
    for d in devs:   # the same links, each updated to the new program
        now = pinned_link(lab.netns, d)
        assert now.id == links[d].id and now.prog_id != links[d].prog_id
        assert kernel_xdp(d, lab.netns) == {"native": now.prog_id}

    # the rule back to netlink: each link taken off, the program attached by netlink
    pol.write_text(f"rules:\n  - name: edge\n    match: {{interfaces: ['{lab.name}-a*']}}\n    program: count_pass\n")
    back = offload_json("apply", "-f", str(pol), "--netns", lab.netns)
    assert back["outcome"] == "ok"
    assert {r["interface"]: r["via"] for r in offload_json("status", "--netns", lab.netns)["attachments"]} == \
        dict.fromkeys(devs, "netlink")
    for d in devs:
        env.offload_json("detach", d, netns=lab.netns)
    assert not (PIN_ROOT / lab.netns).exists()


def test_a_chain_rule_via_link_is_refused_with_the_reason(tmp_path):
    pol = tmp_path / "p.yaml"
    pol.write_text("rules:\n  - name: edge\n    match: {interfaces: ['x*']}\n    via: link\n"
                   "    programs:\n      - {program: count_pass, priority: 10}\n")
    res = subprocess.run([OFFLOAD, "plan", "-f", str(pol)], capture_output=True, text=True)
    assert res.returncode != 0 and "edge" in res.stderr and "libxdp" in res.stderr and "netlink" in res.stderr


def test_sigkill_at_every_bpf_call_of_a_link_attach(env):
    """attach --via link killed at its 1st, 2nd, ... bpf() call: a link not yet pinned dies with
    the process (nothing attached), one pinned is offload's; after one gc the kernel, the pins
    and the record agree, and a detach leaves nothing."""
    strace = need_tool("strace")
    for n in range(1, 200):
        res = subprocess.run([strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=bpf", "-e",
                              f"inject=bpf:signal=SIGKILL:when={n}", OFFLOAD, "attach", env.ifname, "count_drop",
                              "--via", "link", "--netns", env.netns], capture_output=True, text=True, timeout=120)
        offload_json("gc")
        attached = kernel_xdp(env.ifname, env.netns)
        link = pinned_link(env.netns, env.ifname)
        if attached:   # then offload's, held by its pinned link, and recorded
            assert link is not None and link.prog_id == attached["native"], f"killed at bpf #{n}: {attached}"
            meta = json.loads((RECORDS / env.netns / f"{env.ifname}.json").read_text())
            assert meta["prog_id"] == link.prog_id and meta["via"] == "link"
            env.offload_json("detach", env.ifname)
        else:
            assert link is None and not (PIN_ROOT / env.netns).exists(), f"killed at bpf #{n}: pins left"
        assert kernel_xdp(env.ifname, env.netns) == {}
        if res.returncode == 0:
            break   # ran to its end without meeting the n-th call: every point was tried
    assert n > 5, "the injection did not take"


def test_an_attach_over_a_killed_runs_staged_link_updates_that_link(env):
    """attach --via link killed after it pinned its link in the stage, before the commit: with no
    gc between, the next attach --via link finds offload's staged link holding the program and
    updates it in place (a new link over it would be the kernel's EBUSY)."""
    strace = need_tool("strace")
    staged = None
    for n in range(1, 200):
        res = subprocess.run([strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=bpf", "-e",
                              f"inject=bpf:signal=SIGKILL:when={n}", OFFLOAD, "attach", env.ifname, "count_drop",
                              "--via", "link", "--netns", env.netns], capture_output=True, text=True, timeout=120)
        staged = pinned_link(env.netns, env.ifname + "%new")
        if staged is not None and kernel_xdp(env.ifname, env.netns):
            break   # killed with the link pinned in the stage: the case
        offload_json("gc")
        if kernel_xdp(env.ifname, env.netns):
            env.offload_json("detach", env.ifname)
        assert res.returncode != 0, "ran to its end without a kill between staging and commit"
    assert staged is not None and kernel_xdp(env.ifname, env.netns) == {"native": staged.prog_id}
    new = env.offload_json("attach", env.ifname, "count_pass", "--via", "link")
    assert new["link_id"] == staged.id and new["replaced"] == staged.prog_id
    assert kernel_xdp(env.ifname, env.netns) == {"native": new["prog_id"]}
    assert not list((PIN_ROOT / env.netns).glob("*%new")), "staging left"
    env.offload_json("detach", env.ifname)
    assert kernel_xdp(env.ifname, env.netns) == {}


def test_watch_links_hotplugged_veths_and_takes_them_off_on_exit(env, tmp_path):
    """watch under a `via: link` rule: its start's apply and a hot-plugged veth each get a pinned
    link; a deleted veth's defunct link is unpinned; --detach-on-exit takes the links off."""
    import signal
    import time

    lab = env.make_lab(pairs=2)
    a0, a1, hot = f"{lab.name}-a0", f"{lab.name}-a1", f"{lab.name}-a7"
    pol = tmp_path / "p.yaml"
    pol.write_text(f"rules:\n  - name: pods\n    match: {{interfaces: ['{lab.name}-a*']}}\n    program: count_drop\n"
                   "    via: link\n")

    def until(what, timeout: float = 120) -> bool:
        deadline = time.time() + timeout
        while not what() and time.time() < deadline:
            time.sleep(0.1)
        return what()

    proc = subprocess.Popen([OFFLOAD, "watch", "-f", str(pol), "--interval", "3600", "--detach-on-exit",
                             "--netns", lab.netns], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert until(lambda: pinned_link(lab.netns, a0) and pinned_link(lab.netns, a1)), "no links after the start"
        env.cmd("ip", "link", "add", hot, "type", "veth", "peer", "name", f"{lab.name}-x7", netns=lab.netns)
        assert until(lambda: pinned_link(lab.netns, hot) is not None), "the hot-plugged veth got no link"
        link = pinned_link(lab.netns, hot)
        assert kernel_xdp(hot, lab.netns) == {"native": link.prog_id}
        env.cmd("ip", "link", "del", a1, netns=lab.netns)
        assert until(lambda: not (PIN_ROOT / lab.netns / a1).exists()), "the gone veth's link pin stayed"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert kernel_xdp(a0, lab.netns) == {} and kernel_xdp(hot, lab.netns) == {}, out
    assert not (PIN_ROOT / lab.netns).exists()


def test_a_failed_apply_puts_the_links_programs_back(env, tmp_path):
    """A run that fails on its third interface, after it took the first's link off and updated
    the second's: both programs come back, each held by a pinned link again."""
    from lib.helpers import write_bcc_crasher
    from lib.kernel import xdp_ids

    lab = env.make_lab(pairs=3)
    a0, a1, a2 = (f"{lab.name}-a{i}" for i in range(3))

    def rules(*rs: tuple[str, str, str]) -> str:
        return "rules:\n" + "".join(f"  - name: {n}\n    match: {{interfaces: [\"{i}\"]}}\n    program: {p}\n"
                                    "    via: link\n" for n, i, p in rs)

    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(rules(("r0", a0, "count_pass"), ("r1", a1, "count_pass")))
    second.write_text(rules(("r1", a1, "count_drop"), ("r2", a2, str(write_bcc_crasher(tmp_path / "crash.c")))))
    assert offload_json("apply", "-f", str(first), "--netns", lab.netns)["outcome"] == "ok"
    before = xdp_ids(lab.netns)
    res = subprocess.run([OFFLOAD, "apply", "-f", str(second), "--netns", lab.netns, "--json"], capture_output=True,
                         text=True, timeout=300)
    doc = json.loads(res.stdout)
    assert res.returncode == 1 and doc["outcome"] == "failed" and sorted(doc["rolled_back"]) == [a0, a1]
    assert xdp_ids(lab.netns) == before
    for d in (a0, a1):
        link = pinned_link(lab.netns, d)
        assert link is not None and link.prog_id == before[d], d
    assert {r["interface"]: r["via"] for r in offload_json("status", "--netns", lab.netns)["attachments"]} == \
        {a0: "link", a1: "link"}


def test_a_link_goes_in_where_the_caller_lets_a_netlink_program_go_and_puts_it_back_on_failure(
        env, xdp_pass_obj, monkeypatch):
    """attach's GAP, what load.chain.make_way does to libxdp's dispatcher through a link (the VM
    lane runs that whole path): the netlink-held program comes off first (the kernel puts no link
    in its place) and the link goes in; a refused link or a failure after it puts that program
    back. Without being let go, it is refused as before."""
    import errno

    from offload.errors import NoModeError, RefusedError
    from offload.kernel import netns
    from offload.load import attach as attach_mod

    env.cmd("ip", "link", "set", "dev", env.ifname, "xdpdrv", "obj", str(xdp_pass_obj), "sec", "xdp")
    theirs = kernel_xdp(env.ifname, env.netns)["native"]

    def attach(**kw) -> attach_mod.Result:
        with netns.inside(env.netns):
            return attach_mod.attach(env.ifname, "count_drop", mode="native", via="link", force=True, **kw)

    def fail(*args, **kwargs):
        raise RuntimeError("injected")

    def refuse(*args, **kwargs):
        raise xdplink.LinkRefusal(errno.EINVAL, "BPF_LINK_CREATE")

    with pytest.raises(RefusedError, match="attached by netlink"):
        attach()
    # why not atomically: the kernel itself puts no link in a netlink program's place
    import socket
    from contextlib import closing

    from offload.load import loader, programs

    with netns.inside(env.netns), closing(loader.load(programs.resolve("count_pass"))) as ld:
        with pytest.raises(xdplink.LinkRefusal) as e:
            xdplink.create(ld.fd, socket.if_nametoindex(env.ifname), "native")
    assert e.value.code == errno.EBUSY and kernel_xdp(env.ifname, env.netns) == {"native": theirs}
    for patch, raised in ((("_confirm", attach_mod, fail), RuntimeError), (("create", xdplink, refuse), NoModeError)):
        name, where, how = patch
        with monkeypatch.context() as m:
            m.setattr(where, name, how)
            with pytest.raises(raised):
                attach(displace=theirs)
        assert kernel_xdp(env.ifname, env.netns) == {"native": theirs}, name
        assert not any((PIN_ROOT / env.netns).glob("*")), f"{name}: pins left"

    res = attach(displace=theirs)
    assert (res.via, res.replaced, res.mode) == ("link", theirs, "native") and "came off native" in res.warnings[-1]
    assert kernel_xdp(env.ifname, env.netns) == {"native": res.prog_id}
    assert pinned_link(env.netns, env.ifname).prog_id == res.prog_id
    assert env.offload_json("detach", env.ifname)["via"] == "link"
    assert kernel_xdp(env.ifname, env.netns) == {}
