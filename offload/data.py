"""Where offload's own files are: the program library (sources and compiled objects) and the
driver profiles. A wheel carries them as package data (`offload/_data/`, put there by setup.py);
a checkout has them at its top (`bpf/`, `drivers_profiles/`); an environment variable overrides
both. Missing is an error, never an empty list."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from offload.errors import EnvironmentProblem, RefusedError, UsageError

LIBRARY, PROFILES = ("bpf", "OFFLOAD_BPF_DIR"), ("drivers_profiles", "OFFLOAD_PROFILES")
ENV_CACHE = "OFFLOAD_CACHE_DIR"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def cache_dir() -> Path:
    """Where work done once is kept: compiled objects, validated profiles (root's in /var/cache)."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env)
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
    steps = [(name, False) for name in base.parts[1:]] + [(name, True) for name in (root.name, *parts)]
    fd = os.open("/", _DIR_FLAGS)
    try:
        where = Path("/")
        for name, alone in steps:
            where = where / name
            nxt = _open_cache_dir(fd, name, where, root, alone)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    return base.joinpath(root.name, *parts)


def _open_cache_dir(parent: int, name: str, where: Path, cache: Path, alone: bool) -> int:
    """`name` in directory `parent`, made (0700) when missing, not followed if a link. `alone`: the
    cache and its subdirectories must be ours and writable by us only; above it, root's or ours,
    and writable by others only if sticky."""
    try:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):   # another offload made it meanwhile
                os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _unsafe_cache(cache, where, "it is a symbolic link or not a directory", alone) from None
        raise EnvironmentProblem(f"cannot use the cache directory {cache}: {where}: {e.strerror}",
                                 hint=f"point {ENV_CACHE} at a directory of your own") from None
    st = os.fstat(fd)
    uid, me, others_write = st.st_uid, os.geteuid(), st.st_mode & 0o022
    if alone and (uid != me or others_write):
        need = f"owned by uid {me} and writable by no one else"
    elif not alone and (uid not in (0, me) or others_write and not st.st_mode & stat.S_ISVTX):
        need = f"owned by {_root_or(me)}, and writable by no one else unless sticky"
    else:
        return fd
    os.close(fd)
    raise _unsafe_cache(cache, where, f"it belongs to uid {uid} with mode {stat.filemode(st.st_mode)}; "
                                      f"offload needs it {need}", alone)


def _root_or(uid: int) -> str:
    return "uid 0" if uid == 0 else f"uid 0 or {uid}"


def _unsafe_cache(cache: Path, where: Path, why: str, alone: bool) -> RefusedError:
    if alone:
        hint = f"remove it if nothing of yours is in it (rm -r {where}), or point {ENV_CACHE} elsewhere"
    else:
        hint = f"point {ENV_CACHE} at a directory whose parents only {_root_or(os.geteuid())} can write"
    return RefusedError(f"the cache directory {cache} is not safe to use: {where}: {why}", hint=hint)


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
