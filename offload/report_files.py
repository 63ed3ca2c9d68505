"""Benchmark results as a table, CSV (one row per run) and a PNG bar chart."""

from __future__ import annotations

import csv


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v < 1:
        return f"{v:.2%}"
    return f"{v:,.0f}" if isinstance(v, (int, float)) else str(v)


def print_table(doc: dict, console) -> None:
    from rich.table import Table

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


def write_csv(doc: dict, path: str) -> None:
    keys = ["mode", "generator", "run", "window_s", "tx_packets", "tx_pps", "rx_packets", "rx_pps",
            "iface_rx_packets", "loss", "accounting_diff", "harness_cpu_pct", "kernel_generator_cpu_pct"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in doc["results"]:
            for i, run in enumerate(r["runs"], 1):
                w.writerow({"mode": r["mode"], "generator": r["generator"], "run": i, **run})


def write_plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in doc["results"] if r.get("rx_pps")]
    names = [r["mode"] for r in results]
    med = [r["rx_pps"] / 1e6 for r in results]
    lo = [(r["rx_pps"] - r["rx_pps_spread"][0]) / 1e6 for r in results]
    hi = [(r["rx_pps_spread"][1] - r["rx_pps"]) / 1e6 for r in results]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(names, med, yerr=[lo, hi], capsize=6, color=["#4c72b0", "#55a868", "#c44e52"][: len(names)])
    cfg = doc["config"]
    ax.set_ylabel("received Mpps (median, min-max)")
    ax.set_title(f"{cfg['program']}, {cfg['pkt_size']}-byte frames, {cfg['generator']}\nkernel {doc['host']['kernel']}")
    for i, v in enumerate(med):
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
