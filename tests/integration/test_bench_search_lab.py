"""`offload bench --search` and `offload bench compare` on veth labs, and the live-frames
generator paced to an offered load. Speeds are never asserted; counts are exact, and the paced
rate is checked against the request with a margin a busy machine keeps (the error is printed)."""

import json
import signal
import subprocess
import time

import pytest
from lib.cli import OFFLOAD, offload
from lib.helpers import PIN_ROOT
from lib.kernel import netns_list
from lib.schemas import validate

from offload import lab
from offload.bench import harness, search, trial
from offload.kernel import netns
from offload.load import attach, stats

pytestmark = pytest.mark.root


def _lab_gone(doc: dict) -> None:
    ns = lab.netns_name(doc["config"]["tx"].rsplit("-", 1)[0])
    assert ns not in netns_list() and not (PIN_ROOT / ns).exists()


def test_search_finds_ndr_and_pdr_per_mode_with_every_trial(tmp_path):
    c, p = tmp_path / "trials.csv", tmp_path / "plot.png"
    doc = validate(json.loads(offload("bench", "--lab", "--search", "ndr,pdr", "--modes", "native,generic",
                                      "--duration", "1", "--pkt-size", "60,1024", "--json", "--csv", str(c),
                                      "--plot", str(p), timeout=900).stdout), "bench-search")
    assert [(r["mode"], r["frame"]) for r in doc["results"]] == [("native", "60"), ("native", "1024"),
                                                                 ("generic", "60"), ("generic", "1024")]
    for r in doc["results"]:
        assert [g["goal"] for g in r["goals"]] == ["ndr", "pdr"] and "error" not in r
        assert r["trials_run"] == len(r["trials"]) >= 1
        for g in r["goals"]:
            assert g["lower_bound_pps"] and g["lower_bound_pps"] > 0
            if g["upper_bound_pps"] is not None:
                assert g["lower_bound_pps"] < g["upper_bound_pps"]
        for t in r["trials"]:
            # counted trials: every frame intended is sent, and received or lost, exactly
            assert t["tx_packets"] == t["intended_count"]
            assert t["loss_packets"] == max(0, t["tx_packets"] - t["rx_packets"])
        # the NDR's lower bound was a full-length trial that lost nothing
        ndr = r["goals"][0]["lower_bound_pps"]
        assert any(abs(t["intended_load_pps"] - ndr) <= 1 and t["loss_packets"] == 0 and t["duration_s"] == 1.0
                   for t in r["trials"])
    rows = c.read_text().splitlines()
    assert len(rows) == 1 + sum(len(r["trials"]) for r in doc["results"])
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _lab_gone(doc)


def test_sigterm_mid_search_keeps_its_trials_and_leaves_nothing():
    proc = subprocess.Popen([OFFLOAD, "bench", "--lab", "--search", "ndr", "--modes", "native", "--duration", "5",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pins = PIN_ROOT / f"offload-lab-bench{proc.pid % 1000}"
    deadline = time.time() + 60
    while not pins.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert pins.exists(), "the program was never attached"
    time.sleep(search.WARMUP_MAX_S + 4)   # the warm-up (at most WARMUP_MAX_S), then into the first trials
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    doc = validate(json.loads(out), "bench-search")
    assert doc["partial"] == "interrupted"
    (r,) = doc["results"]
    assert r["error"] == "interrupted" and r["trials_run"] == len(r["trials"])
    assert not pins.exists() and pins.name not in netns_list()


def test_search_bad_input_is_exit_2_before_any_lab():
    for args in (["--search", "ndr,foo"], ["--pkt-size", "60,128"], ["--imix"], ["--search", "ndr", "--count", "9"],
                 ["--pkt-size", "60,,128", "--search", "ndr"], ["--exceed-ratio", "0.5"], ["--duration-sum", "3"],
                 ["--search", "ndr", "--exceed-ratio", "1"]):
        res = offload("bench", "--lab", *args, check=False)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (args, res.stderr)


def test_compare_says_same_or_not_and_gates(tmp_path):
    res = offload("bench", "compare", "count_drop", "count_drop", "--lab", "--trials", "3", "--duration", "0.5",
                  "--warmup", "0.2", "--json", "--fail-if-slower", "50", check=False, timeout=600)
    doc = validate(json.loads(res.stdout), "bench-compare")
    assert [t["arm"] for t in doc["trials"]] == list("ABBAAB")
    assert all(t["counted_by"] == "program" and t["rx_pps"] > 0 for t in doc["trials"])
    # a veth fed live frames: compared per second of the sending CPU's time, which the window had
    assert doc["metric"] == "rx_per_cpu_s" and doc["median_a"] > 0 and doc["median_b"] > 0
    assert all(0 < t["generator_cpu_s"] <= t["window_s"] * 1.05 for t in doc["trials"])
    assert doc["interval"][0] <= doc["ratio"] <= doc["interval"][1]
    # the same program is never 50% slower than itself: the gate passes
    assert res.returncode == 0 and not doc["slower_than_allowed"], res.stderr
    _lab_gone(doc)


def test_compare_bad_program_is_exit_2():
    res = offload("bench", "compare", "count_drop", "no_such_program", "--lab", "--json", check=False)
    assert res.returncode == 2 and "no_such_program" in res.stdout


def _achieved(samples: list[tuple[float, int]], after: float) -> float:
    """Frames per second: the least-squares slope of frames sent against the time each call ended,
    over the calls that ended `after` s into the run or later (one late call moves it little)."""
    t0 = samples[0][0]
    pts = [(t - t0, n) for t, n in samples if t - t0 >= after]
    mt, mn = sum(t for t, _ in pts) / len(pts), sum(n for _, n in pts) / len(pts)
    return sum((t - mt) * (n - mn) for t, n in pts) / sum((t - mt) ** 2 for t, _ in pts)


def test_live_frames_paced_to_five_loads():
    """The paced generator's achieved load against the request at 5 loads below its ceiling: the
    rate of frames sent against the wall-clock time each call ended (no call is cut by a window's
    edge), every frame counted by the receiving program. Within 10% wherever the generator kept its
    schedule; where it fell behind by more than a trial tolerates (a busy machine's late wake-ups)
    it says so, as a trial would be marked. The errors and lags are printed."""
    with lab.temporary("pace", pairs=1, mtu=1500, queues=1) as made:
        spec = harness.Spec(made.pairs[0].a, made.pairs[0].b, ["native"])
        with netns.inside(made.netns), harness.session(spec) as s:
            attach.attach(spec.rx, "count_drop", mode="native")
            gen = s.generator()
            try:
                ceiling = trial.calibrate(s, gen, 1.0)
                errors = []
                for share in (0.05, 0.1, 0.2, 0.3, 0.4):
                    load = ceiling * share
                    before = stats.read(spec.rx)["packets"]["drop"]
                    gen.start(None, load)
                    try:
                        time.sleep(4.0)
                    finally:
                        gen.stop()
                    time.sleep(harness.DRAIN_S)
                    (thread,) = gen.g.threads
                    assert stats.read(spec.rx)["packets"]["drop"] - before == thread.sent   # all received
                    errors.append((_achieved(thread.samples, 0.5) / load - 1, thread.lag))
            finally:
                gen.close()
                attach.detach(spec.rx)
    print("ceiling", round(ceiling), "achieved/requested - 1 per load (lag):", [f"{e:+.1%} ({lag:.2f}s)" for e, lag in errors])
    # 10%: the slope is taken over calls that each send 0.2 s of frames, so a call that ends late on a
    # busy machine (lag well under what a trial tolerates) tilts it by several percent (seen: -5.9% at
    # 0.06 s of lag); a pacing fault (no pacing, double rate) is far outside it.
    assert all(abs(e) <= 0.10 or lag > trial.tolerated_lag(4.0) for e, lag in errors), errors
