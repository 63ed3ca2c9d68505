"""attach / detach / status / stats / filter on real veth labs, checked against the kernel's own
view (`ip -d -j link`, bpffs) rather than offload's."""

import json
import os
import socket
import threading

import pytest
from lib.cli import OFFLOAD
from lib.helpers import PIN_ROOT, write_bcc_crasher
from lib.helpers import RUN_ROOT as _RUN
from lib.kernel import kernel_xdp

from offload.bench.frames import ipv4_udp
from offload.kernel import netns as netns_mod

pytestmark = pytest.mark.root

RUN_ROOT = _RUN / "attachments"


def no_debris(env) -> None:
    assert not (PIN_ROOT / env.netns).exists(), "pins left behind"
    assert not (RUN_ROOT / env.netns).exists(), "metadata left behind"


def send_frames(env, dev: str, frames: list[bytes]) -> None:
    with netns_mod.inside(env.netns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with s:
        s.bind((dev, 0))
        for f in frames:
            s.send(f)


@pytest.mark.kernels
@pytest.mark.parametrize("mode", ["native", "generic"])
def test_attach_mode_read_back_from_the_kernel(env, mode):
    res = env.offload_json("attach", env.ifname, "count_drop", "--mode", mode)
    assert res["interface"] == env.ifname and res["mode"] == mode and res["program"] == "count_drop"
    assert res["fallbacks"] == []
    assert kernel_xdp(env.ifname, env.netns) == {mode: res["prog_id"]}
    st = env.offload_json("status")
    (row,) = [r for r in st["attachments"] if r["interface"] == env.ifname]
    assert row == {**row, "mode": mode, "prog_id": res["prog_id"], "ours": True, "program": "count_drop",
                   "name": "count_drop"}
    assert (PIN_ROOT / env.netns / env.ifname / "prog").exists()
    meta = json.loads((RUN_ROOT / env.netns / f"{env.ifname}.json").read_text())
    assert meta["mode"] == mode and meta["prog_id"] == res["prog_id"] and len(meta["sha256"]) == 64
    out = env.offload_json("detach", env.ifname)
    assert out["detached"] == {"mode": mode, "prog_id": res["prog_id"]}
    assert kernel_xdp(env.ifname, env.netns) == {}
    no_debris(env)


@pytest.mark.kernels
@pytest.mark.parametrize("mode", ["native", "generic"])
def test_traffic_is_counted_exactly(env, mode):
    if env.kind != "veth":
        pytest.skip("needs a veth lab: exact counts need an idle receiver")
    env.offload_json("attach", env.ifname, "count_drop", "--mode", mode)
    frames = [ipv4_udp("198.51.100.1", "198.51.100.2") for _ in range(100)]
    send_frames(env, env.peer, frames)
    st = env.offload_json("stats", env.ifname)
    assert st["packets"]["drop"] == 100 and st["bytes"]["drop"] == 100 * len(frames[0])
    assert sum(st["packets"].values()) == 100


def test_auto_on_veth_lands_native_and_says_why_not_hw(env):
    res = env.offload_json("attach", env.ifname, "count_drop")
    assert res["mode"] == "native"
    (fb,) = res["fallbacks"]
    assert fb["mode"] == "hw" and "hw-offload" in fb["reason"]


def test_explicit_hw_on_veth_is_refused_cleanly(env):
    res = env.offload("attach", env.ifname, "count_drop", "--mode", "hw", check=False)
    assert res.returncode == 8, res.stderr
    assert "hw:" in res.stderr and "Traceback" not in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}
    no_debris(env)


@pytest.mark.kernels
def test_mtu_9000_falls_back_to_generic_in_the_kernels_words(env):
    lab = env.make_lab(pairs=1, mtus=[9000])
    dev = lab.pairs[0].a
    res = env.offload_json("attach", dev, "count_drop", netns=lab.netns)
    assert res["mode"] == "generic"
    native = [f for f in res["fallbacks"] if f["mode"] == "native"]
    assert native and "Peer MTU is too large to set XDP" in native[0]["reason"]
    assert kernel_xdp(dev, lab.netns) == {"generic": res["prog_id"]}
    env.offload("detach", dev, netns=lab.netns, check=True)


@pytest.mark.kernels
def test_floor_not_met_leaves_nothing(env):
    lab = env.make_lab(pairs=1, mtus=[9000])
    dev = lab.pairs[0].a
    res = env.offload("attach", dev, "count_drop", "--min-mode", "native", netns=lab.netns, check=False)
    assert res.returncode == 8
    assert "Peer MTU is too large to set XDP" in res.stderr and "hw:" in res.stderr
    assert kernel_xdp(dev, lab.netns) == {}
    assert not (PIN_ROOT / lab.netns).exists()


def test_replace_is_atomic(env):
    first = env.offload_json("attach", env.ifname, "count_drop", "--mode", "native")
    seen, pinned, stop = [], [], threading.Event()
    pin = PIN_ROOT / env.netns / env.ifname / "prog"

    def watch():
        from pyroute2 import IPRoute
        with netns_mod.inside(env.netns):
            ipr = IPRoute()
        with ipr:
            idx = ipr.link_lookup(ifname=env.ifname)[0]
            while not stop.is_set():
                (msg,) = ipr.get_links(idx)
                xdp = msg.get_attr("IFLA_XDP")
                seen.append(xdp.get_attr("IFLA_XDP_DRV_PROG_ID") if xdp else None)
                pinned.append(pin.exists())

    t = threading.Thread(target=watch)
    t.start()
    ids = [first["prog_id"]]
    try:
        # replaced again and again until the reader has looked often enough: a busy machine gives it
        # fewer looks per replace, never a reason to look less
        for i in range(40):
            res = env.offload_json("attach", env.ifname, ("count_pass", "count_drop")[i % 2], "--mode", "native")
            assert res["replaced"] == ids[-1] and res["prog_id"] != ids[-1]
            ids.append(res["prog_id"])
            if len(seen) > 10:
                break
    finally:
        stop.set()
        t.join()
    assert kernel_xdp(env.ifname, env.netns) == {"native": ids[-1]}
    assert len(seen) > 10 and None not in seen, "the interface was observed without a program"
    assert set(seen) <= set(ids)
    assert all(pinned), "a reader found no pinned program while the pins were swapped"


def _fail(*args, **kwargs):
    raise RuntimeError("injected")


def _attach_in_process(env, program: str):
    from offload.kernel import netns as ns
    from offload.load import attach as attach_mod

    with ns.inside(env.netns):
        return attach_mod.attach(env.ifname, program, mode="native")


@pytest.mark.parametrize("step", ["_confirm", "commit"])
def test_a_failure_after_the_swap_puts_the_previous_program_back(env, monkeypatch, step):
    from offload.load import attach as attach_mod
    from offload.load import pins

    first = env.offload_json("attach", env.ifname, "count_drop", "--mode", "native")
    meta = (RUN_ROOT / env.netns / f"{env.ifname}.json").read_text()
    monkeypatch.setattr(*((attach_mod, "_confirm") if step == "_confirm" else (pins.Slot, "commit")), _fail)
    with pytest.raises(RuntimeError, match="injected"):
        _attach_in_process(env, "count_pass")
    assert kernel_xdp(env.ifname, env.netns) == {"native": first["prog_id"]}
    assert (RUN_ROOT / env.netns / f"{env.ifname}.json").read_text() == meta   # the record, untouched
    assert sorted(p.name for p in (PIN_ROOT / env.netns).iterdir()) == [env.ifname]   # no stage left
    (row,) = env.offload_json("status")["attachments"]
    assert row["ours"] is True and row["prog_id"] == first["prog_id"] and row["program"] == "count_drop"


def test_a_failure_after_a_first_swap_leaves_nothing(env, monkeypatch):
    from offload.load import attach as attach_mod

    monkeypatch.setattr(attach_mod, "_confirm", _fail)
    with pytest.raises(RuntimeError, match="injected"):
        _attach_in_process(env, "count_drop")
    assert kernel_xdp(env.ifname, env.netns) == {}
    no_debris(env)


def test_a_failed_put_back_keeps_the_attached_program_pinned(env, monkeypatch):
    """When even the undo fails, the program left attached keeps its staged pins: still offload's,
    never an unpinned stranger (gc finishes the attach)."""
    from offload.load import attach as attach_mod
    from offload.load import gc

    monkeypatch.setattr(attach_mod, "_confirm", _fail)
    monkeypatch.setattr(attach_mod, "_put_back", _fail)
    with pytest.raises(RuntimeError, match="injected"):
        _attach_in_process(env, "count_drop")
    (row,) = env.offload_json("status")["attachments"]
    assert row["ours"] is True and kernel_xdp(env.ifname, env.netns) == {"native": row["prog_id"]}
    assert [r["interface"] for r in gc.collect(only=env.netns)["recovered"]] == [env.ifname]
    env.offload_json("detach", env.ifname)
    assert kernel_xdp(env.ifname, env.netns) == {}
    no_debris(env)


def test_foreign_program_is_left_alone_unless_forced(env, xdp_pass_obj):
    env.cmd("ip", "link", "set", "dev", env.ifname, "xdpdrv", "obj", str(xdp_pass_obj), "sec", "xdp")
    theirs = kernel_xdp(env.ifname, env.netns)["native"]
    res = env.offload("attach", env.ifname, "count_drop", check=False)
    assert res.returncode == 9 and "did not attach" in res.stderr and str(theirs) in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {"native": theirs}
    st = env.offload_json("status")
    (row,) = [r for r in st["attachments"] if r["interface"] == env.ifname]
    assert row["ours"] is False and row["name"] == "xdp_pass"
    forced = env.offload_json("attach", env.ifname, "count_drop", "--force")
    assert forced["replaced"] == theirs and kernel_xdp(env.ifname, env.netns) == {"native": forced["prog_id"]}


def test_default_route_guard(env):
    if env.kind != "veth":
        pytest.skip("needs a veth lab: the test adds a default route")
    env.cmd("ip", "addr", "add", "192.0.2.1/24", "dev", env.ifname)
    env.cmd("ip", "route", "add", "default", "via", "192.0.2.254", "dev", env.ifname)
    res = env.offload("attach", env.ifname, "count_drop", check=False)
    assert res.returncode == 9 and "default route" in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}
    res = env.offload("attach", env.ifname, "count_drop", "--priority", "5", check=False)   # into a chain too
    assert res.returncode == 9 and "default route" in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}
    res = env.offload("attach", env.ifname, "count_drop", "--force", check=False)
    assert res.returncode == 0 and "warning" in res.stderr and "default route" in res.stderr


def test_filter_edits_in_place_and_drops_blocked_sources(env):
    res = env.offload_json("attach", env.ifname, "filter", "--param", "prefixes=192.0.2.0/24")
    assert env.offload_json("filter", "list", env.ifname)["prefixes"] == ["192.0.2.0/24"]
    assert env.offload_json("filter", "add", env.ifname, "198.51.100.0/24", "2001:db8::/32")["added"] == [
        "198.51.100.0/24", "2001:db8::/32"]
    assert env.offload_json("filter", "del", env.ifname, "192.0.2.0/24")["removed"] == ["192.0.2.0/24"]
    before = env.offload_json("filter", "list", env.ifname)["prefixes"]
    bad = env.offload("filter", "add", env.ifname, "203.0.113.0/24", "not-a-prefix", check=False)
    assert bad.returncode == 2 and "not-a-prefix" in bad.stderr
    assert env.offload_json("filter", "list", env.ifname)["prefixes"] == before   # nothing half-applied
    if env.kind == "veth":
        send_frames(env, env.peer, [ipv4_udp("198.51.100.9", "203.0.113.1")] * 7
                    + [ipv4_udp("192.0.2.9", "203.0.113.1")] * 5)
        st = env.offload_json("stats", env.ifname)
        assert st["packets"]["drop"] == 7 and st["packets"]["pass"] == 5
    assert res["prog_id"] == env.offload_json("status")["attachments"][0]["prog_id"]  # edited, not reloaded


def test_detach_without_ours(env):
    res = env.offload("detach", env.ifname, check=False)
    assert res.returncode == 10 and "no program of offload's" in res.stderr


@pytest.mark.parametrize("args,code,needle", [
    (["attach", "nosuch0", "count_drop"], 2, "nosuch0"),
    (["attach", "{dev}", "no_such_program"], 2, "program not found"),
    (["attach", "{dev}", "redirect"], 2, "--param target"),
    (["attach", "{dev}", "count_drop", "--param", "x=1"], 2, "takes no parameter x"),
    (["attach", "{dev}", "count_drop", "--mode", "generic", "--min-mode", "native"], 2, "below --min-mode"),
    (["stats", "{dev}"], 10, "no program of offload's"),
    (["filter", "list", "{dev}"], 10, "no `filter` program"),
])
def test_bad_input(env, args, code, needle):
    res = env.offload(*[a.replace("{dev}", env.ifname) for a in args], check=False)
    assert res.returncode == code, (res.returncode, res.stderr)
    assert needle in res.stderr and "Traceback" not in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}


def test_user_c_that_does_not_compile(env, tmp_path):
    src = tmp_path / "bad.c"
    src.write_text("int xdp_prog(struct xdp_md *ctx)\n{\n  return nope;\n}\n")
    res = env.offload("attach", env.ifname, str(src), check=False)
    assert res.returncode == 5 and f"{src}:3:" in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}
    no_debris(env)


def test_verifier_rejection(env, tmp_path):
    src = tmp_path / "oob.c"
    src.write_text("int xdp_prog(struct xdp_md *ctx) {\n  unsigned char *p = (void *)(long)ctx->data;\n"
                   "  return p[100] ? XDP_DROP : XDP_PASS;\n}\n")
    res = env.offload("attach", env.ifname, str(src), check=False)
    assert res.returncode == 6 and "invalid access to packet" in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}
    no_debris(env)


# bcc-dialect C keeping offload's counters: `offload stats` reads them like a library program's
BCC_COUNTER = """\
struct counter { u64 packets; u64 bytes; };
BPF_PERCPU_ARRAY(xdp_stats, struct counter, 5);

int xdp_prog(struct xdp_md *ctx) {
  int action = VERDICT;
  struct counter *c = xdp_stats.lookup(&action);
  if (c) {
    c->packets++;
    c->bytes += ctx->data_end - ctx->data;
  }
  return action;
}
"""


@pytest.mark.kernels
def test_bcc_program_attaches_counts_and_detaches(env, tmp_path):
    if env.kind != "veth":
        pytest.skip("needs a veth lab: exact counts need an idle receiver")
    src = tmp_path / "counter.c"
    src.write_text(BCC_COUNTER)
    res = env.offload_json("attach", env.ifname, str(src), "--mode", "native", "--param", "VERDICT=XDP_DROP")
    assert kernel_xdp(env.ifname, env.netns) == {"native": res["prog_id"]}
    meta = json.loads((RUN_ROOT / env.netns / f"{env.ifname}.json").read_text())
    assert meta["kind"] == "bcc" and meta["maps"] == ["xdp_stats"] and meta["prog_id"] == res["prog_id"]
    frames = [ipv4_udp("198.51.100.1", "198.51.100.2") for _ in range(100)]
    send_frames(env, env.peer, frames)
    st = env.offload_json("stats", env.ifname)    # through the pinned map bcc's child made
    assert st["packets"]["drop"] == 100 and st["bytes"]["drop"] == 100 * len(frames[0])
    assert sum(st["packets"].values()) == 100
    out = env.offload_json("detach", env.ifname)
    assert out["detached"] == {"mode": "native", "prog_id": res["prog_id"]}
    assert kernel_xdp(env.ifname, env.netns) == {}
    no_debris(env)


def test_c_that_crashes_bcc_exits_2_naming_file_and_signal(env, tmp_path):
    src = write_bcc_crasher(tmp_path / "crash.c")
    env.offload("attach", env.ifname, "count_pass")
    before = kernel_xdp(env.ifname, env.netns)
    res = env.offload("attach", env.ifname, str(src), check=False)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert f"bcc crashed (SIGSEGV) while compiling {src}: the program's C is what bcc could not handle" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr) < 2000
    assert kernel_xdp(env.ifname, env.netns) == before              # the program it would replace stays
    (row,) = [r for r in env.offload_json("status")["attachments"] if r["interface"] == env.ifname]
    assert row["program"] == "count_pass" and row["ours"]
    env.offload("detach", env.ifname)
    res = env.offload("attach", env.ifname, str(src), check=False)
    assert res.returncode == 2 and kernel_xdp(env.ifname, env.netns) == {}
    no_debris(env)


def test_no_privileges(env):
    res = env.offload("attach", "lo", "count_drop", netns=None, user="65534", check=False)
    assert res.returncode == 3 and "CAP_NET_ADMIN" in res.stderr


def test_bpffs_missing(env, tmp_path):
    res = env.offload("attach", env.ifname, "count_drop", extra_env={"OFFLOAD_BPFFS": str(tmp_path)}, check=False)
    assert res.returncode == 4 and "bpffs is not mounted" in res.stderr and "mount -t bpf" in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}


def test_ip_netns_exec_is_told_to_use_netns_option(env):
    res = env.cmd(OFFLOAD, "attach", env.ifname, "count_drop", check=False)
    assert res.returncode == 4 and "--netns" in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}
    assert os.path.exists("/sys/fs/bpf")
