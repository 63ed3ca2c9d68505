"""The CPU-time clocks of offload.kernel.sched, read against the running system."""

from __future__ import annotations

import os
import threading
import time

from offload.kernel import sched


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_threads_clock_counts_its_own_cpu_time_only():
    tid = threading.get_native_id()
    before = sched.thread_cpu_ns(tid)
    _spin(0.05)
    after = sched.thread_cpu_ns(tid)
    assert before is not None and after is not None and after - before >= 50_000_000
    other = threading.Thread(target=_spin, args=(0.1,))
    start = sched.thread_cpu_ns(tid)
    other.start()
    other.join()
    assert sched.thread_cpu_ns(tid) - start < 50_000_000     # another thread's 100 ms is not counted here
    assert sched.thread_cpu_ns(2**22 + 12345) is None        # no such thread


def test_ksoftirqd_is_found_per_cpu_and_its_clock_read():
    cpus = sorted(os.sched_getaffinity(0))
    pids = sched.ksoftirqd([*cpus, 10**6])
    cpu, pid = cpus[0], pids[cpus[0]]
    assert pid is not None and None not in (pids[c] for c in cpus)
    with open(f"/proc/{pid}/comm") as f:
        assert f.read().strip() == f"ksoftirqd/{cpu}"
    assert sched.process_cpu_ns(pid) is not None
    mine = sched.process_cpu_ns(os.getpid())
    assert mine is not None and abs(mine - time.process_time_ns()) < 50_000_000   # this process's own clock
    assert pids[10**6] is None                               # no such CPU
