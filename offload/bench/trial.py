"""One trial of a throughput search (RFC 2544 section 26.1, MLRsearch's "trial measurement"):
offer a load of L frames per second for D seconds, counted, then count what the program under
test received.

A trial sends an exact count (L x D frames, split over the generator threads) on the
generator's schedule and waits for the receiver to drain, so loss is exact: frames sent minus
frames the program counted. When the generator falls behind its schedule (it cannot offer L),
the trial is marked `generator_short`: its loss fields stay the DUT's own, and the search is
told that the frames it failed to offer in D were not offered (MLRsearch counts them against
the load, never against the device: a load that was not offered cannot be a lower bound).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from offload.bench import harness, queues
from offload.bench.frames import udp_frame

# CSIT's IMIX_v4_1: 28 x 64 B, 16 x 570 B, 4 x 1518 B, sizes on the wire with the FCS. offload's
# frame sizes are without the FCS (what the generator builds), so these are 4 bytes less.
IMIX_V4_1 = ((64, 28), (570, 16), (1518, 4))
FCS = 4
WIRE_OVERHEAD = FCS + 20        # FCS, preamble + start delimiter (8) and the inter-frame gap (12)
# A generator that fell this far behind its schedule did not offer its load: 2% of the
# trial's duration, plus a scheduler's slack for the thread's wake-up on a busy machine.
SHORT_TOLERANCE = 0.02
SHORT_SLACK_S = 0.05
# A short trial whose generator, by its own CPU time, could have sent this much above the load
# fell behind because other work took its CPU: the test equipment failed, not the device. It is
# kept, marked `disturbed`, and run again, at most RETRIES times.
CAPACITY_MARGIN = 0.05
RETRIES = 2
# The warm-up before a search: the generator flat out until its figure stops moving (its median
# over WARMUP_K windows against the WARMUP_K before, within WARMUP_TOLERANCE), so a search never
# starts on a lab still settling and its maximum load is not one window's luck.
WARMUP_K = 3
WARMUP_TOLERANCE = 0.05


def tolerated_lag(duration: float) -> float:
    """How late a generator may fall behind its schedule and still have offered its load."""
    return duration * SHORT_TOLERANCE + SHORT_SLACK_S


@dataclass(frozen=True)
class Frames:
    """What a trial sends: one size, or IMIX (sizes without FCS, weights)."""

    sizes: tuple[tuple[int, int], ...]
    label: str

    @property
    def mean_bytes(self) -> float:
        """Mean frame size without FCS."""
        return sum(s * w for s, w in self.sizes) / sum(w for _, w in self.sizes)

    def gbps(self, pps: float | None) -> float | None:
        """Bits per second an Ethernet wire carries at `pps` (FCS, preamble and gap included)."""
        return None if pps is None else round(pps * (self.mean_bytes + WIRE_OVERHEAD) * 8 / 1e9, 4)


def single(size: int) -> Frames:
    return Frames(((size, 1),), str(size))


def imix() -> Frames:
    return Frames(tuple((size - FCS, w) for size, w in IMIX_V4_1), "imix")


def generator_for(s: harness.Session, frames: Frames) -> harness._Generator:
    """The session's generator sending `frames` in their proportions."""
    if len(frames.sizes) == 1:
        s.spec.pkt_size = frames.sizes[0][0]
        return s.generator()
    src, dst = harness._mac(s.spec.tx), harness._mac(s.spec.rx)
    return s.generator(frames=[(udp_frame(size, src, dst), w) for size, w in frames.sizes],
                       imix=list(frames.sizes))


def calibrate(s: harness.Session, gen: harness._Generator, seconds: float) -> float:
    """The generator's own ceiling: frames per second it sends flat out (unpaced) for `seconds`."""
    gen.start(None)
    try:
        time.sleep(seconds)
    finally:
        gen.stop()
    took = gen.offered_seconds()
    return gen.sent() / took if took else 0.0


def warm_up(s: harness.Session, gen: harness._Generator, window_s: float, max_s: float) -> dict:
    """The generator flat out in windows of `window_s` until its ceiling has settled (settled():
    no trend between the last WARMUP_K windows and the WARMUP_K before them), at most `max_s`:
    every window's ceiling (frames/s) and capacity (frames per CPU-second) for the record, and the
    median of the last WARMUP_K of each as the generator's ceiling and capacity."""
    ceilings: list[float] = []
    capacities: list[int | None] = []
    began = time.monotonic()
    while True:
        cpu0 = gen.cpu_ns()
        ceilings.append(calibrate(s, gen, window_s))
        capacities.append(capacity(int(gen.sent()), cpu0, gen.cpu_ns()))
        done = settled(steady_figures(ceilings, capacities))
        if done or time.monotonic() - began + window_s > max_s:
            break
    known = [c for c in capacities[-WARMUP_K:] if c is not None]
    return {"window_s": window_s, "seconds": round(time.monotonic() - began, 2), "settled": done,
            "ceilings_pps": [round(c) for c in ceilings], "capacities_pps": capacities,
            "ceiling_pps": round(statistics.median(ceilings[-WARMUP_K:])),
            "capacity_pps": round(statistics.median(known)) if known else None}


def steady_figures(ceilings: list[float], capacities: list[int | None]) -> list[float]:
    """What settling is judged on (pure): the capacity per CPU-second where every window has one
    (other work on the CPU moves the rate, not the cost per frame), else the ceiling."""
    return [float(c) for c in capacities] if capacities and None not in capacities else ceilings


def settled(figures: list[float], k: int | None = None, tolerance: float = WARMUP_TOLERANCE) -> bool:
    """No trend left (pure): the median of the last `k` windows within `tolerance` of the median
    of the `k` before them."""
    k = k or WARMUP_K
    if len(figures) < 2 * k:
        return False
    before, last = statistics.median(figures[-2 * k:-k]), statistics.median(figures[-k:])
    return before > 0 and abs(last / before - 1) <= tolerance


def run(s: harness.Session, gen: harness._Generator, load: float, duration: float) -> dict:
    """Offer `load` frames/s for `duration` s (counted), and return the trial as plain data."""
    threads = len(s.cpus)
    per_thread = max(1, round(load * duration / threads))
    began = time.monotonic()
    a = harness._sample(s.dev, gen)
    gen.start(per_thread, load / threads)
    gen.wait()
    time.sleep(harness.DRAIN_S)
    b = harness._sample(s.dev, gen)
    cpu_s = queues.cpu_seconds(a.gen_cpu_ns, b.gen_cpu_ns)
    return account(load, duration, per_thread * threads, int(gen.sent()), b.counted - a.counted,
                   gen.offered_seconds(), gen.lag(), time.monotonic() - began, gen.errors(), cpu_s)


def capacity(sent: int, before_ns: int | None, after_ns: int | None) -> int | None:
    """Frames per second of the generator's own CPU time (pure): what it sends with its CPU to
    itself (on a veth, the receiver's work included)."""
    return queues.per_cpu_second(sent, queues.cpu_seconds(before_ns, after_ns))


def run_undisturbed(s: harness.Session, gen: harness._Generator, load: float, duration: float) -> list[dict]:
    """The trial, run again while it was `disturbed` (at most RETRIES times): every run, the
    last one the trial's result."""
    runs = [run(s, gen, load, duration)]
    while runs[-1]["disturbed"] and len(runs) <= RETRIES:
        runs.append(run(s, gen, load, duration))
    return runs


def account(load: float, duration: float, intended: int, sent: int, received: int, offered_s: float | None,
            lag_s: float, wall_s: float, errors: list[str] | None = None, cpu_s: float | None = None) -> dict:
    """A trial's figures (pure). The offered load is what was sent over the time it took, never
    above the schedule's; `generator_short` when the generator fell behind its schedule by more
    than the tolerance at any point (`lag_s`: the latest a call of its started against the schedule;
    catching up after that sent a burst above the load), or sent less than intended. `cpu_s`: the
    generator's CPU time (live frames), whence its capacity: frames per CPU-second."""
    took = max(offered_s or 0.0, duration)
    short = lag_s > tolerated_lag(duration) or sent < intended
    cap = queues.per_cpu_second(sent, cpu_s)
    lost = max(0, sent - received)   # a stray frame of the lab's own (IPv6 ND) is not negative loss
    return {"intended_load_pps": round(load), "duration_s": duration, "intended_count": intended,
            "tx_packets": sent, "rx_packets": received, "loss_packets": lost,
            "loss_ratio": round(lost / sent, 8) if sent else None,
            "offered_load_pps": round(sent / took) if took else None,
            "offered_s": round(offered_s, 4) if offered_s else None, "lag_s": round(lag_s, 4),
            "generator_short": short, "generator_cpu_s": round(cpu_s, 4) if cpu_s else None,
            "generator_capacity_pps": cap, "disturbed": disturbed(short, load, cap),
            "wall_s": round(wall_s, 3), **({"generator_errors": errors} if errors else {})}


def disturbed(short: bool, load: float, capacity: float | None) -> bool:
    """The generator fell behind though its CPU time says it could send CAPACITY_MARGIN above the
    load: other work took the CPU (pure)."""
    return short and capacity is not None and capacity >= load * (1 + CAPACITY_MARGIN)


def for_search(t: dict) -> dict:
    """The trial as MLRsearch's MeasurementResult arguments: frames the generator did not offer
    within the duration count as not offered (unsent), the DUT's loss as loss."""
    intended, sent = t["intended_count"], t["tx_packets"]
    in_time = sent
    if t["generator_short"]:   # what the generator managed to offer in the duration, at its pace
        in_time = min(sent, int(sent * t["duration_s"] / max(t["offered_s"] or 0, t["duration_s"] + t["lag_s"])))
    loss = round(t["loss_packets"] * in_time / sent) if sent else 0
    return {"intended_duration": float(t["duration_s"]), "intended_load": float(t["intended_load_pps"]),
            "intended_count": intended, "offered_count": in_time, "loss_count": loss,
            "offered_duration": float(t["offered_s"] or t["duration_s"]),
            "duration_with_overheads": float(t["wall_s"])}
