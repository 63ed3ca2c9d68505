"""The real pktgen, in the VM lane's kernel: offload drives its threads, parses their results,
and the frames counted on the receiver equal what pktgen reports sent (rates under TCG mean
nothing; counts are exact)."""

import json

import pytest
from lib.cli import offload

from offload.bench.generators import pktgen
from offload.kernel import netns

pytestmark = pytest.mark.vm


def test_pktgen_threads_run_and_parse(env):
    with netns.inside(env.netns):
        assert pktgen.available()
        cfg = pktgen.PktgenConfig(device=env.ifname, threads=[0, 1], pkt_size=60, count=500)
        pg = pktgen.Pktgen(cfg)
        try:
            pg.setup()
            results = pg.run()
            texts = [(pktgen.PROC / d).read_text() for d in pg.devs]
        finally:
            pg.reset()
        after = {p.name: p.read_text() for p in pktgen.PROC.glob("kpktgend_*")}
        devs_left = [p.name for p in pktgen.PROC.iterdir() if "@" in p.name]
    print("PKTGEN-RESULT-TEXT-BEGIN\n" + texts[0] + "PKTGEN-RESULT-TEXT-END")
    assert [r.device for r in results] == [f"{env.ifname}@0", f"{env.ifname}@1"]
    for r in results:
        assert r.ok and r.packets == 500 and r.pkt_size == 60 and r.errors == 0 and r.pps > 0, r.text
    # reset leaves no device on any thread: no pktgen thread keeps running
    assert devs_left == []
    for text in after.values():
        running = [ln for ln in text.splitlines() if ln.startswith(("Running:", "Stopped:"))]
        assert not any(env.ifname in ln for ln in running), text


def test_bench_with_pktgen_counts_exactly(env):
    mode = "native"
    res = offload("bench", "--tx", env.peer, "--rx", env.ifname, "--netns", env.netns, "--generator", "pktgen",
                  "--modes", "native,generic", "--count", "3000", "--threads", "2", "--repeat", "1", "--json",
                  check=False, timeout=900)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    (r,) = doc["results"]
    assert r["generator"] == "pktgen" and r["mode"] == mode, doc
    (skip,) = doc["skipped"]
    assert skip["mode"] == "generic" and "shared skbs" in skip["reason"]
    (run,) = r["runs"]
    assert run["tx_packets"] == 3000                      # what pktgen says it sent
    assert run["rx_packets"] == 3000 == run["iface_rx_packets"]
    with netns.inside(env.netns):
        left = [p.name for p in pktgen.PROC.iterdir() if "@" in p.name]
        threads = [p.read_text() for p in pktgen.PROC.glob("kpktgend_*")]
    assert left == [], "a pktgen thread still holds the device"
    for text in threads:
        assert not any(env.peer in ln for ln in text.splitlines() if ln.startswith(("Running:", "Stopped:")))
