"""`offload bench` on veth labs: results, accounting, exact counts, files, bad input, and the
faults that must leave nothing behind (SIGTERM, the rx device vanishing). Speeds are never
asserted: only what is exact (counts) or structural."""

import csv
import json
import signal
import subprocess
import time

import pytest
from lib.cli import OFFLOAD, offload
from lib.helpers import PIN_ROOT
from lib.kernel import netns_list

pytestmark = pytest.mark.root


def test_lab_bench_every_mode_with_files(tmp_path):
    before = netns_list()
    c, p = tmp_path / "runs.csv", tmp_path / "plot.png"
    doc = json.loads(offload("bench", "--lab", "--duration", "1", "--warmup", "0.3", "--repeat", "2", "--json",
                           "--csv", str(c), "--plot", str(p)).stdout)
    assert [r["mode"] for r in doc["results"]] == ["native", "generic"]
    assert doc["skipped"][0]["mode"] == "hw" and "hw-offload" in doc["skipped"][0]["reason"]
    for r in doc["results"]:
        assert set(r) >= {"mode", "generator", "tx_pps", "rx_pps", "rx_packets", "iface_rx_packets", "runs"}
        assert r["generator"] == "live-frames" and len(r["runs"]) == 2 and r["rx_pps"] > 0
        for run in r["runs"]:
            # the program's counters and the interface's stats64 saw the same window
            assert abs(run["rx_packets"] - run["iface_rx_packets"]) <= 0.01 * run["iface_rx_packets"]
            assert 0 <= run["harness_cpu_pct"] < 100
    assert doc["host"]["kernel"] and doc["partial"] is None
    rows = list(csv.DictReader(c.open()))
    assert [(r["mode"], r["run"]) for r in rows] == [("native", "1"), ("native", "2"), ("generic", "1"), ("generic", "2")]
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert netns_list() == before


def test_exact_count_to_an_idle_receiver():
    # one generator thread: two would overrun the single veth queue, and the drops would be real
    doc = json.loads(offload("bench", "--lab", "--count", "20000", "--repeat", "1", "--json").stdout)
    assert len(doc["results"]) == 2
    for r in doc["results"]:
        (run,) = r["runs"]
        assert run["tx_packets"] == run["rx_packets"] == run["iface_rx_packets"] == 20000


def test_bench_prog_cost():
    doc = json.loads(offload("bench", "prog", "count_drop", "--repeat", "3", "--json").stdout)
    assert doc["program"] == "count_drop" and doc["ns_per_packet"] > 0 and len(doc["runs_ns"]) == 3


@pytest.mark.parametrize("args,code,needle", [
    (["--tx", "{a}", "--rx", "{a}"], 2, "same device"),
    (["--tx", "{a}", "--rx", "nosuch0"], 2, "nosuch0"),
    (["--tx", "{a}", "--rx", "{b}", "--pkt-size", "59"], 2, "--pkt-size"),
    (["--tx", "{a}", "--rx", "{b}", "--pkt-size", "1515"], 2, "exceeds"),
    (["--tx", "{a}", "--rx", "{b}", "--generator", "pktgen"], 4, "pktgen is not available"),
    (["--lab", "--tx", "{a}"], 2, "either --lab"),
])
def test_bad_input(env, args, code, needle):
    argv = [a.replace("{a}", env.ifname).replace("{b}", env.peer) for a in args] + ["--netns", env.netns]
    res = offload("bench", *argv, check=False)
    assert res.returncode == code, res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr


def test_device_down_is_refused(env):
    env.cmd("ip", "link", "set", "dev", env.peer, "down")
    res = offload("bench", "--tx", env.ifname, "--rx", env.peer, "--netns", env.netns, check=False)
    assert res.returncode == 2 and "is down" in res.stderr


def test_sigterm_mid_run_cleans_up_and_reports_partial():
    before = netns_list()
    proc = subprocess.Popen([OFFLOAD, "bench", "--lab", "--duration", "30", "--modes", "native", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pins = PIN_ROOT / f"offload-lab-bench{proc.pid % 1000}"
    deadline = time.time() + 60
    while not pins.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert pins.exists(), "the program was never attached"
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    doc = json.loads(out)
    assert doc["partial"] == "interrupted"
    assert not pins.exists() and netns_list() == before


def test_rx_removed_mid_run(env):
    proc = subprocess.Popen([OFFLOAD, "bench", "--tx", env.ifname, "--rx", env.peer, "--netns", env.netns,
                             "--duration", "20", "--modes", "native", "--repeat", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pins = PIN_ROOT / env.netns / env.peer
    deadline = time.time() + 60
    while not pins.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)
    env.cmd("ip", "link", "del", "dev", env.ifname)   # takes its peer, the rx device, with it
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    doc = json.loads(out)
    assert doc["partial"] and "removed" in doc["partial"]
    assert not pins.exists(), "pins of the vanished device were left behind"
