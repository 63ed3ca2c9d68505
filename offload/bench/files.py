"""Benchmark results as files: CSV (one row per run) and a PNG bar chart.

offload runs as root: an output path is checked before any work (its directory reached without
following links others control), and each file is written whole (a dot-file, renamed), so a
failure never leaves half a file and never writes through someone else's symlink."""

from __future__ import annotations

import csv
import importlib.util
import io
import os

from offload.errors import EnvironmentProblem, OffloadError, UsageError
from offload.kernel import fs

# matplotlib (with numpy and pillow: over half of the image) serves only --plot: an extra.
PLOT_EXTRA = "pip install 'offload[plot]'"


def can_plot() -> bool:
    """Whether matplotlib is installed (looked up, not imported: ~0.3 s)."""
    return importlib.util.find_spec("matplotlib") is not None


def check_plot(path: str, what: str = "--plot") -> None:
    """Fail now, before a run, if a chart was asked for and cannot be drawn or written."""
    if not can_plot():
        raise EnvironmentProblem(f"{what} {path}: drawing a chart needs matplotlib, which this offload was "
                                 "installed without (it is the optional extra `plot`)",
                                 hint=f"{PLOT_EXTRA}; the container image: scripts/build-image --with-plot")
    check_output(path, what)


def _where(path: str, what: str) -> tuple[int, str]:
    full = os.path.abspath(path)
    directory, name = os.path.split(full)
    if not name:
        raise UsageError(f"{what} {path!r}: a file name is needed")
    try:
        return fs.open_dir(directory), name
    except OffloadError as e:
        raise e.within(f"{what} {path!r}") from None


def check_output(path: str, what: str) -> None:
    """Fail now, before a run, if `path` cannot be written (a missing directory, a link of
    someone else's, a directory where the file should be, a read-only file system)."""
    fd, name = _where(path, what)
    try:
        fs.require_regular_or_absent(fd, name, f"{what} {path!r}")
        probe = f".{name}.{os.getpid()}.check"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd))
            os.unlink(probe, dir_fd=fd)
        except OSError as e:
            raise UsageError(f"{what} {path!r}: cannot write in {os.path.dirname(os.path.abspath(path))}: "
                             f"{e.strerror}", hint="choose a writable directory") from None
    finally:
        os.close(fd)


def _write(path: str, data: bytes) -> None:
    fs.replace_path(path, data)    # checked by check_output before the run


def write_csv(doc: dict, path: str) -> None:
    keys = ["mode", "generator", "run", "window_s", "tx_packets", "tx_pps", "rx_packets", "rx_pps",
            "iface_rx_packets", "loss", "loss_ratio", "loss_source", "xmit_errors", "tx_minus_rx",
            "accounting_diff", "harness_cpu_pct", "kernel_generator_cpu_pct", "rx_queue_packets", "rx_cpus"]
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in doc["results"]:
        for i, run in enumerate(r["runs"], 1):
            # per-queue and per-CPU counts as `key:count` pairs, one cell each
            flat = {k: " ".join(f"{q}:{n}" for q, n in run[k].items()) if isinstance(run.get(k), dict) else run.get(k)
                    for k in ("rx_queue_packets", "rx_cpus")}
            w.writerow({"mode": r["mode"], "generator": r["generator"], "run": i, **run, **flat})
    _write(path, f.getvalue().encode())


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
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    _write(path, png.getvalue())


def write_search_csv(doc: dict, path: str) -> None:
    """A search as CSV: one row per trial, with its mode and frame (the audit trail)."""
    keys = ["mode", "frame", "trial", "intended_load_pps", "duration_s", "intended_count", "tx_packets",
            "rx_packets", "loss_packets", "loss_ratio", "offered_load_pps", "offered_s", "lag_s",
            "generator_short", "wall_s"]
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in doc["results"]:
        for i, t in enumerate(r["trials"], 1):
            w.writerow({"mode": r["mode"], "frame": r["frame"], "trial": i, **t})
    _write(path, f.getvalue().encode())


def write_search_plot(doc: dict, path: str) -> None:
    """Per goal, Mpps and Gbit/s against frame size, one line per mode (IMIX as a marker at its
    mean size), and the line rate beside them when the link has a speed."""
    from offload.bench import trial   # its wire overhead (FCS, preamble, gap) for the line-rate curve
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    goals = [g["name"] for g in doc["config"]["goals"]]
    fig, axes = plt.subplots(2, len(goals), figsize=(5 * len(goals), 7), squeeze=False)
    speed = doc["config"].get("link_speed_mbps")
    for col, goal in enumerate(goals):
        for mode in dict.fromkeys(r["mode"] for r in doc["results"]):
            pts = sorted((r["mean_frame_bytes"], g["lower_bound_pps"], g["lower_bound_gbps"], r["frame"])
                         for r in doc["results"] if r["mode"] == mode
                         for g in r["goals"] if g["goal"] == goal and g["lower_bound_pps"] is not None)
            for row, idx, scale in ((0, 1, 1e6), (1, 2, 1)):
                axes[row][col].plot([p[0] for p in pts], [p[idx] / scale for p in pts], marker="o", label=mode)
        if speed:
            sizes = sorted({r["mean_frame_bytes"] for r in doc["results"]})
            axes[0][col].plot(sizes, [speed / ((s + trial.WIRE_OVERHEAD) * 8) for s in sizes], "k--", label="line rate")
            axes[1][col].axhline(speed / 1e3, color="k", linestyle="--", label="line rate")
        axes[0][col].set_title(f"{goal}: {doc['config']['program']}, {doc['config']['generator']}")
        axes[0][col].set_ylabel("Mpps (lower bound)")
        axes[1][col].set_ylabel("Gbit/s on the wire")
        axes[1][col].set_xlabel("frame bytes (without FCS; IMIX at its mean)")
        for row in (0, 1):
            axes[row][col].legend()
            axes[row][col].set_ylim(bottom=0)
    fig.suptitle(f"kernel {doc['host']['kernel']}")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    _write(path, png.getvalue())
