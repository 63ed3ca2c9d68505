"""A kernel-side packet generator where pktgen is absent: BPF_PROG_RUN in live-frames mode
(BPF_F_TEST_XDP_LIVE_FRAMES, Linux >= 5.18) replaying one frame and redirecting it out of the tx
device (a precompiled object, loaded through libbpf with the tx ifindex as its global). One thread per CPU; each thread sits in the bpf() syscall while the kernel transmits."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field

from offload.errors import EnvironmentProblem
from offload.kernel import bpfsys, sched
from offload.kernel.bpfobj import BpfObject
from offload.kernel.version import parse_version

BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
# Frames per syscall. Short calls cost rate: at 65536 frames per call it halves, and 0.25 s calls
# ran at about 0.8x the rate of 1-2 s calls on a veth lab, in both modes, though a one-frame
# call takes only ~0.02 ms (benchmarks/generator_calls.py: the loss is in each call's course,
# every call with a page pool of its own, not a set-up to amortise). So each thread sizes its
# calls to take about `call_seconds` at the rate it measures, within these bounds: CALL_SECONDS
# for short windows (a stop waits for the call in flight), longer for long ones (call_seconds_for).
CHUNK_MIN, CHUNK_MAX = 65_536, 1 << 24
CALL_SECONDS = 0.25
CALL_SHARE = 0.4          # of a measured window: a 5 s window gets 2 s calls
CALL_SECONDS_MAX = 2.0    # the rate gains nothing beyond ~1 s calls; a stop waits no longer
# Paced sending (an offered load): one call per PACE_PERIOD's worth of frames, sent when due by
# the schedule (frame i at i / rate). The per-call cost rules out a frame at a time, so the load
# is exact over each period and bursty within it (frames leave at the generator's full speed).
PACE_PERIOD = 0.2   # seconds: a call costs ~25 ms of set-up here, a tenth of it at most


@dataclass
class GenThread:
    cpu: int
    sent: int = 0
    error: str | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)   # (monotonic time, sent so far)
    ran_on: set[int] = field(default_factory=set)   # CPUs the thread was found on after its calls
    began: float | None = None          # paced: when the schedule started
    ended: float | None = None          # when the last call returned
    sent_by_frame: list[int] = field(default_factory=list)   # per frame of the mix
    lag: float = 0.0                    # paced: the latest a call started against its schedule
    tid: int | None = None              # the thread's id, for its CPU-time clock
    cpu0: int | None = None             # its CPU time (ns) when it started, and when it ended
    cpu_end: int | None = None


def call_seconds_for(window_s: float) -> float:
    """How long a flat-out call should take when the rate is measured over `window_s`: the fixed
    cost of a call is spread over as many frames as the window allows, and a stop, which waits
    for the call in flight, never takes longer than CALL_SECONDS_MAX."""
    return min(max(window_s * CALL_SHARE, CALL_SECONDS), CALL_SECONDS_MAX)


def next_chunk(frames: int, took: float, call_seconds: float) -> int:
    """A flat-out call's size: the frames that take `call_seconds` at the rate the last call ran
    (`frames` in `took` seconds), within CHUNK_MIN..CHUNK_MAX."""
    return min(max(int(frames / max(took, 1e-6) * call_seconds), CHUNK_MIN), CHUNK_MAX)


def check_kernel() -> None:
    import platform

    if parse_version(platform.release()) < (5, 18):
        raise EnvironmentProblem(f"live-frames generation needs Linux 5.18 (BPF_F_TEST_XDP_LIVE_FRAMES); this is "
                                 f"{platform.release()}", hint="use --generator pktgen")


class LiveFrames:
    """Generate `frame` out of `tx_ifindex` from `cpus` threads, for a count or until stopped."""

    def __init__(self, tx_ifindex: int, frame: bytes, cpus: list[int], obj_path: str,
                 mix: list[tuple[bytes, int]] | None = None, call_seconds: float = CALL_SECONDS) -> None:
        """`obj_path`: the compiled bpf/generators/live_frames.c (the caller finds it). `mix`:
        frames and their weights (IMIX) sent in those proportions, one frame per call, instead of
        `frame` alone. `call_seconds`: how long a flat-out call should take."""
        check_kernel()
        self.obj = BpfObject(obj_path)
        try:
            self.obj.select("live_frames")
            self.obj.set_global(self.obj.globals()["tx_ifindex"], tx_ifindex.to_bytes(4, sys.byteorder))
            self.obj.load()
        except BaseException:
            self.obj.close()
            raise
        self.fd = self.obj.prog_fd("live_frames")
        self.mix = mix or [(frame, 1)]
        self.call_seconds = call_seconds
        self.threads = [GenThread(c) for c in cpus]
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._ksoftirqd = sched.ksoftirqd(cpus)
        self._done_ns = 0   # CPU time of the threads of runs before this one

    def _send(self, t: GenThread, n: int) -> None:
        """One call: with a mix, the frame furthest behind its share, for its share of `n` (so a
        round of calls over the mix keeps the proportions, whatever the call size)."""
        total_w = sum(w for _, w in self.mix)
        k = min(range(len(self.mix)), key=lambda i: t.sent_by_frame[i] - t.sent * self.mix[i][1] / total_w)
        if len(self.mix) > 1:
            n = max(1, min(n, round(n * self.mix[k][1] / total_w)))
        bpfsys.prog_test_run(self.fd, self.mix[k][0], repeat=n, flags=BPF_F_TEST_XDP_LIVE_FRAMES,
                             batch_size=64, out_size=0)
        t.sent_by_frame[k] += n
        t.sent += n

    def _run(self, t: GenThread, count: int | None, rate: float | None) -> None:
        try:
            os.sched_setaffinity(0, {t.cpu})   # this thread only
            t.tid, t.cpu0 = threading.get_native_id(), time.thread_time_ns()
            t.sent_by_frame = [0] * len(self.mix)
            t.began = time.monotonic()
            t.samples.append((t.began, 0))
            if rate:
                self._paced(t, count, rate)
            else:
                self._flat_out(t, count)
        except OSError as e:
            t.error = str(e)
        finally:
            t.cpu_end = time.thread_time_ns()
            t.ended = time.monotonic()

    def _flat_out(self, t: GenThread, count: int | None) -> None:
        chunk = CHUNK_MIN
        while not self._stop.is_set() and (count is None or t.sent < count):
            n = chunk if count is None else min(chunk, count - t.sent)
            began = time.monotonic()
            before = t.sent
            self._send(t, n)
            took = time.monotonic() - began
            t.samples.append((began + took, t.sent))
            if (cpu := sched.current_cpu()) is not None:
                t.ran_on.add(cpu)
            chunk = next_chunk(t.sent - before, took, self.call_seconds)

    def _paced(self, t: GenThread, count: int | None, rate: float) -> None:
        """Frame i is due at began + i / rate; a late thread catches up in larger calls, so the
        load holds on average as long as the generator can reach it (lag() says when not)."""
        per_call = max(1, int(rate * PACE_PERIOD))
        assert t.began is not None
        while not self._stop.is_set() and (count is None or t.sent < count):
            wait = t.began + t.sent / rate - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
                continue
            now = time.monotonic()
            t.lag = max(t.lag, now - (t.began + t.sent / rate))
            due = int(rate * (now - t.began)) - t.sent
            n = min(max(per_call, due), CHUNK_MAX, *(() if count is None else (count - t.sent,)))
            self._send(t, n)
            t.samples.append((time.monotonic(), t.sent))
            if (cpu := sched.current_cpu()) is not None:
                t.ran_on.add(cpu)

    def start(self, count_per_thread: int | None = None, rate_per_thread: float | None = None) -> None:
        """Send until stopped or `count_per_thread` from each thread; at `rate_per_thread` frames
        per second each when given, else as fast as the kernel takes them."""
        self._stop.clear()
        self._done_ns += sum(self._own_ns(t) or 0 for t in self.threads)
        self.threads = [GenThread(t.cpu) for t in self.threads]   # each run counts from zero
        self._workers = [threading.Thread(target=self._run, args=(t, count_per_thread, rate_per_thread),
                                          daemon=True)
                         for t in self.threads]
        for w in self._workers:
            w.start()

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        for w in self._workers:
            w.join(timeout)

    def running(self) -> bool:
        return any(w.is_alive() for w in self._workers)

    @property
    def sent(self) -> int:
        return sum(t.sent for t in self.threads)

    def lag(self) -> float:
        """Paced: the latest any thread started a call against its schedule (seconds)."""
        return max((t.lag for t in self.threads), default=0.0)

    def errors(self) -> list[str]:
        return [f"cpu {t.cpu}: {t.error}" for t in self.threads if t.error]

    def cpu_ns(self) -> int | None:
        """CPU time spent on the generator's CPUs by its threads, over all its runs, and by those
        CPUs' ksoftirqd (softirq work the threads raised, moved there when it ran long): on a veth
        the receiver's XDP too, which runs in the sending CPU's softirq. None when unreadable."""
        own = [self._own_ns(t) for t in self.threads]
        if any(v is None for v in own):
            return None
        soft = [sched.process_cpu_ns(p) for p in self._ksoftirqd.values() if p is not None]
        return self._done_ns + sum(v or 0 for v in own) + sum(v for v in soft if v is not None)

    @staticmethod
    def _own_ns(t: GenThread) -> int | None:
        if t.cpu0 is None or t.tid is None:   # not started (yet)
            return 0
        end = t.cpu_end if t.cpu_end is not None else sched.thread_cpu_ns(t.tid)
        if end is None:   # ended between the two reads: its own final reading
            end = t.cpu_end
        return None if end is None else end - t.cpu0

    def close(self) -> None:
        self.stop()
        self.obj.close()
