"""One timestamp format for everything offload writes: RFC 3339 in UTC with microseconds
(`2026-11-25T12:00:00.123456Z`), and the kernel's boot-relative times turned into wall clock."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def rfc3339(epoch: float | None = None) -> str:
    """`epoch` (seconds, default now) as RFC 3339 UTC."""
    t = time.time() if epoch is None else epoch
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalise(stamp: object) -> str | None:
    """A stamp read back from a record, as RFC 3339 UTC; records written before this format
    (`2025-01-31T12:00:05+0000`) are converted. Anything else (a damaged record) is None."""
    if not isinstance(stamp, str):
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return rfc3339(datetime.strptime(stamp.replace("Z", "+0000"), fmt).timestamp())
        except ValueError:
            continue
    return None


def seconds(stamp: object) -> float | None:
    """A stamp offload wrote (RFC 3339) as seconds since the epoch; None when it is none."""
    got = normalise(stamp)
    return None if got is None else datetime.strptime(got, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp()


def from_boottime_ns(ns: int) -> str | None:
    """A CLOCK_BOOTTIME stamp in ns (bpf_prog_info.load_time) as wall clock, the way bpftool
    converts it: now minus time since boot. 0 (not reported) is None."""
    if not ns:
        return None
    return rfc3339(time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) + ns / 1e9)
