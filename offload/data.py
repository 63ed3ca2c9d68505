"""Where offload's own files are: the program library (sources and compiled objects) and the
driver profiles. A wheel carries them as package data (`offload/_data/`, put there by setup.py);
a checkout has them at its top (`bpf/`, `drivers_profiles/`); an environment variable overrides
both. Missing is an error, never an empty list."""

from __future__ import annotations

import os
from pathlib import Path

from offload.errors import EnvironmentProblem

LIBRARY, PROFILES = ("bpf", "OFFLOAD_BPF_DIR"), ("drivers_profiles", "OFFLOAD_PROFILES")
ENV_CACHE = "OFFLOAD_CACHE_DIR"


def cache_dir() -> Path:
    """Where work done once is kept: compiled objects, validated profiles (root's in /var/cache)."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/offload")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "offload"


def data_dir(what: tuple[str, str]) -> Path:
    name, env = what
    if os.environ.get(env):
        return Path(os.environ[env])
    packaged = Path(__file__).resolve().parent / "_data" / name   # importlib.resources: ~10 ms more
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[1] / name
    if checkout.is_dir():
        return checkout
    raise EnvironmentProblem(f"offload's {name}/ is missing: neither {packaged} nor {checkout} exists",
                             hint=f"reinstall offload (its wheel carries {name}/), or point {env} at one")
