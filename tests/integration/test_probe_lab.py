"""The prober on a real veth lab, compared with independent ground truth: iproute2's JSON,
ethtool -i / -k, a raw netlink dump of the netdev family, and the kernel's own refusal."""

import json
import socket
import struct

import pytest
from lib.cli import OFFLOAD
from lib.env import NetEnv
from lib.helpers import need_tool

pytestmark = pytest.mark.root


ETHTOOL_LEGACY = {
    "rx-checksum": "rx-checksumming", "rx-gro": "generic-receive-offload", "rx-vlan-hw-parse": "rx-vlan-offload",
    "tx-vlan-hw-insert": "tx-vlan-offload", "rx-ntuple-filter": "ntuple-filters", "rx-hashing": "receive-hashing",
}


def probe_json(env: NetEnv, *names: str, netns=None) -> dict:
    return env.offload_json("probe", *names, netns=env.netns if netns is None else netns)


def by_name(report: dict) -> dict:
    return {i["name"]: i for i in report["interfaces"]}


def raw_netdev_dump() -> dict[int, int]:
    """ifindex -> xdp-features mask, read with a bare netlink socket (no pyroute2)."""
    ctrl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)  # NETLINK_GENERIC
    name = b"netdev\0"
    attr = struct.pack("=HH", 4 + len(name), 2) + name + b"\0" * (-len(name) % 4)  # CTRL_ATTR_FAMILY_NAME
    ctrl.send(struct.pack("=IHHII", 20 + len(attr), 0x10, 1, 1, 0) + struct.pack("=BBH", 3, 1, 0) + attr)
    data = ctrl.recv(65536)
    fam = None
    off = 20
    while off < len(data):
        ln, typ = struct.unpack_from("=HH", data, off)
        if typ == 1:  # CTRL_ATTR_FAMILY_ID
            fam = struct.unpack_from("=H", data, off + 4)[0]
        off += (ln + 3) & ~3
    ctrl.close()
    assert fam, "netdev family not found"
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)
    s.send(struct.pack("=IHHII", 20, fam, 0x301, 1, 0) + struct.pack("=BBH", 1, 1, 0))
    out: dict[int, int] = {}
    while True:
        data = s.recv(65536)
        off = 0
        while off < len(data):
            ln, typ = struct.unpack_from("=IH", data, off)
            if typ == 3:  # NLMSG_DONE
                s.close()
                return out
            a, ifindex, mask = off + 20, None, 0
            while a < off + ln:
                alen, atyp = struct.unpack_from("=HH", data, a)
                if atyp == 1:
                    ifindex = struct.unpack_from("=I", data, a + 4)[0]
                elif atyp == 3:
                    mask = struct.unpack_from("=Q", data, a + 4)[0]
                a += (alen + 3) & ~3
            out[ifindex] = mask
            off += (ln + 3) & ~3


@pytest.mark.kernels
def test_probe_matches_iproute2(env):
    report = by_name(probe_json(env))
    truth = {d["ifname"]: d for d in env.json_cmd("ip", "-d", "-j", "link", "show")}
    assert set(report) == set(truth)
    for name, t in truth.items():
        r = report[name]
        assert r["ifindex"] == t["ifindex"]
        assert r["mtu"] == t["mtu"]
        assert r["min_mtu"] == t.get("min_mtu") and r["max_mtu"] == t.get("max_mtu")
        assert r["state"]["oper_state"] == t["operstate"]
        assert r["state"]["admin_up"] == ("UP" in t["flags"])
        assert r["queues"] == {"rx": t["num_rx_queues"], "tx": t["num_tx_queues"]}
        kind = t.get("linkinfo", {}).get("info_kind")
        if kind:
            assert r["kind"] == kind
        assert r["xdp"]["attached"] == []
    if env.kind == "veth":
        a = report[env.ifname]
        assert a["kind"] == "veth" and a["peer"]["name"] == env.peer and a["peer"]["mtu"] == report[env.peer]["mtu"]


@pytest.mark.kernels
def test_probe_matches_ethtool(env):
    need_tool("ethtool")
    report = by_name(probe_json(env, env.ifname))
    r = report[env.ifname]
    info = dict(line.split(": ", 1) for line in env.cmd("ethtool", "-i", env.ifname).stdout.splitlines()
                if ": " in line)
    assert r["driver"] == info["driver"]
    assert (r["driver_version"] or "") == info.get("version", "")
    assert (r["firmware_version"] or "") == info.get("firmware-version", "")
    if info.get("bus-info"):
        assert r["bus_info"] == info["bus-info"]
    feats = {}
    for line in env.cmd("ethtool", "-k", env.ifname).stdout.splitlines()[1:]:
        name, _, rest = line.strip().partition(": ")
        feats[name] = rest
    for kernel_name, legacy in ETHTOOL_LEGACY.items():  # ethtool -k prints older names for these
        if legacy in feats:
            feats[kernel_name] = feats[legacy]
    assert r["features"], "no relevant feature reported"
    for name, state in r["features"].items():
        assert feats[name].startswith("on" if state["active"] else "off"), name
        assert state["fixed"] == ("[fixed]" in feats[name]), name
    # and the python `ethtool` module, a third implementation of GDRVINFO
    ethtool = pytest.importorskip("ethtool")
    from offload.kernel import netns
    with netns.inside(env.netns):
        assert ethtool.get_module(env.ifname) == r["driver"]


def test_probe_matches_raw_netdev_dump(env):
    from offload.kernel import netns
    with netns.inside(env.netns):
        masks = raw_netdev_dump()
    from offload.kernel.genl import xdp_feature_names
    report = probe_json(env)
    assert report["host"]["netdev_family"] is True
    for i in report["interfaces"]:
        assert i["xdp"]["features"] == xdp_feature_names(masks[i["ifindex"]]), i["name"]
    if env.kind == "veth":
        assert "basic" in by_name(report)[env.ifname]["xdp"]["features"]


@pytest.mark.kernels
def test_veth_at_9000_reason_agrees_with_the_kernel(env, xdp_pass_obj):
    lab = env.make_lab(pairs=1, mtus=[9000])
    a, b = lab.pairs[0].a, lab.pairs[0].b
    r = by_name(probe_json(env, a, netns=lab.netns))[a]
    native = r["modes"]["native"]
    assert native["status"] == "blocked"
    assert "3506" in native["reason"] and "9000" in native["reason"] and b in native["reason"]
    assert r["recommended"]["mode"] == "generic"
    # The kernel refuses a frags-less program at that MTU, in its own words...
    res = env.cmd("ip", "link", "set", "dev", a, "xdpdrv", "obj", str(xdp_pass_obj), "sec", "xdp",
                  netns=lab.netns, check=False)
    assert res.returncode != 0 and "Peer MTU is too large to set XDP" in res.stderr
    # ...and takes it at the limit the probe names; the probe then shows it attached.
    env.cmd("ip", "link", "set", "dev", b, "mtu", "3506", netns=lab.netns)
    assert by_name(probe_json(env, a, netns=lab.netns))[a]["modes"]["native"]["status"] == "supported"
    env.cmd("ip", "link", "set", "dev", a, "xdpdrv", "obj", str(xdp_pass_obj), "sec", "xdp", netns=lab.netns)
    truth = env.json_cmd("ip", "-d", "-j", "link", "show", a, netns=lab.netns)[0]["xdp"]
    r = by_name(probe_json(env, a, netns=lab.netns))[a]
    assert r["xdp"]["attached"] == [{"mode": "native", "prog_id": truth["prog"]["id"], "name": "xdp_pass"}]
    # With a native program on, generic is blocked by the kernel's exclusivity rule.
    assert r["modes"]["generic"]["status"] == "blocked"
    res = env.cmd("ip", "link", "set", "dev", a, "xdpgeneric", "obj", str(xdp_pass_obj), "sec", "xdp",
                  netns=lab.netns, check=False)
    assert res.returncode != 0


def test_probe_verbose_and_table(env):
    table = env.cmd(OFFLOAD, "probe").stdout
    assert env.ifname in table and "native" in table
    detail = env.cmd(OFFLOAD, "probe", "-v", env.ifname).stdout
    assert "recommended: native" in detail and "xdp-features" in detail


@pytest.mark.kernels
def test_unknown_interface_exits_2(env):
    res = env.offload("probe", "nosuch0", check=False)
    assert res.returncode == 2
    assert "nosuch0" in res.stderr and "Traceback" not in res.stderr + res.stdout


def test_probe_netns_option_equals_ip_netns_exec(env):
    inside = probe_json(env)
    outside = env.json_cmd(OFFLOAD, "probe", "--json", "--netns", env.netns, netns=None)
    strip = lambda r: [(i["name"], i["ifindex"], i["recommended"]["mode"]) for i in r["interfaces"]]  # noqa: E731
    assert strip(inside) == strip(outside)


def test_probe_cost_is_fixed_whatever_the_device_count(env, monkeypatch):
    """What the probe promises: no program is executed, no process is forked (the dumps are decoded
    straight from the receive buffers, in this process), and its netlink requests do not grow with
    the interfaces."""
    import os
    import socket as socket_mod
    import subprocess

    from offload.kernel import netns
    from offload.probe.report import probe

    def refuse(*a, **k):
        raise AssertionError("the probe must not execute programs")

    for name in ("execv", "execve", "execvp", "execvpe", "posix_spawn", "posix_spawnp"):
        monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    forks, sends = [], []
    real_fork = os.fork

    def counting_fork():
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counting_fork)
    for meth in ("send", "sendto", "sendmsg"):
        real = getattr(socket_mod.socket, meth)

        def counting(self, *a, _real=real, **k):
            if self.family == socket_mod.AF_NETLINK:
                sends.append(self.proto)
            return _real(self, *a, **k)
        monkeypatch.setattr(socket_mod.socket, meth, counting)

    cost = {}
    for pairs in (1, 20):
        lab = env.make_lab(pairs=pairs)
        forks.clear()
        sends.clear()
        with netns.inside(lab.netns):
            report = probe()
        assert len(report["interfaces"]) == 2 * pairs + 1
        cost[pairs] = (len(forks), len(sends))
    assert cost[1][0] == cost[20][0] == 0, cost
    assert cost[1][1] == cost[20][1] and cost[1][1] >= 1, f"netlink requests grew with the interfaces: {cost}"


def test_bad_profile_is_a_warning_and_the_rest_works(env, tmp_path):
    import shutil

    from lib.helpers import ROOT
    for f in (ROOT / "drivers_profiles").glob("*.yaml"):
        shutil.copy(f, tmp_path)
    (tmp_path / "veth.yaml").write_text("driver: veth\nxdp: {native: {supported: maybe}}\n")
    res = env.cmd(OFFLOAD, "probe", "--json", "--profiles", str(tmp_path), env.ifname)
    report = json.loads(res.stdout)
    assert any("veth.yaml" in w and "xdp.native.supported" in w for w in report["warnings"])
    (iface,) = report["interfaces"]
    assert iface["profile"] is None
    # the kernel's own answer still stands
    assert iface["modes"]["native"]["status"] == "supported" and iface["recommended"]["mode"] == "native"


def test_devices_of_one_driver_keep_their_own_answers(env):
    """Replies equal from device to device are decoded once (issue 24); devices of one driver that
    answer differently keep their own: a tun and a tap (one driver, GDRVINFO's bus 'tun' / 'tap'),
    veths at two MTUs, one of them down, against ethtool -i / -k and iproute2."""
    need_tool("ethtool")
    lab = env.make_lab(pairs=2, mtus=[1500, 9000])
    for dev, mode in (("t24tun", "tun"), ("t24tap", "tap")):
        env.cmd("ip", "tuntap", "add", dev, "mode", mode, netns=lab.netns)   # gone with the lab's namespace
    env.cmd("ip", "link", "set", lab.pairs[1].a, "down", netns=lab.netns)
    env.cmd("ethtool", "-K", lab.pairs[0].b, "gro", "on", netns=lab.netns)
    report = by_name(probe_json(env, netns=lab.netns))
    truth = {d["ifname"]: d for d in env.json_cmd("ip", "-d", "-j", "link", "show", netns=lab.netns)}
    for name in ("t24tun", "t24tap", *(d for p in lab.pairs for d in (p.a, p.b))):
        r = report[name]
        info = dict(line.split(": ", 1) for line in env.cmd("ethtool", "-i", name, netns=lab.netns).stdout.splitlines()
                    if ": " in line)
        assert (r["driver"], r["driver_version"] or "", r["bus_info"] or "") == (
            info["driver"], info.get("version", ""), info.get("bus-info", "")), name
        gro = env.cmd("ethtool", "-k", name, netns=lab.netns).stdout
        assert r["features"].get("rx-gro", {}).get("active", False) == ("generic-receive-offload: on" in gro), name
        assert (r["mtu"], r["state"]["admin_up"]) == (truth[name]["mtu"], "UP" in truth[name]["flags"]), name
    assert report["t24tun"]["bus_info"] == "tun" and report["t24tap"]["bus_info"] == "tap"


def test_named_links_are_decoded_with_their_peers(env):
    """A look at a few links among many (attach, watch's new links, `probe IFACE`) decodes those and
    the links they point at, nothing else; the same records as the whole dump."""
    from offload.kernel import netns, rtnl

    lab = env.make_lab(pairs=3)
    a, b = lab.pairs[1].a, lab.pairs[1].b
    with netns.inside(lab.netns):
        everything = rtnl.dump_links()
        named = rtnl.dump_links(names={a})
        names = rtnl.link_names()
    assert [link.name for link in named] == [link.name for link in everything if link.name in (a, b)]
    assert named == [link for link in everything if link.name in (a, b)]
    assert names == {link.name for link in everything}
    report = by_name(probe_json(env, a, netns=lab.netns))
    assert list(report) == [a] and report[a]["peer"]["name"] == b
