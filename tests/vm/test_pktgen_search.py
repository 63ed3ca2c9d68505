"""pktgen at an offered load (`ratep`) in the VM lane's kernel, and the NDR search driven by it.
Rates under TCG are low and vary; counts are exact, and a rate missed is a marked trial."""

import json

import pytest
from lib.cli import offload
from lib.schemas import validate

from offload.bench import trial
from offload.bench.generators import pktgen
from offload.kernel import netns

pytestmark = pytest.mark.vm


def test_pktgen_ratep_at_five_loads(env):
    """pktgen's own Result (frames over its run time) against the requested rate: within 10%, or
    late against its schedule by more than a trial tolerates (then a trial says generator_short)."""
    seen = []
    with netns.inside(env.netns):
        for rate in (500, 1000, 1500, 2000, 2500):
            cfg = pktgen.PktgenConfig(device=env.peer, threads=[0], pkt_size=60, count=rate, rate_pps=rate)
            pg = pktgen.Pktgen(cfg)
            try:
                pg.setup()
                (r,) = pg.run()
            finally:
                pg.reset()
            assert r.ok and r.packets == rate, r.text
            took = r.usec / 1e6
            seen.append((rate, r.packets / took / rate - 1, took - 1.0))
    print("pktgen ratep: requested, achieved/requested - 1, lag s:", seen)
    assert all(abs(err) <= 0.10 or lag > trial.tolerated_lag(1.0) for _, err, lag in seen), seen


def test_search_with_pktgen_at_controlled_rates(env):
    res = offload("bench", "--tx", env.peer, "--rx", env.ifname, "--netns", env.netns, "--generator", "pktgen",
                  "--search", "ndr,pdr", "--modes", "native", "--duration", "1", "--json", check=False, timeout=1800)
    assert res.returncode == 0, res.stderr
    doc = validate(json.loads(res.stdout), "bench-search")
    (r,) = doc["results"]
    assert r["generator"] == "pktgen" and r["mode"] == "native" and [g["goal"] for g in r["goals"]] == ["ndr", "pdr"]
    for t in r["trials"]:
        assert t["tx_packets"] == t["intended_count"]          # pktgen sent the count it was given
        assert t["loss_packets"] == max(0, t["tx_packets"] - t["rx_packets"])
    assert r["goals"][0]["lower_bound_pps"] and r["goals"][0]["lower_bound_pps"] > 0
    with netns.inside(env.netns):
        assert [p.name for p in pktgen.PROC.iterdir() if "@" in p.name] == [], "a pktgen thread holds the device"
