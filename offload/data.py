"""Where offload's own files are: the program library (sources and compiled objects) and the
driver profiles. A wheel carries them as package data (`offload/_data/`, put there by setup.py);
a checkout has them at its top (`bpf/`, `drivers_profiles/`); an environment variable overrides
both. Missing is an error, never an empty list."""

from __future__ import annotations

import os
from pathlib import Path

from offload.errors import EnvironmentProblem, RefusedError, UsageError
from offload.kernel import fs

LIBRARY, PROFILES = ("bpf", "OFFLOAD_BPF_DIR"), ("drivers_profiles", "OFFLOAD_PROFILES")
ENV_CACHE = "OFFLOAD_CACHE_DIR"


def cache_dir() -> Path:
    """Where work done once is kept: compiled objects, validated profiles (root's in /var/cache)."""
    env = os.environ.get(ENV_CACHE)
    if env:   # root writes there: the rule of every path offload writes (no '..')
        return Path(fs.output_path(env, f"${ENV_CACHE}", directory=True))
    if os.geteuid() == 0:
        return Path("/var/cache/offload")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "offload"


def owned_cache(*parts: str) -> Path:
    """cache_dir()/PARTS, made (0700) where missing, once checked to be ours alone: root loads what
    it finds there, so a cache someone else could write into, or a link someone else could point
    elsewhere, is refused (exit 9), never used. Directories above it must be root's or ours and
    writable by no one else, unless sticky (/tmp): then no one else can move ours away."""
    root = Path(os.path.abspath(cache_dir()))
    if not root.name:
        raise UsageError(f"{ENV_CACHE}={root}: the cache needs a directory of its own")
    base = Path(os.path.realpath(root.parent))   # links above the cache: checked where they lead
    me = os.geteuid()
    steps = [(name, (0, me), True) for name in base.parts[1:]] + [(name, (me,), False) for name in (root.name, *parts)]
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    where = Path("/")
    try:
        for name, owners, above in steps:
            where = where / name
            try:
                nxt = fs.open_owned(fd, name, owners, create=True, sticky_ok=above)
            except fs.Untrusted as e:
                raise _unsafe_cache(root, where, e.strerror, alone=not above) from None
            except OSError as e:
                raise EnvironmentProblem(f"cannot use the cache directory {root}: {where}: {e.strerror}",
                                         hint=f"point {ENV_CACHE} at a directory of your own") from None
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    return base.joinpath(root.name, *parts)


def _root_or(uid: int) -> str:
    return "uid 0" if uid == 0 else f"uid 0 or {uid}"


def _unsafe_cache(cache: Path, where: Path, why: str, alone: bool) -> RefusedError:
    if alone:
        hint = f"remove it if nothing of yours is in it (rm -r {where}), or point {ENV_CACHE} elsewhere"
    else:
        hint = f"point {ENV_CACHE} at a directory whose parents only {_root_or(os.geteuid())} can write"
    return RefusedError(f"the cache directory {cache} is not safe to use: {where}: {why}", hint=hint)


_HERE = Path(__file__).resolve().parent   # once: every attach asks where its library object is


def data_dir(what: tuple[str, str]) -> Path:
    name, env = what
    if os.environ.get(env):
        return Path(os.environ[env])
    packaged = _HERE / "_data" / name   # importlib.resources: ~10 ms more
    if packaged.is_dir():
        return packaged
    checkout = _HERE.parent / name
    if checkout.is_dir():
        return checkout
    raise EnvironmentProblem(f"offload's {name}/ is missing: neither {packaged} nor {checkout} exists",
                             hint=f"reinstall offload (its wheel carries {name}/), or point {env} at one")
