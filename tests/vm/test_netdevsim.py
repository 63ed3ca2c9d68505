"""Hardware offload for real, on netdevsim, in the VM lane's Linux 6.1 (which also has no netdev
netlink family, so XDP features come from the driver profile). Every claim is checked against
iproute2's view of the kernel, independently of offload's own code."""

import pytest
from lib.cli import offload, offload_json
from lib.env import NetdevSim, write
from lib.kernel import kernel_xdp
from lib.objects import hits_object

pytestmark = pytest.mark.vm


@pytest.fixture
def nsim():
    with NetdevSim() as env:
        yield env


def test_probe_says_hw_from_the_profile(nsim):
    report = offload_json("probe", nsim.ifname)
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
    res = offload_json("attach", nsim.ifname, "count_drop")
    assert res["mode"] == "hw" and res["fallbacks"] == []
    assert kernel_xdp(nsim.ifname) == {"hw": res["prog_id"]}          # IFLA_XDP_HW_PROG_ID
    with open(nsim.debugfs("bpf_offloaded_id", port=True)) as f:     # and netdevsim holds it
        assert int(f.read()) == res["prog_id"]
    st = offload_json("status")
    (row,) = [r for r in st["attachments"] if r["interface"] == nsim.ifname]
    assert row["mode"] == "hw" and row["ours"] is True
    stats = offload_json("stats", nsim.ifname)                             # the offloaded map, read back
    assert stats["mode"] == "hw" and stats["packets"]["drop"] == 0
    assert offload_json("detach", nsim.ifname)["detached"]["mode"] == "hw"
    assert kernel_xdp(nsim.ifname) == {}


def test_lpm_program_falls_back_to_native_with_the_reason(nsim):
    # the advisor reads the program: its LPM tries cannot be offloaded, so hw is not even tried
    res = offload_json("attach", nsim.ifname, "filter", "--param", "prefixes=192.0.2.0/24")
    assert res["mode"] == "native"
    (hw,) = [f for f in res["fallbacks"] if f["mode"] == "hw"]
    assert hw["reason"].startswith("not tried: the program would be refused") and "type lpm_trie" in hw["reason"]
    assert kernel_xdp(nsim.ifname) == {"native": res["prog_id"]}
    offload_json("detach", nsim.ifname)
    # --try-hw: tried, and the kernel's refusal comes with the driver profile's limit
    res = offload_json("attach", nsim.ifname, "filter", "--param", "prefixes=192.0.2.0/24", "--try-hw")
    (hw,) = [f for f in res["fallbacks"] if f["mode"] == "hw"]
    assert res["mode"] == "native" and "offloads only ARRAY and HASH maps" in hw["reason"]


def test_floor_hw_unmet_leaves_nothing(nsim):
    res = offload("attach", nsim.ifname, "filter", "--min-mode", "hw", check=False)
    assert res.returncode == 8 and "hw:" in res.stderr
    assert kernel_xdp(nsim.ifname) == {}
    assert offload_json("status")["attachments"] == []


def test_device_refusing_offload_falls_back(nsim):
    write(nsim.debugfs("bpf_bind_accept"), "N")
    res = offload_json("attach", nsim.ifname, "count_drop")
    assert res["mode"] == "native"
    (hw,) = [f for f in res["fallbacks"] if f["mode"] == "hw"]
    # netdevsim's bpf_bind_accept=N makes the kernel answer the offloaded load with EOPNOTSUPP
    assert "Operation not supported" in hw["reason"], hw
    assert kernel_xdp(nsim.ifname) == {"native": res["prog_id"]}


@pytest.mark.parametrize("legacy", [False, True], ids=["btf-maps", "legacy-maps"])
def test_an_elf_object_offloads_to_hw(nsim, tmp_path, legacy):
    obj = hits_object(tmp_path, "BPF_MAP_TYPE_ARRAY", legacy)   # compiled by clang, not by offload
    res = offload_json("attach", nsim.ifname, str(obj))
    assert res["mode"] == "hw" and res["fallbacks"] == []
    assert kernel_xdp(nsim.ifname) == {"hw": res["prog_id"]}
    with open(nsim.debugfs("bpf_offloaded_id", port=True)) as f:
        assert int(f.read()) == res["prog_id"]


def test_an_object_whose_map_the_device_refuses_falls_back(nsim, tmp_path):
    obj = hits_object(tmp_path, "BPF_MAP_TYPE_PERCPU_ARRAY")
    res = offload_json("attach", nsim.ifname, str(obj), "--try-hw")   # the kernel's own refusal
    assert res["mode"] == "native"
    (hw,) = [f for f in res["fallbacks"] if f["mode"] == "hw"]
    # netdevsim refuses to offload a per-CPU map: the map create fails with EINVAL
    assert "Invalid argument" in hw["reason"] and "hits" in hw["reason"], hw
    assert kernel_xdp(nsim.ifname) == {"native": res["prog_id"]}


def test_ours_moving_between_hw_and_a_link_leaves_nothing_behind(nsim):
    """hw and native coexist: ours moved from hw (netlink) to native through a bpf_link comes off
    hw; moved back to hw, its link's pin goes with the old pins, and the native program with it."""
    hw = offload_json("attach", nsim.ifname, "count_drop", "--mode", "hw")
    assert kernel_xdp(nsim.ifname) == {"hw": hw["prog_id"]}
    native = offload_json("attach", nsim.ifname, "count_drop", "--mode", "native", "--via", "link")
    assert native["via"] == "link" and kernel_xdp(nsim.ifname) == {"native": native["prog_id"]}
    back = offload_json("attach", nsim.ifname, "count_drop", "--mode", "hw")
    assert back["mode"] == "hw" and kernel_xdp(nsim.ifname) == {"hw": back["prog_id"]}
    offload_json("detach", nsim.ifname)
    assert kernel_xdp(nsim.ifname) == {}
