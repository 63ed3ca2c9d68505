"""Which CPU the calling thread runs on (sched_getcpu(3); Python's os module has no binding), and
the CPU time a thread or process has run (its POSIX CPU-time clock)."""

from __future__ import annotations

import ctypes
import functools
import os
import time


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def current_cpu() -> int | None:
    cpu = _libc().sched_getcpu()
    return cpu if cpu >= 0 else None


# include/linux/posix-timers.h: a CPU-time clock id, CPUCLOCK_SCHED, with the per-thread bit for a thread
_CPUCLOCK_SCHED, _CPUCLOCK_PERTHREAD = 2, 4


def thread_cpu_ns(tid: int) -> int | None:
    """CPU time thread `tid` of this process has run, in ns, or None when it is gone. With
    paravirtual steal accounting the hypervisor's steal is not in it; without IRQ time
    accounting the softirq work done in the thread's context is."""
    return _clock(tid, _CPUCLOCK_PERTHREAD)


def process_cpu_ns(pid: int) -> int | None:
    """CPU time process `pid` (any process: the kernel lets only a thread of the same process
    read one thread's clock) has run, in ns, or None when it is gone."""
    return _clock(pid, 0)


def _clock(pid: int, kind: int) -> int | None:
    try:
        return time.clock_gettime_ns((~pid << 3) | _CPUCLOCK_SCHED | kind)
    except OSError:
        return None


def ksoftirqd(cpus: list[int]) -> dict[int, int | None]:
    """The pid of `ksoftirqd/N` for each CPU N of `cpus` (None where there is none), the thread
    softirq work moves to when it runs too long in the context that raised it: /proc read once."""
    want = {f"ksoftirqd/{c}\n": c for c in cpus}
    found: dict[int, int | None] = dict.fromkeys(cpus)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read()
        except OSError:
            continue
        if comm in want:
            found[want[comm]] = int(pid)
            if None not in found.values():
                break
    return found
