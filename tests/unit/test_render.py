"""Every human table as a person reads it, at 80 and at 120 columns, from realistic data: recorded
probe facts (tests/fixtures), a recorded demo, and results shaped like the commands' own. No value
is ever cut ("…"), no line is wider than the terminal, every reason appears in full."""

from __future__ import annotations

import copy
import json
from io import StringIO

import pytest
from lib.helpers import FIXTURES, load_fixture

from offload import render as top_render
from offload.bench import render as bench_render
from offload.load import programs
from offload.load import render as load_render
from offload.orchestrate import render as orch_render
from offload.probe import render as probe_render
from offload.probe.report import report

WIDTHS = (80, 120)
PROBE_FIXTURES = sorted(p.stem for p in FIXTURES.glob("*.json") if p.stem != "demo-story")


def console(width: int):
    from rich.console import Console

    buf = StringIO()
    return Console(width=width, file=buf, highlight=False, color_system=None), buf


def flat(text: str) -> str:
    return " ".join(text.split())


def readable(text: str, width: int, reasons: list[str]) -> None:
    assert "…" not in text, text
    too_wide = [ln for ln in text.splitlines() if len(ln.rstrip()) > width]
    assert not too_wide, too_wide
    padded = [ln for ln in text.splitlines() if ln != ln.rstrip()]
    assert not padded, padded   # no trailing spaces: a copy, a diff or `grep ' $'` trips over them
    for r in reasons:
        assert flat(r) in flat(text), f"reason not in full: {r!r}\n{text}"


@pytest.fixture(scope="module")
def story() -> dict:
    return json.loads((FIXTURES / "demo-story.json").read_text())


@pytest.fixture(scope="module")
def reports(shipped_profiles) -> dict[str, dict]:
    profs, problems = shipped_profiles
    out = {}
    for name in PROBE_FIXTURES:
        host, devs = load_fixture(name)
        out[name] = report(host, list(devs.values()), profs, problems)
    return out


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("fixture", PROBE_FIXTURES)
def test_probe_table(reports, fixture, width):
    rep = reports[fixture]
    c, buf = console(width)
    probe_render.probe_table(rep, c)
    text = buf.getvalue()
    readable(text, width, [probe_render.top_reason(i) for i in rep["interfaces"]] + rep["warnings"])
    for i in rep["interfaces"]:
        assert i["name"] in text


def test_probe_table_wide_shows_more(reports):
    rep = reports["veth-6.18"]
    narrow, wide = console(80), console(160)
    probe_render.probe_table(rep, narrow[0])
    probe_render.probe_table(rep, wide[0])
    assert "xdp-features" not in narrow[1].getvalue().splitlines()[1]
    assert "xdp-features" in wide[1].getvalue() and "basic,redirect" in wide[1].getvalue()


STATUS = {"netns": "offload-lab-demo4242", "stale_pins": [], "warnings": [], "attachments": [
    {"interface": "demo4242-a0", "ifindex": 3, "mode": "native", "prog_id": 2158, "name": "xdp_count_drop",
     "ours": True, "program": "count_drop", "attached_at": "2025-06-01T12:34:56+0000"},
    {"interface": "ens1f1np1", "ifindex": 7, "mode": "generic", "prog_id": 123456, "name": "xdp_dispatcher",
     "ours": False, "program": None, "attached_at": None},
    {"interface": "demo4242-a1", "ifindex": 5, "mode": "generic", "prog_id": 2167, "name": "xdp_filter",
     "ours": True, "program": "/srv/progs/my_filter.bpf.o", "attached_at": "2025-06-01T12:35:01+0000"}]}


@pytest.mark.parametrize("width", WIDTHS)
def test_status(width):
    c, buf = console(width)
    load_render.status(STATUS, c, c)
    text = buf.getvalue()
    readable(text, width, [])
    for r in STATUS["attachments"]:
        assert r["interface"] in text and str(r["prog_id"]) in text
    assert "/srv/progs/my_filter.bpf.o" in text


STATS = {"interface": "demo4242-b0", "mode": "native", "program": "count_drop", "prog_id": 2158,
         "counters": "offload", "time": 0.0, "interval": 2.0,
         "packets": {"aborted": 0, "drop": 12_710_048_331, "pass": 950, "tx": 0, "redirect": 5_318_004},
         "bytes": {"aborted": 0, "drop": 762_602_899_860, "pass": 57_000, "tx": 0, "redirect": 319_080_240},
         "rates_pps": {"aborted": 0.0, "drop": 6_347_888.4, "pass": 12.5, "tx": 0.0, "redirect": 532_104.0}}


@pytest.mark.parametrize("width", WIDTHS)
def test_stats(width):
    c, buf = console(width)
    load_render.stats(STATS, c)
    text = buf.getvalue()
    readable(text, width, [])
    assert "12.7G" in text and "6.35 Mpps" in text and "532 kpps" in text and "12 pps" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_programs(width):
    rows = programs.catalogue()
    c, buf = console(width)
    load_render.programs({"programs": rows}, c)
    readable(buf.getvalue(), width, [r["summary"] for r in rows])


@pytest.mark.parametrize("width", WIDTHS)
def test_plan_and_apply(reports, width):
    rep = reports["mlx5_core-6.8"]
    items = [{"interface": i["name"], "action": "attach" if i["recommended"]["mode"] == "native" else "conflict",
              "rule": "fast-path", "program": "filter", "mode": i["recommended"]["mode"],
              "reason": probe_render.top_reason(i), "also_matched": []} for i in rep["interfaces"]]
    c, buf = console(width)
    orch_render.plan({"policy": "policy.yaml", "plan": items}, c)
    readable(buf.getvalue(), width, [i["reason"] for i in items])
    res = {"outcome": "failed", "rolled_back": ["ens1f0np0"], "warnings": [],
           "steps": [{**items[0], "status": "done", "mode": "native"}],
           "failed": [{**items[1], "status": "failed", "error": "ens1f1np1: could not attach filter in any acceptable "
                       "mode at or above --min-mode native: native: mlx5_core: can't set XDP while HW-GRO/LRO is on "
                       "(EINVAL)"}]}
    c, buf = console(width)
    orch_render.apply_result(res, c, c)
    readable(buf.getvalue(), width, [res["failed"][0]["error"]])


def bench_doc(story: dict) -> dict:
    """The demo's bench with a window whose rx exceeded tx, and a skipped mode."""
    doc = copy.deepcopy(story["bench"])
    doc["results"][0]["loss"] = -0.0038
    doc["skipped"] = [{"mode": "hw", "reason": "the kernel reports no 'hw-offload' in demo4242-b0's xdp-features "
                                               "(veth); only offload-capable NICs (nfp, netdevsim) take hw mode"}]
    return doc


@pytest.mark.parametrize("width", WIDTHS)
def test_bench(story, width):
    doc = bench_doc(story)
    c, buf = console(width)
    bench_render.bench_result(doc, c)
    text = buf.getvalue()
    readable(text, width, [s["reason"] for s in doc["skipped"]] + doc["notes"])
    assert "-0.38" not in text and "0.38% more frames than were sent" in text   # clamped, and said why
    native, generic = (r["rx_pps"] for r in doc["results"])
    assert f"native/generic {native / generic:.2f}x" in text
    assert "program/interface rx count: native" in text
    assert "skipped" in text


def test_bench_ratio_line(story):
    line = bench_render.ratios(story["bench"])
    assert line.startswith("native/generic ") and "generic 1.00" in line


@pytest.mark.parametrize("width", WIDTHS)
def test_demo_story(story, width):
    c, buf = console(width)
    top_render.demo(story, c)
    text = buf.getvalue()
    fallbacks = [f["reason"] for r in story["attach"] for f in r["fallbacks"]]
    readable(text, width, fallbacks + [probe_render.top_reason(i) for i in story["probe"]["interfaces"]])
    assert "Peer MTU is too large to set XDP" in flat(text)
    a1 = story["attach"][1]["interface"]
    assert f"fallback: {a1} native -> generic" in text
    assert "native/generic" in text and story["plot"] in text and "removed" in text


@pytest.mark.parametrize("n,text", [(0, "0"), (950, "950"), (12_345, "12.3k"), (5_318_004, "5.32M"),
                                    (999_999, "1.00M"), (1_000, "1.00k"), (12_710_048_331, "12.7G")])
def test_count(n, text):
    assert probe_render.count(n) == text


@pytest.mark.parametrize("pps,text", [(6_347_888, "6.35"), (442_000, "0.442"), (12_300_000, "12.3"),
                                      (2_500_000, "2.50"), (1_000, "0.00"), (None, "-")])
def test_mpps(pps, text):
    assert probe_render.mpps(pps) == text


@pytest.mark.parametrize("width", WIDTHS)
def test_bench_with_loss_and_placement(story, width):
    """Two threads sharing one queue: the loss column is the xmit-error ratio, and a line says
    where the frames went (queues, CPUs, errors against tx - rx); the CSV carries the same."""
    doc = copy.deepcopy(story["bench"])
    doc["config"]["threads"] = 2
    nat = doc["results"][0]
    nat["loss_ratio"] = 0.148041
    for run in nat["runs"]:
        run.update({"loss_ratio": 0.148041, "loss_source": "xdp_xmit_errors", "xmit_errors": 2995511,
                    "tx_minus_rx": 2995456, "rx_queue_packets": {"0": 17070743},
                    "rx_cpus": {"0": 9848576, "1": 7390295},
                    "generator_cpus": [{"pinned": 0, "ran_on": [0]}, {"pinned": 1, "ran_on": [1]}]})
    c, buf = console(width)
    bench_render.bench_result(doc, c)
    text = flat(buf.getvalue())
    readable(buf.getvalue(), width, [])
    assert "15%" in text and "2 threads" in text
    n = len(nat["runs"])
    assert f"native: rx queues 0:100%; rx CPUs 0:57% 1:43%; generator CPUs 0,1; xmit errors " \
           f"{probe_render.count(2995511 * n)} (tx-rx {probe_render.count(2995456 * n)})" in text


def _apply_res(changed: int, kept: int) -> dict:
    step = {"rule": "pods", "reason": "matched", "also_matched": []}
    steps = [{**step, "interface": f"veth{i}", "action": "attach", "program": "count_drop", "mode": "native",
              "status": "done"} for i in range(changed)]
    steps += [{**step, "interface": f"kept{i}", "action": "keep", "program": "count_drop", "mode": "native",
               "status": "kept"} for i in range(kept)]
    failed = [{**step, "interface": "bad0", "action": "attach", "program": "count_drop", "mode": None,
               "status": "failed", "error": "bad0: could not attach count_drop in any acceptable mode"}]
    return {"outcome": "partial", "steps": steps, "failed": failed, "rolled_back": [], "warnings": [],
            "changed": changed}


def test_apply_summarises_many_interfaces_and_lists_them_with_verbose():
    """A thousand attaches: a count per kind of change, the failure in full, one summary line, no
    row for an unchanged interface; -v gives every interface its row."""
    res = _apply_res(changed=1000, kept=50)
    c, buf = console(100)
    orch_render.apply_result(res, c, c)
    text = buf.getvalue()
    assert "veth17" not in text and "kept3" not in text                      # no row per interface
    assert "1000" in text and "count_drop" in text                          # counted by kind
    assert "bad0 attach failed: bad0: could not attach" in text             # the failure, in full
    assert "partial: 1000 changed (1000 attached); 50 kept; 1 failed (-v lists every interface)" in text
    c, buf = console(100)
    orch_render.apply_result(res, c, c, verbose=True)
    text = buf.getvalue()
    assert all(f"veth{i} " in text for i in range(1000)) and all(f"kept{i} " in text for i in range(50))
    assert "-v lists" not in text


def test_apply_lists_a_few_changes_one_per_row():
    res = _apply_res(changed=3, kept=2)
    c, buf = console(100)
    orch_render.apply_result(res, c, c)
    text = buf.getvalue()
    assert all(f"veth{i} " in text for i in range(3)) and "kept0" not in text
    assert "partial: 3 changed (3 attached); 2 kept; 1 failed (-v lists every interface)" in text
