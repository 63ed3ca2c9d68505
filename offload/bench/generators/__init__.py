"""Packet generators the harness drives: the kernel's pktgen, and live-frames BPF_PROG_RUN where
pktgen is absent. Both transmit from the kernel; Python only configures and samples them.

May import: `offload.kernel`, `offload.errors`.
"""
