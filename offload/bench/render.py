"""Human output of benchmarks: the results table, skipped modes and notes (the JSON is the contract)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from offload.probe.render import Col, Notes, count, fit, mpps, say, say_parts


def _pct(x: float) -> str:
    return f"{x:.2%}" if x < 0.1 else f"{x:.0%}"


def _loss(r: dict, notes: Notes) -> tuple[str, str]:
    """The loss cell: frames the tx driver failed to hand over (its xmit errors) where it counts
    them, else tx - rx, never negative: rx above tx is the window's edges, not packets from nowhere."""
    if r.get("loss_ratio") is not None and any(run.get("loss_source") == "xdp_xmit_errors" for run in r["runs"]):
        return _pct(r["loss_ratio"]), ""
    loss = r["loss"]
    if loss is None:
        return "-", ""
    if loss < 0:
        return "0%", notes.ref(f"{r['mode']}: the program counted {-loss:.2%} more frames than were sent in the "
                                "window (the live-frames tx count is interpolated at the window's edges); loss "
                                "shown as 0 (--count gives exact figures)")
    return _pct(loss), ""


def _shares(counts: dict[str, int] | None, label: str) -> str:
    total = sum(counts.values()) if counts else 0
    if not total:
        return ""
    return f"{label} " + " ".join(f"{k}:{n / total:.0%}" for k, n in sorted(counts.items(), key=lambda kv: int(kv[0])))


def _sum_runs(r: dict, key: str) -> dict[str, int] | None:
    acc: dict[str, int] = {}
    for run in r["runs"]:
        for k, n in (run.get(key) or {}).items():
            acc[k] = acc.get(k, 0) + n
    return acc or None


def placement_parts(r: dict) -> list[str]:
    """Where a mode's frames went, over its runs: rx queues, the CPUs the program ran on (the
    receive side's NAPI), the generators' CPUs, xmit errors against tx - rx."""
    parts = [p for p in (_shares(_sum_runs(r, "rx_queue_packets"), "rx queues"),
                         _shares(_sum_runs(r, "rx_cpus"), "rx CPUs")) if p]
    gens = [g for run in r["runs"] for g in run.get("generator_cpus") or []]
    if gens:
        parts.append("generator CPUs " + ",".join(str(c) for c in sorted({c for g in gens for c in g["ran_on"]})))
    errs = [run["xmit_errors"] for run in r["runs"] if run.get("xmit_errors") is not None]
    if errs:
        tx_rx = [run["tx_minus_rx"] for run in r["runs"] if run.get("tx_minus_rx") is not None]
        parts.append(f"xmit errors {count(sum(errs))} (tx-rx {count(max(sum(tx_rx), 0))})")
    return parts


def bench_result(doc: dict, console: Console) -> None:
    cfg = doc["config"]
    threads = f"{cfg['threads']} thread" + ("s" if cfg["threads"] > 1 else "")
    say(console, f"{escape(cfg['program'])} on {escape(cfg['rx'])}: {cfg['generator']}, {cfg['pkt_size']} B, "
                 f"{threads}, kernel {escape(doc['host']['kernel'])}")
    notes = Notes()
    rows = []
    for r in doc["results"]:
        spread = r.get("rx_pps_spread")
        cpu = [run.get("harness_cpu_pct") for run in r["runs"] if run.get("harness_cpu_pct") is not None]
        loss, ref = _loss(r, notes)
        rows.append([Text(r["mode"], style="bold"), mpps(r["tx_pps"]), mpps(r["rx_pps"]),
                     f"{mpps(spread[0])}-{mpps(spread[1])}" if spread and r["tx_pps"] is not None else "-",
                     loss, count(r["rx_packets"]), count(r["iface_rx_packets"]),
                     f"{max(cpu):.1f}%" if cpu else "-", ref])
    for s in doc["skipped"]:
        rows.append([s["mode"], Text("skipped", style="yellow"), "", "", "", "", "", "",
                     notes.ref(f"{s['mode']} skipped: {s['reason']}")])
    cols = [Col("mode"), Col("tx Mpps", "right"), Col("rx Mpps", "right"), Col("rx min-max", "right", drop=2),
            Col("loss", "right"), Col("rx pkts", "right"), Col("iface rx", "right"), Col("py cpu", "right", drop=1),
            Col("note")]
    console.print(fit(console, cols, rows))
    if parts := ratio_parts(doc):   # wrapped between parts, each continuation indented
        say_parts(console, "", parts, indent=2)
    for r in doc["results"]:
        if parts := placement_parts(r):
            say_parts(console, f"{r['mode']}: ", parts)
    for n in doc["notes"]:
        notes.ref(n)
    notes.print(console)


def ratios(doc: dict) -> str:
    """The ratios as one line (see ratio_parts)."""
    return "; ".join(ratio_parts(doc))


def ratio_parts(doc: dict) -> list[str]:
    """native/generic (and hw/native) received rate; the program's count against the
    interface's own rx counter, per mode (1.000: they saw the same frames)."""
    by = {r["mode"]: r for r in doc["results"]}
    parts = [f"{a}/{b} {by[a]['rx_pps'] / by[b]['rx_pps']:.2f}x" for a, b in (("hw", "native"), ("native", "generic"))
             if a in by and b in by and by[a]["rx_pps"] and by[b]["rx_pps"]]
    acct = [f"{r['mode']} {r['rx_packets'] / r['iface_rx_packets']:.3f}" for r in doc["results"]
            if r["rx_packets"] is not None and r["iface_rx_packets"]]
    if acct:
        parts.append("program/interface rx count: " + ", ".join(acct))
    return parts


def prog_cost(res: dict, console: Console) -> None:
    say(console, f"{escape(res['program'])}: {res['ns_per_packet']} ns/packet (median of {len(res['runs_ns'])} x "
                 f"{res['iterations']:,} runs, {res['pkt_size']}-byte frame)")


def search_result(doc: dict, console: Console) -> None:
    """One row per mode, frame size and goal: the lower bound in Mpps and Gbit/s, the bracket,
    what limited it, and the search's cost."""
    cfg = doc["config"]
    goals = ", ".join(g["name"] + (f" (loss <= {g['loss_ratio']:g})" if g["loss_ratio"] else "")
                      for g in cfg["goals"])
    say(console, f"{escape(cfg['program'])} on {escape(cfg['rx'])}: {escape(goals)}; {cfg['generator']}, "
                 f"{cfg['final_trial_s']:g} s trials")
    notes = Notes()
    rows = []
    for r in doc["results"]:
        ref = notes.ref(f"{r['mode']} {r['frame']}: {r['error']}") if r.get("error") else ""
        cost = f"{r['trials_run']} in {r['wall_s']:.0f}s"
        for g in r["goals"] or [{"goal": "-", "lower_bound_pps": None, "upper_bound_pps": None,
                                 "lower_bound_gbps": None, "limited_by": ""}]:
            gbps = g["lower_bound_gbps"]
            rows.append([Text(r["mode"], style="bold"), r["frame"], g["goal"], mpps(g["lower_bound_pps"]),
                         mpps(g["upper_bound_pps"]), "-" if gbps is None else f"{gbps:.2f}", g["limited_by"], cost,
                         ref])
    for s in doc["skipped"]:
        rows.append([s["mode"], "", Text("skipped", style="yellow"), "", "", "", "", "",
                     notes.ref(f"{s['mode']} skipped: {s['reason']}")])
    # Mpps is the lower bound (the rate the goal was met at), upper the lowest load that missed it
    cols = [Col("mode"), Col("frame"), Col("goal"), Col("Mpps", "right"), Col("upper", "right"),
            Col("Gbit/s", "right", drop=1), Col("limit"), Col("trials", "right", drop=2), Col("note")]
    console.print(fit(console, cols, rows))
    short = sum(r.get("generator_short_trials", 0) for r in doc["results"])
    if short:
        notes.ref(f"{short} trial(s) could not be offered at their load (the generator fell behind): they "
                  "bound the search from above as not offered, never as the device's loss; `limit: generator` "
                  "means the bracket's top is the generator's")
    for n in doc["notes"]:
        notes.ref(n)
    notes.print(console)


def _arm(arm: dict) -> str:
    params = " ".join(f"{k}={v}" for k, v in arm["params"].items())
    return f"{arm['program']}{' ' + params if params else ''}"


def compare_result(doc: dict, console: Console) -> None:
    """Both arms' medians and spread, then one line: the ratio B/A, its interval, the verdict."""
    cfg = doc["config"]
    say(console, f"{escape(cfg['rx'])}: {cfg['pairs']} trials each, A B B A ..., {cfg['duration']:g} s windows, "
                 f"{cfg['generator']}, {cfg['pkt_size']} B")
    rows = []
    for name, key in (("A", "a"), ("B", "b")):
        rates = [t["rx_pps"] for t in doc["trials"] if t["arm"] == name]
        rows.append([Text(name, style="bold"), escape(_arm(doc[key])), doc[key]["mode"],
                     mpps(doc[f"median_{key}_pps"]), f"{mpps(min(rates))}-{mpps(max(rates))}" if rates else "-",
                     str(len(rates))])
    cols = [Col("arm"), Col("program"), Col("mode"), Col("median Mpps", "right"), Col("min-max", "right", drop=1),
            Col("trials", "right", drop=2)]
    console.print(fit(console, cols, rows))
    if doc["verdict"] is None:
        console.print("[yellow]no conclusion: fewer than 2 pairs of trials with a rate[/]")
    else:
        lo, hi = doc["interval"]
        style = {"faster": "green", "slower": "red"}.get(doc["verdict"], "")
        verdict = f"[{style}]{doc['verdict']}[/]" if style else doc["verdict"]
        said = f"B is {verdict}" if doc["verdict"] != "no significant difference" else verdict
        of = " of the rates per CPU-second" if doc.get("metric") == "rx_per_cpu_s" else ""
        say(console, f"B/A{of} {doc['ratio']:.3f} ({cfg['level']:.0%} interval {lo:.3f}-{hi:.3f}): {said}")
    notes = Notes()
    for n in doc["notes"]:
        notes.ref(n)
    notes.print(console)
