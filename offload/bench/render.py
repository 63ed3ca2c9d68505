"""Human output of benchmarks: the results table, skipped modes and notes (the JSON is the contract)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v < 1:
        return f"{v:.2%}"
    return f"{v:,.0f}" if isinstance(v, (int, float)) else str(v)


def bench_result(doc: dict, console: Console) -> None:
    cfg = doc["config"]
    t = Table(title=f"{cfg['program']} on {cfg['rx']} ({cfg['generator']}, {cfg['pkt_size']}-byte frames, "
                    f"{cfg['threads']} thread(s), kernel {doc['host']['kernel']})")
    for c in ("mode", "tx pps", "rx pps", "rx spread", "loss", "rx packets", "iface rx packets", "harness cpu"):
        t.add_column(c, justify="right")
    for r in doc["results"]:
        spread = r.get("rx_pps_spread")
        cpu = [run.get("harness_cpu_pct") for run in r["runs"] if run.get("harness_cpu_pct") is not None]
        t.add_row(r["mode"], _fmt(r["tx_pps"]), _fmt(r["rx_pps"]),
                  f"{spread[0]:,.0f}-{spread[1]:,.0f}" if spread else "-", _fmt(r["loss"]),
                  _fmt(r["rx_packets"]), _fmt(r["iface_rx_packets"]), f"{max(cpu):.1f}%" if cpu else "-")
    console.print(t)
    for s in doc["skipped"]:
        console.print(f"[yellow]skipped {s['mode']}:[/] {escape(s['reason'])}")
    for n in doc["notes"]:
        console.print(f"[dim]note: {escape(n)}[/]")


def prog_cost(res: dict, console: Console) -> None:
    console.print(f"{escape(res['program'])}: {res['ns_per_packet']} ns/packet (median of {len(res['runs_ns'])} x "
                  f"{res['iterations']:,} runs, {res['pkt_size']}-byte frame)")
