"""Output never cut (issue 21): at 80 columns no `…`, no cell cut, no trailing space, and text
that wraps continues indented under its own start. Each table and each line of prose the
commands print, rendered with a Console of the terminal's width (the tmux check of the real
command is tests/integration/test_terminal_width.py)."""

from __future__ import annotations

import copy
import json
import re

import pytest
from lib.helpers import FIXTURES
from rich.text import Text
from test_render import console, flat, readable

from offload import render as top_render
from offload.bench import render as bench_render
from offload.load import render as load_render
from offload.orchestrate import render as orch_render
from offload.probe import profiles as profiles_mod
from offload.probe import render as probe_render

WIDTH = 80
LONG_PATH = "/srv/xdp/programs/" + "a-very-long-directory-name/" * 4 + "my_filter.bpf.o"   # > 80 columns
HW_REASON = ("the kernel reports no 'hw-offload' in demo4242-a0's xdp-features (veth); only offload-capable NICs "
             "(nfp, netdevsim) take hw mode: use native or generic")


def render(fn, width: int = WIDTH) -> str:
    c, buf = console(width)
    fn(c)
    return buf.getvalue()


def whole(value: str, text: str) -> bool:
    """`value` is in `text` with nothing left out: a folded word is whole once the breaks go."""
    return "".join(value.split()) in "".join(text.split())


def continuations(text: str, first: str) -> list[str]:
    """The lines that continue the line starting with `first` (up to the next unindented one)."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(first))
    out = []
    for ln in lines[start + 1:]:
        if not ln.startswith(" "):
            break
        out.append(ln)
    return out


# ---- tables ------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", (80, 120))
def test_profiles_table_cuts_nothing(width):
    doc = profiles_mod.listing(None)
    text = render(lambda c: probe_render.profiles(doc, c, c), width)
    readable(text, width, [])
    lines = text.splitlines()
    rule = next(i for i, ln in enumerate(lines) if ln.startswith("───"))
    header = [c.strip() for c in re.split(r"\s{2,}", lines[rule - 1].strip())]
    assert header == ["driver", "native", "zero-copy", "hw-offload", "multi-buffer", "native MTU"]
    table = lines[rule + 1:]
    assert len(table) == len(doc["profiles"])
    for row, line in zip(doc["profiles"], table):
        cells = line.split()
        assert cells[0] == row["driver"]   # whole: fsl_dpaa2_eth is no fsl_dpaa2_e…
        expect = [str(row[k]) if row[k] is not None else "-" for k, _ in probe_render.PROFILE_COLUMNS]
        assert cells == expect, line


def test_profiles_problems_go_to_stderr_whole():
    doc = {"profiles": [], "problems": [{"file": LONG_PATH, "field": "xdp.native.since", "message": "not a version"}]}
    out, out_buf = console(WIDTH)
    err, err_buf = console(WIDTH)
    probe_render.profiles(doc, out, err)
    assert "driver profiles (0 valid)" in out_buf.getvalue()
    assert whole(LONG_PATH, err_buf.getvalue()) and "not a version" in err_buf.getvalue()


def test_a_cell_wider_than_the_terminal_wraps_never_cuts():
    rows = [["demo-a1", "generic", LONG_PATH, "[1]"], ["ens1f0np0", "native", "count_drop", "[2]"]]
    cols = [probe_render.Col("interface"), probe_render.Col("mode"), probe_render.Col("program"),
            probe_render.Col("why")]
    text = render(lambda c: c.print(probe_render.fit(c, cols, rows)))
    readable(text, WIDTH, [])
    assert whole(LONG_PATH, text.replace("[1]", ""))   # folded inside its column, every character kept
    assert "count_drop" in text and "ens1f0np0" in text and "[1]" in text


def test_programs_lines_carry_no_padding():
    from offload.load import programs

    rows = programs.catalogue()
    text = render(lambda c: load_render.programs({"programs": rows}, c))
    readable(text, WIDTH, [r["summary"] for r in rows])
    assert text.splitlines()[0] == "program     params    what"


# ---- prose: wrapped under its own start ---------------------------------------------------------

def test_attach_hw_note_wraps_under_its_reason():
    res = {"interface": "demo4242-a0", "mode": "native", "prog_id": 7, "program": LONG_PATH, "replaced": None,
           "warnings": [], "fallbacks": [{"mode": "hw", "reason": HW_REASON}]}
    text = render(lambda c: load_render.attach_result(res, c, c))
    readable(text, WIDTH, [HW_REASON])
    more = continuations(text, "hw: ")
    assert more and all(ln.startswith("    ") and ln[4] != " " for ln in more), text
    assert whole(LONG_PATH, text) and "in native mode (prog id 7)" in flat(text)


def bench_with_placement() -> dict:
    story = json.loads((FIXTURES / "demo-story.json").read_text())
    doc = copy.deepcopy(story["bench"])
    doc["config"]["threads"] = 4
    for run in doc["results"][0]["runs"]:
        run.update({"loss_source": "xdp_xmit_errors", "xmit_errors": 2995511, "tx_minus_rx": 2995456,
                    "rx_queue_packets": {"0": 17070743, "1": 5, "2": 7, "3": 9},
                    "rx_cpus": {"0": 9848576, "1": 7390295},
                    "generator_cpus": [{"pinned": c, "ran_on": [c]} for c in range(4)]})
    return doc


def test_bench_footer_wraps_between_parts_indented():
    doc = bench_with_placement()
    text = render(lambda c: bench_render.bench_result(doc, c))
    readable(text, WIDTH, [])
    more = continuations(text, "native: ")
    assert more and all(ln.startswith(" " * len("native: ")) for ln in more), text
    assert re.search(r"\(tx-rx [0-9.]+[kMG]?\)", text), text   # the parenthesis on one line
    for part in bench_render.placement_parts(doc["results"][0]):
        assert part in text.replace("\n" + " " * len("native: "), " ") or part in text


def test_bench_ratio_line_wraps_indented():
    doc = bench_with_placement()
    doc["results"].append({**copy.deepcopy(doc["results"][0]), "mode": "hw"})
    text = render(lambda c: bench_render.bench_result(doc, c), 60)
    readable(text, 60, [])
    more = continuations(text, "hw/native ")
    assert more and all(ln.startswith("  ") for ln in more), text


@pytest.mark.parametrize("show", [
    lambda c: load_render.stats({"interface": "demo4242-b0", "mode": "generic", "program": LONG_PATH, "prog_id": 9,
                                 "counters": "prog_info", "run_cnt": 12, "run_time_ns": 3400,
                                 "note": "the program keeps no per-action counters: " + HW_REASON}, c),
    lambda c: load_render.detach_result({"interface": LONG_PATH, "detached": {"prog_id": 5, "mode": "hw"}}, c),
    lambda c: load_render.gc_result({"dry_run": True, "freed": [{"netns": "offload-lab-demo4242", "interface": "a0",
                                                                 "reason": HW_REASON}],
                                     "renamed": [], "recovered": [], "warnings": []}, c, c),
    lambda c: load_render.filter_result({"interface": "a0", "prefixes": [f"10.{i}.0.0/16" for i in range(40)]}, c),
    lambda c: bench_render.prog_cost({"program": LONG_PATH, "ns_per_packet": 31.4, "runs_ns": [1, 2, 3],
                                      "iterations": 1_000_000, "pkt_size": 64}, c),
    lambda c: orch_render.export_nfd({"labels": {"a": "b"}, "path": LONG_PATH, "counted": ["x"], "ignored": [],
                                      "warnings": [HW_REASON]}, c),
    lambda c: orch_render.export_prometheus({"samples": 12, "path": LONG_PATH}, c),
    lambda c: top_render.lab_up({"name": "demo4242", "netns": "offload-lab-demo4242", "mtu": 1500,
                                 "pairs": [{"a": f"demo4242-a{i}", "b": f"demo4242-b{i}"} for i in range(12)]}, c),
    lambda c: probe_render.warnings([HW_REASON], c),
], ids=["stats-note", "detach", "gc", "filter", "bench-prog", "export-nfd", "export-prometheus", "lab-up", "warning"])
def test_prose_wraps_indented(show):
    text = render(show)
    readable(text, WIDTH, [])
    lines = text.splitlines()
    assert len(lines) > 1 or len(text) <= WIDTH
    for a, b in zip(lines, lines[1:]):   # a continuation starts right of the line it continues
        if b.startswith(" ") and not a.startswith(" "):
            assert len(b) - len(b.lstrip()) >= 2, text


def test_probe_detail_at_80(shipped_profiles):
    from lib.helpers import load_fixture

    from offload.probe.report import report

    profs, problems = shipped_profiles
    host, devs = load_fixture("mlx5_core-6.8")
    rep = report(host, list(devs.values()), profs, problems)
    text = render(lambda c: probe_render.probe_detail(rep, c))
    reasons = [r for i in rep["interfaces"] for m in i["modes"].values() for r in m["reasons"]]
    readable(text, WIDTH, reasons)
    for ln in text.splitlines():   # every line of an interface's block is indented under its header
        assert ln.startswith(("  ", "─")), ln


# ---- the wrapping primitive ------------------------------------------------------------------------

def test_hang_breaks_a_long_word_and_keeps_every_character():
    word = "x" * 130
    out = probe_render.hang(Text(f"path {word} end"), 40, 4)
    lines = out.plain.split("\n")
    assert all(len(ln) <= 40 for ln in lines)
    assert all(ln.startswith("    ") for ln in lines[1:])
    assert "".join(out.plain.split()) == f"path{word}end"


def test_hang_keeps_styles_and_glued_spans():
    text = Text.from_markup("[yellow]hw:[/] " + "word " * 12 + "(tx-rx 8.99M) tail")
    out = probe_render.hang(text, 30, 4)
    assert out.plain.startswith("hw: ")
    assert any(str(s.style) == "yellow" and out.plain[s.start:s.end] == "hw:" for s in out.spans)
    assert "(tx-rx 8.99M)" in out.plain.split("\n")[-1] or any("(tx-rx 8.99M)" in ln for ln in out.plain.split("\n"))
    glued = probe_render.hang(Text("aaaa bbbb cccc dddd"), 12, 2, glue=[(5, 14)])
    assert glued.plain == "aaaa\n  bbbb cccc\n  dddd"


def test_hang_keeps_explicit_newlines():
    out = probe_render.hang(Text("first line\nsecond line that is long enough to wrap"), 20, 2)
    assert out.plain == "first line\nsecond line that is\n  long enough to\n  wrap"


# ---- progress: the time ticks within a step ---------------------------------------------------------

def test_the_status_line_ticks_within_a_step():
    now = [100.0]
    line = top_render.Elapsed(clock=lambda: now[0])
    line.step = "demo4242-b0: native run 1/3"
    assert render(lambda c: c.print(line)).strip() == "[0:00] demo4242-b0: native run 1/3"
    now[0] += 7.9   # no new step: the line is rendered again at the status's next refresh
    assert render(lambda c: c.print(line)).strip() == "[0:07] demo4242-b0: native run 1/3"
    now[0] += 3600
    assert render(lambda c: c.print(line)).strip().startswith("[60:07] ")


def test_status_of_every_namespace_at_80():
    from test_render import STATUS

    res = {"namespaces": [STATUS, {**STATUS, "netns": "offload-lab-other", "attachments": STATUS["attachments"][:1]}],
           "orphans": [{"netns": "offload-lab-gone1234", "interface": "gone1234-a0", "reason": HW_REASON}],
           "renamed": [{"netns": "offload-lab-demo4242", "interface": "demo4242-a9", "now": "renamed-a9"}],
           "recovered": []}
    text = render(lambda c: load_render.status_all(res, c, c))
    readable(text, WIDTH, [HW_REASON])
    assert "offload-lab-other" in text and "orphans (offload gc frees them)" in text
    assert "would follow offload-lab-demo4242/demo4242-a9 -> renamed-a9 (renamed)" in text


def test_lab_list_and_down_at_80():
    doc = {"labs": [{"name": f"lab{i}", "netns": f"offload-lab-lab{i}", "pairs": [{"a": "x", "b": "y"}] * 3,
                     "mtu": 9000} for i in range(3)]}
    text = render(lambda c: (top_render.lab_list(doc, c), top_render.lab_removed({"name": "lab0", "removed": True}, c)))
    readable(text, WIDTH, [])
    assert "lab2: namespace offload-lab-lab2, 3 pair(s), MTU 9000" in text and "lab lab0: removed" in text
