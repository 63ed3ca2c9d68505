"""Hardware offload for real, on netdevsim, in the VM lane's Linux 6.1 (which also has no netdev
netlink family, so XDP features come from the driver profile). Every claim is checked against
iproute2's view of the kernel, independently of offload's own code."""

import json
import subprocess

import pytest
from lib.env import NetEnv, _write
from lib.helpers import OFFLOAD

pytestmark = pytest.mark.vm


@pytest.fixture
def nsim():
    with NetEnv.netdevsim() as env:
        yield env
        subprocess.run([OFFLOAD, "detach", env.ifname], capture_output=True)


def run(*argv, check=False):
    return subprocess.run([OFFLOAD, *argv], capture_output=True, text=True, timeout=600, check=check)


def run_json(*argv):
    res = run(*argv, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def kernel_xdp(dev: str) -> dict:
    x = json.loads(subprocess.run(["ip", "-d", "-j", "link", "show", "dev", dev], capture_output=True,
                                  text=True, check=True).stdout)[0].get("xdp")
    if not x:
        return {}
    names = {1: "native", 2: "generic", 3: "hw"}
    if x["mode"] == 4:
        return {names[a["mode"]]: a["prog"]["id"] for a in x["attached"]}
    return {names[x["mode"]]: x["prog"]["id"]}


def test_probe_says_hw_from_the_profile(nsim):
    report = run_json("probe", nsim.ifname)
    assert report["host"]["netdev_family"] is False
    assert any("no netdev generic-netlink family" in w for w in report["warnings"])
    (i,) = report["interfaces"]
    assert i["driver"] == "netdevsim" and i["profile"] == "netdevsim"
    assert i["xdp"]["features"] is None and i["xdp"]["features_source"] == "unavailable"
    assert i["modes"]["hw"]["status"] == "supported"
    assert i["modes"]["hw"]["reasons"][0].startswith("driver profile:")
    assert i["recommended"]["mode"] == "hw"
    assert i["firmware_version"]  # from ethtool drvinfo or devlink info


def test_auto_lands_in_hw_and_detach_removes_it(nsim):
    res = run_json("attach", nsim.ifname, "count_drop")
    assert res["mode"] == "hw" and res["fallbacks"] == []
    assert kernel_xdp(nsim.ifname) == {"hw": res["prog_id"]}          # IFLA_XDP_HW_PROG_ID
    with open(nsim.debugfs("bpf_offloaded_id", port=True)) as f:     # and netdevsim holds it
        assert int(f.read()) == res["prog_id"]
    st = run_json("status")
    (row,) = [r for r in st["attachments"] if r["interface"] == nsim.ifname]
    assert row["mode"] == "hw" and row["ours"] is True
    stats = run_json("stats", nsim.ifname)                             # the offloaded map, read back
    assert stats["mode"] == "hw" and stats["packets"]["drop"] == 0
    assert run_json("detach", nsim.ifname)["detached"]["mode"] == "hw"
    assert kernel_xdp(nsim.ifname) == {}


def test_lpm_program_falls_back_to_native_with_the_reason(nsim):
    res = run_json("attach", nsim.ifname, "filter", "--param", "prefixes=192.0.2.0/24")
    assert res["mode"] == "native"
    (hw,) = [f for f in res["fallbacks"] if f["mode"] == "hw"]
    assert "offloads only ARRAY and HASH maps" in hw["reason"]
    assert kernel_xdp(nsim.ifname) == {"native": res["prog_id"]}


def test_floor_hw_unmet_leaves_nothing(nsim):
    res = run("attach", nsim.ifname, "filter", "--min-mode", "hw")
    assert res.returncode == 8 and "hw:" in res.stderr
    assert kernel_xdp(nsim.ifname) == {}
    assert run_json("status")["attachments"] == []


def test_device_refusing_offload_falls_back(nsim):
    _write(nsim.debugfs("bpf_bind_accept"), "N")
    res = run_json("attach", nsim.ifname, "count_drop")
    assert res["mode"] == "native"
    (hw,) = [f for f in res["fallbacks"] if f["mode"] == "hw"]
    assert hw["reason"]
    assert kernel_xdp(nsim.ifname) == {"native": res["prog_id"]}
