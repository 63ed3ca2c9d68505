"""Kernel release strings as comparable (major, minor) pairs."""

from __future__ import annotations

import platform
from functools import lru_cache


@lru_cache(maxsize=64)   # the probe asks for every interface's verdicts, a few times each
def parse_version(release: str) -> tuple[int, int]:
    """(6, 18) for "6.18.44-cloud-amd64"; (0, 0) when it cannot be read."""
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def running() -> tuple[int, int]:
    return parse_version(platform.release())
