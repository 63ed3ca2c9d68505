"""Where attachments live after the command exits: pinned program and maps under bpffs, and one
JSON metadata file per attachment.

bpffs holds only BPF objects (and refuses '.' in names), so the metadata lives under /run (gone
at reboot, like the pins) and names are escaped.

The state tree is trusted only as far as it is verified: bpffs is often mode 1777, so anyone may
have made `offload/` there first. Every directory offload uses is opened component by component
without following symlinks, created 0700, and must belong to this user and be writable by no one
else; files are created 0600 with O_EXCL|O_NOFOLLOW and renamed into place; every operation is
relative to a verified directory's fd (pins through /proc/self/fd/N/NAME, which the kernel
resolves to exactly that directory). Anything else is refused (exit 9), never followed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from offload.errors import EnvironmentProblem, OffloadError, RefusedError, UsageError, excerpt
from offload.kernel import bpfsys, clock, durable, fs, xdplink
from offload.kernel.names import check_ifname, check_netns
from offload.probe.mode import MODES

DEFAULT_BPFFS = "/sys/fs/bpf"
RUN = Path(os.environ.get("OFFLOAD_RUN_DIR", "/run/offload"))
BPFFS = Path(os.environ.get("OFFLOAD_BPFFS", DEFAULT_BPFFS))
_BPFFS_OK: Path | None = None


LINK_PIN = "link"   # a slot's bpf_link pin (attach --via link), beside "prog" and the "map_*" pins


def _escape(name: str) -> str:
    # '/' too: a map's name comes from the object file, and a pin's name must stay one component
    return name.replace("%", "%25").replace(".", "%2e").replace("/", "%2f")


def _escape_member(key: str) -> str:
    """A chain member's key as part of a file name: every byte but [A-Za-z0-9_-] as %XX."""
    return "".join(chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "_-") else f"%{b:02x}"
                   for b in key.encode())


def _unescape_member(name: str) -> str:
    from urllib.parse import unquote

    return unquote(name)


MEMBER_SEP = ":"   # interface names never hold ':' (dev_valid_name): IFACE:MEMBER is unambiguous
MAX_MEMBER = 64


def _is_bpffs(mounts: str, where: str) -> bool:
    try:
        with open(mounts) as f:
            return any(len(p := line.split()) > 2 and p[1] == where and p[2] == "bpf" for line in f)
    except OSError:
        return False


is_bpffs = _is_bpffs   # libxdp's pins (load/dispatcher.py) are looked for the same way


def require_bpffs() -> None:
    """Make BPFFS point at the host's bpffs, or say how to mount it.

    `ip netns exec` gives the command a private mount namespace with a fresh /sys, without the
    host's bpffs; pins made in another bpffs instance would be invisible to the host, so the
    host's is reached through PID 1's root instead.
    """
    global BPFFS, _BPFFS_OK
    if _BPFFS_OK == BPFFS:  # checked already (every pin path asks)
        return
    if _is_bpffs("/proc/self/mounts", str(BPFFS)):
        _BPFFS_OK = BPFFS
        return
    if str(BPFFS) == DEFAULT_BPFFS and _is_bpffs("/proc/1/mounts", DEFAULT_BPFFS) \
            and os.path.isdir("/proc/1/root" + DEFAULT_BPFFS):
        BPFFS = _BPFFS_OK = Path("/proc/1/root" + DEFAULT_BPFFS)
        return
    if str(BPFFS) == DEFAULT_BPFFS and _is_bpffs("/proc/1/mounts", DEFAULT_BPFFS):  # the host's, hidden
        raise EnvironmentProblem(
            f"the host's bpffs ({DEFAULT_BPFFS}) is not visible here (`ip netns exec` gives a private /sys): "
            "pins made here would vanish with this command",
            hint="run `offload <command> --netns NS ...` instead of `ip netns exec NS offload ...`")
    raise EnvironmentProblem(f"bpffs is not mounted at {BPFFS}: offload pins what it attaches there",
                             hint=f"mount it: mount -t bpf bpffs {BPFFS} (scripts/setup does this)")


MAX_META = 1 << 20


class StateError(OffloadError):
    """A record of offload's cannot be read (truncated, not JSON, missing keys)."""


def _unescape(name: str) -> str:
    return name.replace("%2f", "/").replace("%2e", ".").replace("%25", "%")


def _unsafe(where: str, why: str) -> RefusedError:
    return RefusedError(f"offload's state directory {where} is not safe to use: {why}",
                        hint=f"if nothing of yours is in it, remove it (rm -r {where}) and run the command again")


def _open_dir(parent: int | None, name: str, where: str, create: bool) -> int | None:
    """A directory of ours (fs.open_owned), refused as unsafe state otherwise."""
    try:
        return fs.open_owned(parent, name, create=create)
    except fs.Untrusted as e:
        raise _unsafe(where, e.strerror) from None


_held = threading.local()   # the directories a batch holds open: (root, parts) -> fd


@contextmanager
def held_dirs() -> Iterator[None]:
    """For a batch of changes under the state lock (apply, watch's reconcile): the verified
    container directories (offload/ and each namespace's under bpffs, the run tree) are opened
    and checked once and held, instead of once per record and pin of every interface. Never an
    interface's own directory: attach exchanges those by rename. Nested batches join."""
    if getattr(_held, "fds", None) is not None:
        yield
        return
    _held.fds = {}
    try:
        yield
    finally:
        fds, _held.fds = _held.fds, None
        for fd in fds.values():
            os.close(fd)


def _holdable(root: Path, parts: list[str]) -> bool:
    return root == RUN.parent or (root == BPFFS and len(parts) <= 2)


@contextmanager
def _tree(root: Path, parts: list[str], create: bool = False) -> Iterator[int | None]:
    """A verified fd for root/parts... (None when missing and `create` is off): fs.owned_tree, or
    the one a batch holds (held_dirs)."""
    fds = getattr(_held, "fds", None)
    key = (str(root), tuple(parts))
    if fds is None or not _holdable(root, parts):
        with fs.owned_tree(root, parts, create, on_untrusted=_unsafe) as d:
            yield d
        return
    if key not in fds:
        with fs.owned_tree(root, parts, create, on_untrusted=_unsafe) as d:
            if d is None:
                yield None
                return
            fds[key] = os.dup(d)
    yield fds[key]


def _unhold(root: Path, parts: list[str]) -> None:
    """A directory removed: drop it (and what is under it) from the batch's held ones."""
    fds = getattr(_held, "fds", None)
    if not fds:
        return
    for key in [k for k in fds if k[0] == str(root) and k[1][:len(parts)] == tuple(parts)]:
        os.close(fds.pop(key))


def _pin_path(dir_fd: int, name: str) -> str:
    return f"/proc/self/fd/{dir_fd}/{name}"


def _read_small(dir_fd: int, name: str) -> bytes | None:
    """At most MAX_META + 1 bytes of regular file `name` (None when absent). Anything else at that
    name (a link, a directory, a FIFO someone planted) raises StateError: never followed, never
    waited on."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateError(f"{name} is not a regular file ({os.strerror(e.errno)})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StateError(f"{name} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_META + 1)


# A record's fields and the types each may hold (what attach and gc write): anything else is a
# damaged record, reported for its interface, never a crash of the command reading it.
_RECORD: dict[str, tuple[tuple[type, ...], bool]] = {
    "interface": ((str,), True), "program": ((str,), True), "mode": ((str,), True),
    "prog_id": ((int,), True), "maps": ((list,), True),
    "ifindex": ((int, type(None)), False), "netns": ((str,), False), "path": ((str, type(None)), False),
    "library": ((bool,), False), "kind": ((str, type(None)), False), "entry": ((str, type(None)), False),
    "section": ((str, type(None)), False), "sha256": ((str, type(None)), False), "params": ((dict,), False),
    "attached_at": ((str, type(None)), False), "fallbacks": ((list,), False),
    "managed_by": ((str, type(None)), False), "recovered": ((bool,), False),
    "chain": ((dict, type(None)), False),   # in libxdp's dispatcher: {"priority", "chain_call_actions"}
    "member": ((str, type(None)), False),   # a policy's chain member: its key (the slot IFACE:MEMBER)
    # a chain member's write-ahead (load.chain._join): the member it replaces, and while libxdp adds
    # it (prog_id 0: not known yet) the dispatcher's member ids before, to know it after a kill
    "replaces": ((int, type(None)), False), "pending": ((dict, type(None)), False),
    "via": ((str,), False),                 # "link": attached through the bpf_link pinned beside it
    "link_id": ((int, type(None)), False),  # that link's id when attached (a cache: the pin is the truth)
}


def _record_bytes(meta: dict) -> bytes:
    # one line: json's C encoder (indent= would take its pure Python one, for every interface)
    return (json.dumps(meta) + "\n").encode()


def check_record(meta: object) -> dict:
    """`meta` if it has the shape of a record (raises ValueError saying what is wrong)."""
    if not isinstance(meta, dict):
        raise ValueError("not a JSON object")
    for key, (types, required) in _RECORD.items():
        if key not in meta:
            if required:
                raise ValueError(f"no '{key}'")
            continue
        value = meta[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"'{key}' is {type(value).__name__}")
    if meta["prog_id"] < (0 if meta.get("pending") else 1) or not all(isinstance(m, str) for m in meta["maps"]):
        raise ValueError("a bad prog_id or map name")
    if meta["mode"] not in MODES:
        raise ValueError(f"unknown mode {meta['mode'][:20]!r}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.get("params", {}).items()):
        raise ValueError("'params' is not a map of strings")
    return meta


def _rmtree_at(dir_fd: int, name: str) -> None:
    """Remove `name` (a directory tree, or a file) inside `dir_fd`, never leaving it."""
    st = fs.lstat_at(dir_fd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)   # fd-based on Linux: symlinks inside are removed, not followed
    else:
        os.unlink(name, dir_fd=dir_fd)


def _clear_unless_file(dir_fd: int, name: str) -> None:
    st = fs.lstat_at(dir_fd, name)
    if st is not None and not stat.S_ISREG(st.st_mode):
        _rmtree_at(dir_fd, name)


def _exists_at(dir_fd: int, name: str) -> bool:
    return fs.lstat_at(dir_fd, name) is not None


def _rmdir_quiet(dir_fd: int | None, name: str) -> bool:
    try:
        os.rmdir(name, dir_fd=dir_fd)
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Slot:
    """The pins and metadata of one program of offload's on one interface in one network
    namespace: the interface's own slot (`member` None: a program alone, or `attach --priority`'s
    member), or one per member of a policy's chain (`IFACE:MEMBER`). Names validated: each is one
    path component."""

    netns: str
    iface: str
    member: str | None = None

    def __post_init__(self) -> None:
        check_netns(self.netns)
        check_ifname(self.iface)
        if self.member is not None and not 0 < len(self.member) <= MAX_MEMBER:
            raise UsageError(f"a chain member's key is 1..{MAX_MEMBER} characters: {excerpt(self.member)}")

    @property
    def name(self) -> str:
        """The slot's file name (escaped): IFACE, or IFACE:MEMBER."""
        base = _escape(self.iface)
        return base if self.member is None else f"{base}{MEMBER_SEP}{_escape_member(self.member)}"

    @property
    def label(self) -> str:
        """The slot for a person: `eth1`, or `eth1 (chain member count_pass)`."""
        return self.iface if self.member is None else f"{self.iface} (chain member {self.member})"

    # where things are (for messages, tests and operators; all access goes through verified fds)
    @property
    def pin_dir(self) -> Path:
        require_bpffs()
        return BPFFS / "offload" / _escape(self.netns) / self.name

    @property
    def meta_path(self) -> Path:
        return RUN / "attachments" / _escape(self.netns) / f"{self.name}.json"

    def _pins(self, create: bool = False):
        require_bpffs()
        return _tree(BPFFS, ["offload", _escape(self.netns), self.name], create)

    def _meta_dir(self, create: bool = False):
        return _tree(RUN.parent, [RUN.name, "attachments", _escape(self.netns)], create)

    # -- reading ------------------------------------------------------------------------------------
    def meta(self) -> dict | None:
        """The record (None when there is none); StateError when it is damaged in any way."""
        return self._read_record(f"{self.name}.json", "record")

    def _read_record(self, name: str, what: str) -> dict | None:
        try:
            with self._meta_dir() as d:
                raw = None if d is None else _read_small(d, name)
            if raw is None:
                return None
            if len(raw) > MAX_META:
                raise ValueError("larger than 1 MiB")
            return check_record(json.loads(raw.decode()))
        except (StateError, ValueError, RecursionError) as e:   # RecursionError: JSON nested too deep
            why = e.message if isinstance(e, StateError) else str(e) or type(e).__name__
            raise StateError(f"{self.meta_path.parent / name}: offload's {what} of {self.label} is damaged ({why})",
                             hint=f"offload gc removes damaged records; offload detach {self.iface} removes this one"
                             ) from None

    def staged_meta(self) -> dict | None:
        """The record an attach wrote before its kernel swap (None when none is staged)."""
        return self._read_record(f"{self.name}.json%new", "staged record")

    def verified_meta(self, prog_id: int | None) -> dict | None:
        """The record of program `prog_id` (ours: pinned, or staged and attached), checked
        against it: the committed record if it names that program, else the staged one if it
        does. None when there is no record at all; StateError when the records there are damaged
        or describe another program (bpffs and the kernel are the truth; records only a cache)."""
        meta = self.meta()
        if meta is None or prog_id is None or meta["prog_id"] == prog_id:
            return meta
        try:
            staged = self.staged_meta()
        except StateError:
            staged = None
        if staged is not None and staged["prog_id"] == prog_id:
            return staged
        raise StateError(f"{self.meta_path}: offload's record of {self.label} names program {meta['prog_id']}, "
                         f"but program {prog_id} is the one pinned and attached (a run was interrupted)",
                         hint="offload gc repairs the record from the kernel's view")

    def kernel_record(self, prog_id: int, mode: str, maps: list[str], ifindex: int | None = None) -> dict:
        """A record of program `prog_id` from what the kernel says of it, where the attach's own is
        lost or damaged: the kernel's name for it, never the name in an older record (that may be
        another program's). managed_by is kept, so that the policy that attached the interface's
        programs still owns it (and replaces it if it wants another)."""
        try:
            old = self.meta() or {}
        except StateError:
            old = {}
        info = bpfsys.prog_info(prog_id)
        return {"interface": self.iface, "ifindex": ifindex, "netns": self.netns, "mode": mode,
                "prog_id": prog_id, "maps": maps, "recovered": True, "attached_at": clock.rfc3339(),
                "library": False, "program": info.name if info and info.name else "unknown", "sha256": None,
                "managed_by": old.get("managed_by"), "member": self.member, "chain": old.get("chain")}

    def exists(self) -> bool:
        """Anything of ours recorded for this interface: pins or metadata."""
        with self._pins() as p:
            if p is not None:
                return True
        with self._meta_dir() as d:
            return d is not None and _exists_at(d, f"{self.name}.json")

    def pinned_prog_id(self) -> int | None:
        return self._prog_id(self.name)

    def staged_prog_id(self) -> int | None:
        """The program of a staging directory an interrupted attach left (see stage())."""
        return self._prog_id(self.name + "%new")

    def _prog_id(self, dirname: str) -> int | None:
        require_bpffs()
        with _tree(BPFFS, ["offload", _escape(self.netns), dirname]) as d:
            if d is None:
                return None
            try:
                fd = bpfsys.obj_get(_pin_path(d, "prog"))
            except OSError:
                return None
        try:
            return bpfsys.obj_info_id(fd)
        finally:
            os.close(fd)

    def pinned_link(self, staged: bool = False) -> int | None:
        """An fd for the slot's pinned bpf_link (the staged one with `staged`); None without one.
        The caller closes it."""
        require_bpffs()
        with _tree(BPFFS, ["offload", _escape(self.netns), self.name + ("%new" if staged else "")]) as d:
            if d is None or not _exists_at(d, LINK_PIN):
                return None
            try:
                return bpfsys.obj_get(_pin_path(d, LINK_PIN))
            except OSError:
                return None

    def holding_link(self, ifindex: int, prog_id: int) -> int | None:
        """An fd (the caller closes it) for the slot's pinned, else staged, bpf_link if the kernel
        says it holds program `prog_id` on `ifindex`; None otherwise (no link: netlink holds it)."""
        for staged in (False, True):
            fd = self.pinned_link(staged)
            if fd is None:
                continue
            link = xdplink.info(fd)
            if link and link.ifindex == ifindex and link.prog_id == prog_id:
                return fd
            os.close(fd)
        return None

    def stage_link(self, link_fd: int) -> None:
        """Pin a bpf_link into the staging directory beside its program (after stage()): commit()
        moves it in with the program; discard_stage() unpins it, which detaches a link nothing
        else holds."""
        with _tree(BPFFS, ["offload", _escape(self.netns), self.name + "%new"]) as st:
            if st is None:
                raise StateError(f"{self.pin_dir}%new: no staged pins of {self.label} to pin the link beside",
                                 hint="a bug: stage() comes first")
            bpfsys.obj_pin(link_fd, _pin_path(st, LINK_PIN))

    def open_prog(self) -> int:
        return self._open_pin("prog", "program")

    def open_map(self, name: str) -> int:
        return self._open_pin(f"map_{_escape(name)}", f"map {name}")

    def _open_pin(self, pin: str, what: str) -> int:
        """An fd for one of the slot's pins; a missing or foreign one is StateError (its record
        names it, the kernel does not hold it: the state is damaged, not the command)."""
        with self._pins() as p:
            try:
                if p is None:
                    raise FileNotFoundError(errno.ENOENT, "no pins")
                return bpfsys.obj_get(_pin_path(p, pin))
            except OSError as e:
                raise StateError(f"{self.pin_dir}: the pinned {what} of {self.label} cannot be opened "
                                 f"({os.strerror(e.errno or errno.EIO)})",
                                 hint=f"offload gc repairs offload's state; offload detach {self.iface} "
                                      "removes it") from None

    # -- writing ------------------------------------------------------------------------------------
    def stage(self, prog_fd: int, maps: dict[str, int], meta: dict | None = None) -> None:
        """Pin a program and its maps into the staging directory (NAME%new), and its record beside
        the record (NAME.json%new), before the kernel swap: a run killed after the swap leaves the
        attached program pinned, so it is still recognisably offload's (ownership counts a staged
        program that is attached), and recorded, so the next command knows exactly what it is."""
        require_bpffs()
        if meta is not None:
            self.stage_record(meta)
        with _tree(BPFFS, ["offload", _escape(self.netns)], create=True) as ns:
            staging = self.name + "%new"
            _rmtree_at(ns, staging)
            os.mkdir(staging, 0o700, dir_fd=ns)
            st = _open_dir(ns, staging, str(self.pin_dir) + "%new", create=False)
            try:
                bpfsys.obj_pin(prog_fd, _pin_path(st, "prog"))
                for mname, fd in maps.items():
                    bpfsys.obj_pin(fd, _pin_path(st, f"map_{_escape(mname)}"))
            except BaseException:
                _rmtree_at(ns, staging)
                raise
            finally:
                os.close(st)

    def staged_maps(self) -> list[str]:
        return self._map_names(self.name + "%new")

    def pinned_maps(self) -> list[str]:
        return self._map_names(self.name)

    def _map_names(self, dirname: str) -> list[str]:
        with _tree(BPFFS, ["offload", _escape(self.netns), dirname]) as st:
            if st is None:
                return []
            return sorted(_unescape(n[4:]) for n in os.listdir(st) if n.startswith("map_"))

    def stage_record(self, meta: dict) -> None:
        """Write the staged record alone (NAME.json%new): a write-ahead, before the kernel change."""
        with self._meta_dir(create=True) as d:
            fs.replace_file(d, f"{self.name}.json%new", _record_bytes(meta), 0o600)

    def put_record(self, meta: dict | None = None) -> None:
        """Write the record (`meta`), or put the staged one in its place (None), for pins that
        are in place already: how gc repairs a record that does not name the pinned program."""
        name = self.name
        with self._meta_dir(create=True) as d:
            _clear_unless_file(d, f"{name}.json")   # a directory or FIFO planted there: a rename cannot replace it
            if meta is None:
                os.replace(f"{name}.json%new", f"{name}.json", src_dir_fd=d, dst_dir_fd=d)
                durable.sync(d)   # now, or with the batch of an apply (group commit)
            else:
                fs.replace_file(d, f"{name}.json", _record_bytes(meta), 0o600)
                _rmtree_at(d, f"{name}.json%new")

    def discard_stage(self) -> None:
        with _tree(BPFFS, ["offload", _escape(self.netns)]) as ns:
            if ns is not None:
                _rmtree_at(ns, self.name + "%new")
        _prune(BPFFS, ["offload", _escape(self.netns)])
        with self._meta_dir() as d:
            if d is not None:
                _rmtree_at(d, f"{self.name}.json%new")

    def commit(self, meta: dict | None = None) -> None:
        """Swap the staged pins in with one atomic exchange (a reader sees the old pins or the
        new, never half and never none), drop the old ones, then put the staged record (or
        `meta`) in place atomically. A kill between the two leaves a record that does not name
        the pinned program: readers then take the staged one, which does (verified_meta)."""
        name, staging = self.name, self.name + "%new"
        with _tree(BPFFS, ["offload", _escape(self.netns)], create=True) as ns:
            if _exists_at(ns, name):
                fs.exchange(staging, name, dir_fd=ns)   # staging now holds the old pins
            else:
                os.rename(staging, name, src_dir_fd=ns, dst_dir_fd=ns)
            _rmtree_at(ns, staging)
        self.put_record(meta)

    def write(self, prog_fd: int, maps: dict[str, int], meta: dict, link_fd: int | None = None) -> None:
        """Pin and record in one go (for a program that is attached already; with the bpf_link
        that holds it, `link_fd`, pinned beside it)."""
        self.stage(prog_fd, maps)
        if link_fd is not None:
            self.stage_link(link_fd)
        self.commit(meta)

    def remove(self) -> None:
        """Remove the pins and the metadata, and the namespace's directories once empty."""
        name = self.name
        try:
            require_bpffs()
            with _tree(BPFFS, ["offload", _escape(self.netns)]) as ns:
                if ns is not None:
                    _rmtree_at(ns, name)
            _prune(BPFFS, ["offload", _escape(self.netns)])
        except EnvironmentProblem:
            pass
        with self._meta_dir() as d:
            if d is not None:
                # the record, and any temporary copy a killed writer left (fs.replace_file's)
                for f in [f"{name}.json", f"{name}.json%new"] + [n for n in os.listdir(d)
                                             if n.startswith(f".{name}.json.") and n.endswith(".tmp")]:
                    _rmtree_at(d, f)   # a directory planted there too
        _prune(RUN.parent, [RUN.name, "attachments", _escape(self.netns)])


def _prune(root: Path, parts: list[str]) -> None:
    """Remove root/parts... from the deepest up, as far as they are empty."""
    for depth in range(len(parts), 0, -1):
        with _tree(root, parts[:depth - 1]) as parent:
            if parent is None:
                continue
            if _rmdir_quiet(parent, parts[depth - 1]):
                _unhold(root, parts[:depth])


def state_file(name: str) -> int:
    """An fd (read/write, created 0600) for a file of offload's own under the verified /run tree."""
    with _tree(RUN.parent, [RUN.name], create=True) as d:
        try:
            return os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=d)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _unsafe(str(RUN / name), "it is a symbolic link") from None
            raise OSError(e.errno, e.strerror, str(RUN / name)) from None   # named whole, not by dir fd


@contextmanager
def locked(name: str, timeout: float, who: str, hint: str) -> Iterator[None]:
    """Hold an exclusive flock on offload's state file `name` (waiting up to `timeout` seconds);
    the holder's pid is written into it so a waiter can say who holds it."""
    import fcntl
    import time

    with os.fdopen(state_file(name), "r+") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read(32).strip() or "?"
                    raise RefusedError(f"{who} holds {RUN / name} (pid {holder}) and did not finish within "
                                       f"{timeout:g}s", hint=hint) from None
                time.sleep(0.02)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


STATE_LOCK = "state.lock"
LOCK_TIMEOUT = float(os.environ.get("OFFLOAD_LOCK_TIMEOUT", 30))
_state_mutex = threading.RLock()   # the flock is per open file: threads and nested calls share one
_state_depth = 0


@contextmanager
def state_lock(timeout: float | None = None, hint: str = "wait for it, or set OFFLOAD_LOCK_TIMEOUT") -> Iterator[None]:
    """The one lock of everything that changes offload's state (attach, detach, gc, filter edits,
    apply, watch's reconcile): a gc never frees an attach in progress, two attaches never race for
    one slot. Reentrant in a process (apply's attaches run under apply's lock)."""
    global _state_depth
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    if not _state_mutex.acquire(timeout=timeout):
        raise RefusedError(f"another thread of this offload holds {RUN / STATE_LOCK} and did not finish within "
                           f"{timeout:g}s", hint=hint)
    try:
        if _state_depth:
            _state_depth += 1
            try:
                yield
            finally:
                _state_depth -= 1
            return
        with locked(STATE_LOCK, timeout, "another offload command", hint):
            _state_depth = 1
            try:
                yield
            finally:
                _state_depth = 0
    finally:
        _state_mutex.release()


def namespaces() -> list[str]:
    """Every namespace offload holds records or pins for."""
    names: set[str] = set()
    with _tree(RUN.parent, [RUN.name, "attachments"]) as d:
        if d is not None:
            names |= {_unescape(n) for n in os.listdir(d)}
    try:
        require_bpffs()
        with _tree(BPFFS, ["offload"]) as d:
            if d is not None:
                names |= {_unescape(n) for n in os.listdir(d)}
    except EnvironmentProblem:
        pass
    return sorted(names)


def slots(netns: str) -> list[Slot]:
    """Every interface offload holds records or pins for in namespace `netns`."""
    ifaces: set[str] = set()
    with _tree(RUN.parent, [RUN.name, "attachments", _escape(check_netns(netns))]) as d:
        if d is not None:
            ifaces |= {n.removesuffix("%new")[:-5] for n in os.listdir(d)
                       if n.endswith((".json", ".json%new"))}
    try:
        require_bpffs()
        with _tree(BPFFS, ["offload", _escape(netns)]) as d:
            if d is not None:
                ifaces |= {n.removesuffix("%new") for n in os.listdir(d)}
    except EnvironmentProblem:
        pass
    out = []
    for i in sorted(ifaces):
        iface, sep, member = i.partition(MEMBER_SEP)   # escaped names: unescaped apart
        try:
            out.append(Slot(netns, _unescape(iface), _unescape_member(member) if sep else None))
        except OffloadError:   # a name offload would never have written: not ours to touch
            continue
    return out


def interface_slots(netns: str, iface: str) -> list[Slot]:
    """Every slot offload holds for `iface`: its own and its chain members'."""
    return by_interface(netns).get(iface, [])


def by_interface(netns: str) -> dict[str, list[Slot]]:
    """Every slot of namespace `netns`, listed once and grouped by interface."""
    out: dict[str, list[Slot]] = {}
    for s in slots(netns):
        out.setdefault(s.iface, []).append(s)
    return out


def remove_namespace(netns: str) -> None:
    """Forget every attachment of a namespace that is going away (its devices take their
    programs along; the pins would otherwise keep the programs and maps alive)."""
    check_netns(netns)
    with _tree(RUN.parent, [RUN.name, "attachments"]) as d:
        if d is not None:
            _rmtree_at(d, _escape(netns))
            _unhold(RUN.parent, [RUN.name, "attachments", _escape(netns)])
    _prune(RUN.parent, [RUN.name, "attachments"])
    try:
        require_bpffs()
    except EnvironmentProblem:
        return
    with _tree(BPFFS, ["offload"]) as d:
        if d is not None:
            _rmtree_at(d, _escape(netns))
            _unhold(BPFFS, ["offload", _escape(netns)])
    _prune(BPFFS, ["offload"])
