"""Benchmarks: kernel-side generators (pktgen, live-frames BPF_PROG_RUN) in `generators/`, the
harness that attaches the program under test per mode and reads its counters over a measured
window, and the result files (JSON/CSV/plot) and tables.

May import: `offload.load`, `offload.probe`, `offload.kernel`, `offload.errors`.
"""
