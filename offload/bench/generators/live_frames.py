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
# Frames per syscall. Each BPF_PROG_RUN call sets up and tears down a page pool, which costs
# milliseconds: at 65536 frames per call that halves the rate. So each thread sizes its calls to
# take about CALL_SECONDS at the rate it measures, within these bounds.
CHUNK_MIN, CHUNK_MAX = 65_536, 1 << 24
CALL_SECONDS = 0.25


@dataclass
class GenThread:
    cpu: int
    sent: int = 0
    error: str | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)   # (monotonic time, sent so far)
    ran_on: set[int] = field(default_factory=set)   # CPUs the thread was found on after its calls


def check_kernel() -> None:
    import platform

    if parse_version(platform.release()) < (5, 18):
        raise EnvironmentProblem(f"live-frames generation needs Linux 5.18 (BPF_F_TEST_XDP_LIVE_FRAMES); this is "
                                 f"{platform.release()}", hint="use --generator pktgen")


class LiveFrames:
    """Generate `frame` out of `tx_ifindex` from `cpus` threads, for a count or until stopped."""

    def __init__(self, tx_ifindex: int, frame: bytes, cpus: list[int], obj_path: str) -> None:
        """`obj_path`: the compiled bpf/generators/live_frames.c (the caller finds it)."""
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
        self.frame = frame
        self.threads = [GenThread(c) for c in cpus]
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _run(self, t: GenThread, count: int | None) -> None:
        try:
            os.sched_setaffinity(0, {t.cpu})   # this thread only
            t.samples.append((time.monotonic(), 0))
            chunk = CHUNK_MIN
            while not self._stop.is_set() and (count is None or t.sent < count):
                n = chunk if count is None else min(chunk, count - t.sent)
                began = time.monotonic()
                bpfsys.prog_test_run(self.fd, self.frame, repeat=n, flags=BPF_F_TEST_XDP_LIVE_FRAMES,
                                     batch_size=64, out_size=0)
                took = time.monotonic() - began
                t.sent += n
                t.samples.append((began + took, t.sent))
                if (cpu := sched.current_cpu()) is not None:
                    t.ran_on.add(cpu)
                chunk = min(max(int(n / max(took, 1e-6) * CALL_SECONDS), CHUNK_MIN), CHUNK_MAX)
        except OSError as e:
            t.error = str(e)

    def start(self, count_per_thread: int | None = None) -> None:
        self._stop.clear()
        self.threads = [GenThread(t.cpu) for t in self.threads]   # each run counts from zero
        self._workers = [threading.Thread(target=self._run, args=(t, count_per_thread), daemon=True)
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

    def errors(self) -> list[str]:
        return [f"cpu {t.cpu}: {t.error}" for t in self.threads if t.error]

    def close(self) -> None:
        self.stop()
        self.obj.close()
