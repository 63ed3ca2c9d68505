"""Benchmark results as files: CSV (one row per run) and a PNG bar chart."""

from __future__ import annotations

import csv


def write_csv(doc: dict, path: str) -> None:
    keys = ["mode", "generator", "run", "window_s", "tx_packets", "tx_pps", "rx_packets", "rx_pps",
            "iface_rx_packets", "loss", "loss_ratio", "loss_source", "xmit_errors", "tx_minus_rx",
            "accounting_diff", "harness_cpu_pct", "kernel_generator_cpu_pct", "rx_queue_packets", "rx_cpus"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in doc["results"]:
            for i, run in enumerate(r["runs"], 1):
                # per-queue and per-CPU counts as `key:count` pairs, one cell each
                flat = {k: " ".join(f"{q}:{n}" for q, n in run[k].items()) if isinstance(run.get(k), dict) else run.get(k)
                        for k in ("rx_queue_packets", "rx_cpus")}
                w.writerow({"mode": r["mode"], "generator": r["generator"], "run": i, **run, **flat})


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
    threads = cfg.get("threads", 1)
    ax.set_title(f"{cfg['program']}, {cfg['pkt_size']}-byte frames, {cfg['generator']} x{threads}\n"
                 f"kernel {doc['host']['kernel']}")
    ax.margins(y=0.15)   # room for the labels above the bars
    for i, (v, r) in enumerate(zip(med, results)):
        loss = r.get("loss_ratio")
        ax.text(i, v, f"{v:.2f}" + (f"\nloss {loss:.2%}" if loss is not None else ""), ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
