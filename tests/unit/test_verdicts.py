"""Mode decisions over recorded and constructed fixtures of real drivers, and over synthetic
profiles for the rules themselves. Pure: no kernel needed."""

import copy

import pytest
from lib.helpers import load_fixture

from offload.probe import verdicts
from offload.probe.facts import DeviceFacts, HostFacts
from offload.probe.profiles import Profile
from offload.probe.report import report


def decide(fixture: str, dev: str, profs):
    host, devs = load_fixture(fixture)
    f = devs[dev]
    v = verdicts.evaluate(f, profs.get(f.driver or ""), host)
    return v, verdicts.recommend(v)


@pytest.fixture(scope="module")
def profs(shipped_profiles):
    p, problems = shipped_profiles
    assert not problems, problems
    return p


# ---- recorded on this project's machines ---------------------------------------------------------

def test_veth_at_1500_takes_native(profs):
    v, rec = decide("veth-6.18", "rec-a0", profs)
    assert v["native"].status == "supported"
    assert "xdp-features" in v["native"].reasons[0]
    assert v["hw"].status == "unsupported" and "hw-offload" in v["hw"].reasons[0]
    assert rec["mode"] == "native"
    # A veth redirect target needs XDP or GRO on its peer: said, not blocking.
    assert any("peer" in n for n in v["native"].notes)


def test_veth_at_9000_blocks_native_with_the_peer_mtu_reason(profs):
    v, rec = decide("veth-6.18", "rec-a1", profs)
    assert v["native"].status == "blocked"
    (reason,) = v["native"].blockers
    assert v["native"].reasons == [v["native"].reasons[0], reason]  # kernel first, then the precondition
    assert "9000" in reason and "3506" in reason and "rec-b1" in reason
    assert "frags-aware" in reason and "lower the MTU" in reason
    assert rec["mode"] == "generic"
    assert rec["passed_over"][1] == {"mode": "native", "status": "blocked", "reason": reason}


def test_virtio_net_with_guest_gro_hw_blocks_native(profs):
    v, rec = decide("virtio_net-6.18", "eth0", profs)
    assert v["native"].status == "blocked"
    assert "rx-gro-hw is on" in v["native"].reason
    assert rec["mode"] == "generic"


def test_loopback_gets_generic(profs):
    v, rec = decide("virtio_net-6.18", "lo", profs)
    assert v["native"].status == "unsupported"
    assert rec["mode"] == "generic"


# ---- constructed from driver sources ------------------------------------------------------------

def test_mlx5_native_and_lro_explained(profs):
    v, rec = decide("mlx5_core-6.8", "ens1f0np0", profs)
    assert rec["mode"] == "native" and v["hw"].status == "unsupported"
    # mlx5 clears every xdp-feature while LRO is on: the probe names LRO instead of "unsupported".
    v, rec = decide("mlx5_core-6.8", "ens1f1np1", profs)
    assert v["native"].status == "blocked"
    assert "large-receive-offload is on" in v["native"].reason
    assert "xdp-features" in v["native"].reasons[0]  # the kernel's word comes first
    assert rec["mode"] == "generic"


def test_ice_native_not_hw(profs):
    v, rec = decide("ice-6.6", "ens2f0", profs)
    assert rec["mode"] == "native"
    assert v["hw"].status == "unsupported"


def test_nfp_offloads_with_bpf_firmware_only(profs):
    v, rec = decide("nfp-6.6", "enp4s0np0", profs)
    assert v["hw"].status == "supported" and rec["mode"] == "hw"
    v, rec = decide("nfp-6.6", "enp5s0np0", profs)
    assert v["hw"].status == "unsupported" and rec["mode"] == "native"
    assert any("firmware" in n for n in v["hw"].notes)


def test_netdevsim_on_6_1_relies_on_the_profile(profs):
    v, rec = decide("netdevsim-6.1", "eni10np1", profs)
    assert v["hw"].status == "supported"
    assert v["hw"].reasons[0].startswith("driver profile:")
    assert rec["mode"] == "hw"
    assert any("offloads only ARRAY and HASH maps of at most 2 entries" in n for n in v["hw"].notes)


def test_ena_queue_and_mtu_limits(profs):
    v, rec = decide("ena-6.6", "ens5", profs)
    assert v["native"].status == "blocked"
    text = " ".join(v["native"].blockers)
    assert "9001" in text and "channels" in text
    assert rec["mode"] == "generic"


def test_unknown_driver_without_netdev_family_gets_generic(profs):
    v, rec = decide("unknown-5.15", "enp1s0", profs)
    assert v["hw"].status == v["native"].status == "unknown"
    assert "no driver profile for 'acmenic'" in v["native"].reasons[0]
    assert rec["mode"] == "generic"
    assert [p["status"] for p in rec["passed_over"]] == ["unknown", "unknown"]


# ---- the rules, on synthetic profiles -----------------------------------------------------------

BASE_PROFILE = {
    "driver": "synth", "summary": "synthetic",
    "xdp": {"native": {"supported": True, "since": "5.10", "source": "test source"},
            "zero_copy": {"supported": False}, "hw_offload": {"supported": False},
            "multi_buffer": {"supported": False}},
    "sources": ["test source"],
}


def synth(**changes) -> Profile:
    data = copy.deepcopy(BASE_PROFILE)
    data.update(changes)
    return Profile("synth", data, "synth.yaml")


def facts(**kw) -> DeviceFacts:
    base = dict(name="x0", ifindex=2, kind="physical", driver="synth", mtu=1500, xdp_features=None)
    base.update(kw)
    return DeviceFacts(**base)


OLD = HostFacts("5.4.0", False, 4)
NEW = HostFacts("6.1.0", False, 4)


def test_profile_since_gates_on_kernel_version():
    assert verdicts.evaluate(facts(), synth(), OLD)["native"].status == "unsupported"
    assert "gained native (driver) XDP in Linux 5.10" in verdicts.evaluate(facts(), synth(), OLD)["native"].reasons[0]
    assert verdicts.evaluate(facts(), synth(), NEW)["native"].status == "supported"


def test_kernel_features_come_before_the_profile():
    host = HostFacts("6.6.0", True, 4)
    v = verdicts.evaluate(facts(xdp_features=["basic"]), synth(), host)["native"]
    assert v.status == "supported" and "xdp-features" in v.reasons[0]
    v = verdicts.evaluate(facts(xdp_features=[]), synth(), host)["native"]
    assert v.status == "unsupported"


def test_unadvertised_capability_trusts_the_profile():
    p = synth()
    p.data["xdp"]["native"]["advertised"] = False
    v = verdicts.evaluate(facts(xdp_features=["hw-offload"]), p, HostFacts("6.6.0", True, 4))["native"]
    assert v.status == "supported" and "does not advertise" in v.reasons[0]


@pytest.mark.parametrize("severity,status", [("block", "blocked"), ("warn", "supported")])
def test_feature_requirement(severity, status):
    req = {"check": "feature_off", "feature": "large-receive-offload", "modes": ["native"], "severity": severity,
           "why": "the driver refuses XDP with LRO", "fix": "ethtool -K {dev} lro off", "source": "test source"}
    p = synth(requirements=[req])
    v = verdicts.evaluate(facts(features_active=["large-receive-offload"]), p, NEW)["native"]
    assert v.status == status
    text = " ".join(v.reasons + v.notes)
    assert "ethtool -K x0 lro off" in text
    assert verdicts.evaluate(facts(features_active=[]), p, NEW)["native"].status == "supported"


def test_channel_requirements():
    half = {"check": "channels_at_most_half_max", "modes": ["native"], "severity": "block",
            "why": "XDP needs a TX queue per RX queue", "fix": "ethtool -L {dev} combined N", "source": "test source"}
    p = synth(requirements=[half])
    ch = lambda n, m: {"combined": n, "combined_max": m}  # noqa: E731
    assert verdicts.evaluate(facts(channels=ch(8, 8)), p, NEW)["native"].status == "blocked"
    assert verdicts.evaluate(facts(channels=ch(4, 8)), p, NEW)["native"].status == "supported"
    cpus = dict(half, check="channels_at_least_cpus")
    p = synth(requirements=[cpus])
    assert verdicts.evaluate(facts(channels=ch(2, 8)), p, NEW)["native"].status == "blocked"
    assert verdicts.evaluate(facts(channels=ch(4, 8)), p, NEW)["native"].status == "supported"


def test_mtu_limit_and_frags_hint():
    p = synth(limits={"native_mtu_max": {"value": 3000, "source": "test source"}})
    v = verdicts.evaluate(facts(mtu=3000), p, NEW)["native"]
    assert v.status == "supported"
    v = verdicts.evaluate(facts(mtu=3001), p, NEW)["native"]
    assert v.status == "blocked" and "no multi-buffer" in v.reason
    v = verdicts.evaluate(facts(mtu=3001, xdp_features=["basic", "rx-sg"]), p, HostFacts("6.6.0", True, 4))["native"]
    assert "frags-aware" in v.reason


def test_native_and_generic_exclude_each_other():
    f = facts(attached=[{"mode": "native", "prog_id": 42, "name": "xdp_prog"}])
    v = verdicts.evaluate(f, synth(), NEW)
    assert v["generic"].status == "blocked" and "42" in v["generic"].reason
    assert v["native"].status == "supported"


def test_link_down_is_a_note_not_a_block():
    v = verdicts.evaluate(facts(admin_up=False, oper_state="DOWN"), synth(), NEW)["native"]
    assert v.status == "supported" and "administratively down" in v.notes[0]


def test_nothing_available_on_ancient_kernel():
    v = verdicts.evaluate(facts(), None, HostFacts("4.9.0", False, 1))
    rec = verdicts.recommend(v)
    assert rec["mode"] is None and "generic" in rec["reason"]


def test_report_has_the_documented_keys(profs):
    host, devs = load_fixture("veth-6.18")
    doc = report(host, list(devs.values()), profs, [])
    assert set(doc) >= {"schema_version", "host", "interfaces", "warnings"}
    for i in doc["interfaces"]:
        assert set(i) >= {"name", "ifindex", "driver", "mtu", "xdp", "modes", "recommended"}
        assert set(i["xdp"]) >= {"features", "attached"}
        assert list(i["modes"]) == ["hw", "native", "generic"]
        for m in i["modes"].values():
            assert m["status"] in {"supported", "unsupported", "blocked", "unknown"}
            assert isinstance(m["reasons"], list) and m["reasons"]
        assert set(i["recommended"]) >= {"mode", "reason"}
