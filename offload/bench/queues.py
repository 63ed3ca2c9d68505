"""Where frames went, per queue and per CPU: pure arithmetic over counter snapshots taken before
and after a run (the driver's statistics of both devices, the program's per-CPU counters).

Loss is read where it happens: a driver that counts failed XDP transmits per queue (veth's
`tx_queue_N_xdp_xmit_errors`: the peer's rx ring was full) says how many frames the generator
sent that the receiver never saw, and tx - rx cross-checks it.
"""

from __future__ import annotations

from offload.kernel.ethstats import split_queues

# Per-queue statistic names for XDP transmit, transmit failures and received frames, in the
# spellings drivers use (veth first); the first one a driver has is used.
XMIT_KEYS = ("xdp_xmit",)
XMIT_ERROR_KEYS = ("xdp_xmit_errors", "xdp_xmit_err")
RX_KEYS = ("xdp_packets", "packets")


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before[k] for k, v in after.items() if k in before}


def _first(stats: dict[str, int], keys: tuple[str, ...]) -> int | None:
    return next((stats[k] for k in keys if k in stats), None)


def ratio(part: int | None, whole: int | None) -> float | None:
    return round(part / whole, 6) if part is not None and whole else None


def cpu_seconds(before_ns: int | None, after_ns: int | None) -> float | None:
    """CPU time between two readings of a CPU-time clock (ns), or None when either is missing or
    the clock did not advance (a thread had ended: no rate can be made of it)."""
    return (after_ns - before_ns) / 1e9 if before_ns is not None and after_ns is not None \
        and after_ns > before_ns else None


def per_cpu_second(frames: float, cpu_s: float | None) -> int | None:
    """Frames per second of CPU time: the one rate trial, harness and compare all report."""
    return round(frames / cpu_s) if cpu_s else None


def queue_view(tx_delta: dict[str, int], rx_delta: dict[str, int]) -> dict:
    """Per-queue counts over a run: the tx device's transmit queues, the rx device's receive queues.

    `xmit`/`xmit_errors` are None when the tx driver keeps no such per-queue counts, and
    `rx_queue_packets` when the rx driver keeps no per-queue receive counts."""
    txq = split_queues(tx_delta).queues["tx"]
    rxq = split_queues(rx_delta).queues["rx"]
    xmit = [_first(txq[q], XMIT_KEYS) for q in sorted(txq)]
    errs = [_first(txq[q], XMIT_ERROR_KEYS) for q in sorted(txq)]
    rx = {q: _first(rxq[q], RX_KEYS) for q in sorted(rxq)}
    changed = sorted(q for q in set(txq) | set(rxq) if any(txq.get(q, {}).values()) or any(rxq.get(q, {}).values()))
    return {
        "xmit": sum(xmit) if xmit and None not in xmit else None,
        "xmit_errors": sum(errs) if errs and None not in errs else None,
        "rx_queue_packets": {str(q): n for q, n in rx.items() if n} if rx and None not in rx.values() else None,
        # every per-queue statistic that moved, in the driver's own names
        "queues": [{"queue": q, "tx": txq.get(q, {}), "rx": rxq.get(q, {})} for q in changed],
    }


def loss_fields(sent: int, received: int, view: dict) -> dict:
    """`loss_ratio`: frames the receiver never saw over frames sent, from the tx driver's xmit
    errors when it counts them (`loss_source` says which); `tx_minus_rx` cross-checks it.

    `sent` is what the tx device was handed: its own xmit + xmit_errors when it counts them (exact
    within a window), else the generator's count."""
    errors = view["xmit_errors"]
    tx_minus_rx = sent - received
    if errors is not None:
        return {"loss_ratio": ratio(errors, sent), "loss_source": "xdp_xmit_errors", "xmit_errors": errors,
                "tx_minus_rx": tx_minus_rx, "tx_minus_rx_ratio": ratio(tx_minus_rx, sent),
                # lost without an error counted (0 when the accounting adds up; window edges aside)
                "unexplained": tx_minus_rx - errors}
    return {"loss_ratio": ratio(max(tx_minus_rx, 0), sent), "loss_source": "tx-rx", "xmit_errors": None,
            "tx_minus_rx": tx_minus_rx, "tx_minus_rx_ratio": ratio(tx_minus_rx, sent), "unexplained": None}


def cpu_view(before: list[int] | None, after: list[int] | None) -> dict[str, int] | None:
    """Frames the program counted on each CPU (where the receive side's NAPI ran), nonzero only."""
    if before is None or after is None:
        return None
    return {str(c): a - b for c, (b, a) in enumerate(zip(before, after)) if a - b}
