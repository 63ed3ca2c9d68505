"""Fleet exports: a Node Feature Discovery feature file and node-exporter textfile metrics."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from offload.errors import OffloadError
from offload.kernel import netns
from offload.load import pins, stats
from offload.probe import modes
from offload.probe.report import assess

NFD_DEFAULT = "/etc/kubernetes/node-feature-discovery/features.d/offload"
PROM_DEFAULT = "/var/lib/node_exporter/textfile_collector/offload.prom"
PREFIX = "offload.xdp"   # a label namespace of our own: NFD keeps it as is


def _atomic_write(path: str, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


def nfd_labels() -> dict[str, str]:
    _, assessed = assess(include_loopback=False)
    best = None
    labels: dict[str, str] = {}
    for a in assessed:
        d, rec = a.facts, modes.recommend(a.verdicts)["mode"]
        best = modes.better(best, rec)
        if rec in (modes.Mode.HW, modes.Mode.NATIVE) and d.driver:
            labels[f"{PREFIX}/driver.{d.driver}"] = "true"
        if rec == "hw":
            labels[f"{PREFIX}/hw-offload"] = "true"
        if rec == "native":
            labels[f"{PREFIX}/native"] = "true"
    labels[f"{PREFIX}/best-mode"] = best or "none"
    return dict(sorted(labels.items()))


def export_nfd(path: str = NFD_DEFAULT) -> dict:
    labels = nfd_labels()
    _atomic_write(path, "".join(f"{k}={v}\n" for k, v in labels.items()))
    return {"path": path, "labels": labels}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(bench_json: str | None = None) -> str:
    lines = ["# HELP offload_xdp_attached An XDP program offload attached (1), by interface, mode and program.",
             "# TYPE offload_xdp_attached gauge"]
    packets, nbytes = [], []
    for slot in pins.slots(netns.current_name()):
        meta = slot.meta()
        if not meta:
            continue
        lbl = f'interface="{_esc(slot.iface)}",mode="{meta["mode"]}",program="{_esc(meta["program"])}"'
        lines.append(f"offload_xdp_attached{{{lbl}}} 1")
        try:
            s = stats.read(slot.iface)
        except (OffloadError, OSError):
            continue
        if s["counters"] != "offload":  # a user's object: no per-action counters to export
            continue
        for action, n in s["packets"].items():
            packets.append(f'offload_xdp_packets_total{{interface="{_esc(slot.iface)}",action="{action}"}} {n}')
            nbytes.append(f'offload_xdp_bytes_total{{interface="{_esc(slot.iface)}",action="{action}"}} '
                          f'{s["bytes"][action]}')
    lines += ["# HELP offload_xdp_packets_total Packets seen by offload's program, by XDP action.",
              "# TYPE offload_xdp_packets_total counter", *packets,
              "# HELP offload_xdp_bytes_total Bytes seen by offload's program, by XDP action.",
              "# TYPE offload_xdp_bytes_total counter", *nbytes]
    if bench_json:
        doc = json.loads(Path(bench_json).read_text())
        lines += ["# HELP offload_bench_rx_pps Received packets per second in the last offload bench, by mode.",
                  "# TYPE offload_bench_rx_pps gauge"]
        for r in doc["results"]:
            lines.append(f'offload_bench_rx_pps{{mode="{r["mode"]}",generator="{r["generator"]}",'
                         f'program="{_esc(doc["config"]["program"])}"}} {r["rx_pps"] or 0}')
    lines += ["# HELP offload_export_timestamp_seconds When this file was written.",
              "# TYPE offload_export_timestamp_seconds gauge", f"offload_export_timestamp_seconds {time.time():.3f}"]
    return "\n".join(lines) + "\n"


def export_prometheus(path: str = PROM_DEFAULT, bench_json: str | None = None) -> dict:
    text = prometheus_text(bench_json)
    _atomic_write(path, text)
    return {"path": path, "lines": text.count("\n")}
