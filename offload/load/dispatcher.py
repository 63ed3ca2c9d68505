"""libxdp's multi-program dispatcher, read-only: which programs run in it, in what order, and on
which of their verdicts the next one runs.

xdp-loader (libxdp) attaches one program, `xdp_dispatcher`, whose functions prog0..prog9 are
replaced (freplace links) by the user's programs. Its configuration is a constant in its .rodata
map (struct xdp_dispatcher_config: run priorities and chain-call actions per slot); the links and
programs are pinned under the bpffs as `xdp/dispatch-IFINDEX-DISPATCHERID/prog{N}-link` and
`prog{N}-prog`. Each link is checked to replace a function of this very dispatcher.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from offload.kernel import bpfsys, clock, fs, libxdp
from offload.load import pins

NAME = "xdp_dispatcher"
MAGIC = 236                 # 'X' + 'D' + 'P'
MAX_SLOTS = libxdp.MAX_PROGS
ACTIONS = libxdp.ACTIONS    # bit N of chain_call_actions is action N


@dataclass
class Config:
    version: int
    num_progs: int
    frags: bool | None            # v2 only
    run_prios: list[int]
    chain_call_actions: list[int]  # bit masks


def decode_config(raw: bytes) -> Config | None:
    """struct xdp_dispatcher_config, version 2 (magic 236 first) or 1 (no magic: the slot count
    first, the arrays at the next 4-byte boundary). None when it is neither."""
    arr = 4 * MAX_SLOTS
    if len(raw) >= 4 + 3 * arr and raw[0] == MAGIC:
        num, frags, version = raw[2], bool(raw[3]), raw[1]
        chain, prios = struct.unpack_from(f"={MAX_SLOTS}I", raw, 4), struct.unpack_from(f"={MAX_SLOTS}I", raw, 4 + arr)
    elif len(raw) >= 4 + 2 * arr and len(raw) < 4 + 3 * arr:
        num, frags, version = raw[0], None, 1
        chain, prios = struct.unpack_from(f"={MAX_SLOTS}I", raw, 4), struct.unpack_from(f"={MAX_SLOTS}I", raw, 4 + arr)
    else:
        return None
    if num > MAX_SLOTS:
        return None
    return Config(version, num, frags, list(prios[:num]), list(chain[:num]))


def action_names(mask: int) -> list[str]:
    return [a for i, a in enumerate(ACTIONS) if mask & (1 << i)]


def _config_of(info: bpfsys.LoadedProg) -> Config | None:
    for map_id in info.map_ids:
        got = bpfsys.map_info_by_id(map_id)
        if got is None:
            continue
        fd, mi = got
        try:
            if mi.name.endswith(".rodata") and mi.key_size == 4 and mi.max_entries == 1:
                raw = bpfsys.map_lookup(fd, struct.pack("=I", 0), mi.value_size)
                if raw and (cfg := decode_config(raw)):
                    return cfg
        finally:
            os.close(fd)
    return None


def bpffs_root() -> str:
    """Where libxdp pins: $LIBXDP_BPFFS (libxdp's own setting), else the host's bpffs (through
    PID 1's root when `ip netns exec` hid it)."""
    root = os.environ.get("LIBXDP_BPFFS") or pins.DEFAULT_BPFFS
    if root == pins.DEFAULT_BPFFS and not pins.is_bpffs("/proc/self/mounts", root) \
            and pins.is_bpffs("/proc/1/mounts", root):
        return "/proc/1/root" + root
    return root


def _open_trusted(parent: int | None, name: str) -> int:
    """A directory libxdp made (root's, 0700): no symlink, root-owned, writable by no one else."""
    fd = fs.open_owned(parent, name, owners=(0,))
    if fd is None:
        raise FileNotFoundError(name)
    return fd


def _slot_prog(dir_fd: int, slot: int, dispatcher_id: int) -> int:
    """The program id behind slot N, from its pinned freplace link, which must replace a function
    of this dispatcher."""
    name = f"prog{slot}-link"
    if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
        raise PermissionError(f"{name} is not a pinned object")
    fd = bpfsys.obj_get(f"/proc/self/fd/{dir_fd}/{name}")
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:   # a link's fdinfo names its type; a program's does not
            if not any(line.startswith("link_type:") for line in f):
                raise PermissionError(f"{name} is not a BPF link")
        link = bpfsys.link_info(fd)
    finally:
        os.close(fd)
    if link.target_obj_id != dispatcher_id:
        raise PermissionError(f"{name} replaces a function of program {link.target_obj_id}, not of {dispatcher_id}")
    return link.prog_id


def read(ifindex: int, info: bpfsys.LoadedProg) -> dict | None:
    """The dispatcher attached as `info` on `ifindex`, with its programs in run order; None when
    the program is not libxdp's dispatcher."""
    if info.name != NAME:
        return None
    cfg = _config_of(info)
    if cfg is None:
        return None
    where = f"{bpffs_root()}/xdp/dispatch-{ifindex}-{info.id}"
    doc: dict = {"version": cfg.version, "frags": cfg.frags, "pins": where, "programs": [], "warnings": []}
    dir_fd = None
    try:
        xdp_fd = _open_trusted(None, f"{bpffs_root()}/xdp")
        try:
            dir_fd = _open_trusted(xdp_fd, f"dispatch-{ifindex}-{info.id}")
        finally:
            os.close(xdp_fd)
    except OSError as e:
        doc["warnings"].append(f"libxdp's pins for dispatcher {info.id} are unreadable ({where}: "
                               f"{e.strerror or e}): its programs' ids are unknown")
    try:
        for slot in range(cfg.num_progs):
            prog_id, comp = None, None
            if dir_fd is not None:
                try:
                    prog_id = _slot_prog(dir_fd, slot, info.id)
                    comp = bpfsys.prog_info(prog_id)
                except OSError as e:
                    doc["warnings"].append(f"{where}/prog{slot}-link: {e.strerror or e}")
            doc["programs"].append({
                "slot": slot, "priority": cfg.run_prios[slot],
                "chain_call_actions": action_names(cfg.chain_call_actions[slot]),
                **prog_fields(prog_id, comp)})
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    return doc


def forget(ifindex: int, prog_id: int) -> None:
    """Remove libxdp's pins of dispatcher `prog_id` once it is off `ifindex` (its freplace links:
    unpinned, they let go of the members), under libxdp's own lock (flock of its xdp directory).
    Only that one directory: libxdp_clean_references would judge every `dispatch-IFINDEX-*` by an
    ifindex of this namespace, and ifindexes repeat across namespaces."""
    import fcntl

    try:
        xdp_fd = _open_trusted(None, f"{bpffs_root()}/xdp")
    except OSError:
        return   # no pins of libxdp's at all
    try:
        fcntl.flock(xdp_fd, fcntl.LOCK_EX)
        name = f"dispatch-{ifindex}-{prog_id}"
        try:
            dir_fd = _open_trusted(xdp_fd, name)
        except OSError:
            return
        try:
            for entry in os.listdir(dir_fd):
                os.unlink(entry, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        os.rmdir(name, dir_fd=xdp_fd)
    finally:
        os.close(xdp_fd)   # the lock goes with it


def members(ifindex: int, attached: dict[str, int]) -> dict[int, str]:
    """prog id -> mode of the programs in the dispatchers attached to `ifindex` (none: empty)."""
    return {p["prog_id"]: mode for mode, p in programs(ifindex, attached) if p["prog_id"] is not None}


def chains(ifindex: int, attached: dict[str, int], names: dict[str, str | None] | None = None
           ) -> list[tuple[str, dict]]:
    """(mode, the dispatcher as `read` gives it) of each dispatcher attached to `ifindex`.
    `names`: mode -> the name a caller's probe read for each program already, so that only a
    dispatcher is looked up again."""
    out = []
    for mode, prog_id in attached.items():
        if names is not None and names.get(mode) != NAME:
            continue
        info = bpfsys.prog_info(prog_id)
        doc = read(ifindex, info) if info is not None and info.name == NAME else None
        if doc is not None:
            out.append((mode, doc))
    return out


def programs(ifindex: int, attached: dict[str, int]) -> list[tuple[str, dict]]:
    """(mode, program as `read` lists it) of the dispatchers attached to `ifindex`, in run order."""
    return [(mode, p) for mode, doc in chains(ifindex, attached) for p in doc["programs"]]


def prog_fields(prog_id: int | None, info: bpfsys.LoadedProg | None) -> dict:
    """What bpf_prog_info says of a program, the way `bpftool prog show` does."""
    if info is None:
        return {"prog_id": prog_id, "name": None, "tag": None, "jited": None, "jited_size": None,
                "xlated_size": None, "loaded_at": None, "map_ids": [], "btf_id": None}
    return {"prog_id": info.id, "name": info.name, "tag": info.tag, "jited": info.jited_len > 0,
            "jited_size": info.jited_len, "xlated_size": info.xlated_len,
            "loaded_at": clock.from_boottime_ns(info.load_time_ns), "map_ids": list(info.map_ids),
            "btf_id": info.btf_id or None}
