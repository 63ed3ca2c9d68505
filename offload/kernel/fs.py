"""File-system calls the standard library lacks: renameat2(RENAME_EXCHANGE); directories opened
without following a symlink an unprivileged user controls, and files replaced atomically in them;
bounded reads of regular files only (a device never ends, a FIFO blocks)."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from offload.errors import RefusedError, UsageError
from offload.kernel import durable

AT_FDCWD = -100
RENAME_EXCHANGE = 1 << 1


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    # the C library this process already runs on (find_library() would run ldconfig: ~20 ms)
    return ctypes.CDLL(None, use_errno=True)


def exchange(a: str | os.PathLike, b: str | os.PathLike, dir_fd: int | None = None) -> None:
    """Swap two paths atomically (both must exist; relative to `dir_fd` when given): a reader sees
    one or the other, never neither. bpffs supports it (simple_rename); raises OSError (EINVAL)
    where a file system does not."""
    fn = _libc().renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at = AT_FDCWD if dir_fd is None else dir_fd
    if fn(at, os.fsencode(a), at, os.fsencode(b), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(code)}")


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40   # the kernel's own limit on symlinks in one lookup


def open_dir(path: str, create: bool = False, mode: int = 0o755) -> int:
    """An fd for directory `path`, reached component by component from / without following any
    symlink that is not root's (or ours): someone who could plant one could otherwise send a root
    write anywhere. Every later operation is relative to the fd, so nothing can redirect it.
    Missing directories are made (`mode`) when `create`."""
    if not os.path.isabs(path):
        raise UsageError(f"{path}: an absolute path is needed here")
    return _walk(path, create, mode)


def open_file(path: str | os.PathLike, flags: int) -> int:
    """An fd for file `path` (relative to the current directory) opened with `flags`, reached as
    open_dir() reaches a directory: no link that is not root's (or ours) followed on the way, the
    file itself included (RefusedError). '..' is the kernel's (the real parent), as `cat` reads it.
    Anything else that fails is the OSError os.open() would raise."""
    path = os.fspath(path)
    return _walk(os.path.join(os.getcwd(), path), file_flags=flags, shown=path)


def _walk(path: str, create: bool = False, mode: int = 0o755, file_flags: int | None = None,
          shown: str | None = None) -> int:
    """open_dir(), or with `file_flags` open_file(): the last component opened as a file."""
    reading = file_flags is not None
    todo = [(p, False) for p in path.split("/") if p]   # (component, from a trusted link's target)
    walked: list[str] = []                                 # the real directories the fd stands for
    fd = os.open("/", _DIR)
    links = 0
    try:
        while todo:
            part, from_link = todo.pop(0)
            if part == ".":
                continue
            if part == "..":
                if not (from_link or reading):   # in a path offload writes, a climb is how paths are smuggled out
                    raise UsageError(f"{path}: '..' is not allowed in this path",
                                     hint="give the path without '..' (the real directory it means)")
                walked = walked[:-1]   # the real parent (lib -> ../usr/lib): walk again from /
                todo[:0] = [(p, False) for p in walked]
                walked = []
                os.close(fd)
                fd = os.open("/", _DIR)
                continue
            made = False
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if reading:
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), shown) from None
                if not create:
                    raise UsageError(f"{path}: no such directory ({part} is missing)",
                                     hint="make the directory first, or give a path in one that exists") from None
                os.mkdir(part, mode, dir_fd=fd)
                made = True
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid not in (0, os.geteuid()):
                    raise RefusedError(f"{shown or path}: {part} is a symbolic link owned by uid {st.st_uid}; offload "
                                       "does not follow links others control",
                                       hint=f"point the {'argument' if reading else 'option'} at the real "
                                            f"{'file' if reading else 'directory'}, or remove the link")
                links += 1
                if links > _MAX_LINKS:
                    raise UsageError(f"{shown or path}: too many symbolic links")
                target = os.readlink(part, dir_fd=fd)
                todo[:0] = [(p, True) for p in target.split("/") if p]
                if target.startswith("/"):
                    walked = []
                    os.close(fd)
                    fd = os.open("/", _DIR)
                continue
            if reading and not todo:   # the file itself: a link swapped in meanwhile is not followed
                nxt = os.open(part, file_flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                return nxt
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except OSError as e:
                if reading:
                    raise OSError(e.errno, e.strerror, shown) from None
                if e.errno in (errno.ENOTDIR, errno.ELOOP):   # a file, or a link swapped in meanwhile
                    raise UsageError(f"{path}: {part} is not a directory",
                                     hint="give a path whose every part is a directory") from None
                raise
            os.close(fd)
            fd = nxt
            walked.append(part)
            if made:
                os.fchmod(fd, mode)   # whatever the umask
        if reading:   # the path ended at a directory ('/', '.', '..')
            nxt = os.open(".", file_flags | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            return nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def output_path(path: str, what: str = "", directory: bool = False) -> str:
    """The rule for every path offload writes (the journal, the exports, bench and demo outputs),
    as given: no '..' (through a link it climbs elsewhere than the text says, and lexically it
    means a path the operator did not write) and, for a file, a name. Returned absolute. Where it
    is written, its directory is reached by open_dir() (no link others control) and the file is
    never a link (replace_file, the journal's O_NOFOLLOW)."""
    parts, named = path.split("/"), f"{what} {path!r}".lstrip()
    if not path or "\0" in path:
        raise UsageError(f"{named}: not a path", hint="give the path of a file offload may write")
    if ".." in parts:
        raise UsageError(f"{named}: '..' is not allowed in a path offload writes",
                         hint="give the path without '..' (the real directory it means)")
    if not directory and parts[-1] in ("", "."):
        raise UsageError(f"{named}: a file name is needed", hint="end the path with the file's name")
    return os.path.abspath(path)


class Untrusted(PermissionError):
    """A directory that is a symbolic link, not a directory, or not its owner's alone."""


def open_owned(parent: int | None, name: str, owners: tuple[int, ...] | None = None, create: bool = False,
               sticky_ok: bool = False) -> int | None:
    """`name` in directory fd `parent` (an absolute path when parent is None) opened as a directory
    that one of `owners` (default: our euid) owns and no one else may write to (unless sticky,
    with `sticky_ok`: then no one else can move it away), never through a symlink; made 0700 when
    missing and `create`. None when it does not exist. Raises Untrusted with the reason."""
    owners = (os.geteuid(),) if owners is None else owners
    try:
        fd = _open_or_make(parent, name, create)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Untrusted(e.errno, "it is a symbolic link or not a directory") from None
        raise
    try:
        check_owned(fd, owners, sticky_ok)
    except Untrusted:
        os.close(fd)
        raise
    return fd


def check_owned(fd: int, owners: tuple[int, ...], sticky_ok: bool = False) -> None:
    """Raise Untrusted unless directory `fd` is one of `owners`' and no one else may write to it
    (unless sticky, with `sticky_ok`)."""
    st = os.fstat(fd)
    shared = st.st_mode & 0o022 and not (sticky_ok and st.st_mode & stat.S_ISVTX)
    if st.st_uid not in owners or shared:
        who = " or ".join(f"uid {o}" for o in owners)
        raise Untrusted(errno.EPERM, f"it belongs to uid {st.st_uid} with mode {stat.filemode(st.st_mode)}; "
                                     f"offload needs it owned by {who} and writable by no one else"
                                     + (" unless sticky" if sticky_ok else ""))


def _open_or_make(parent: int | None, name: str, create: bool) -> int:
    try:
        return os.open(name, _DIR, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:   # made meanwhile by another offload
        pass
    return os.open(name, _DIR, dir_fd=parent)


@contextmanager
def owned_tree(root: Path, parts: list[str], create: bool = False,
               on_untrusted=None) -> Iterator[int | None]:
    """A verified fd for root/parts... (None when a part does not exist and `create` is off): every
    part opened by open_owned(). The root itself (a mount point, /run) is trusted as configured.
    `on_untrusted(where, reason)` turns a refusal into the caller's own error."""
    fds: list[int] = []
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fds.append(fd)
        for depth, part in enumerate(parts, 1):
            try:
                nxt = open_owned(fd, part, create=create)
            except Untrusted as e:
                if on_untrusted is None:
                    raise
                # the path only for the message: joined per call it cost more than the opens
                raise on_untrusted(str(root.joinpath(*parts[:depth])), e.strerror) from None
            except OSError as e:   # e.g. a read-only /run: named by its whole path, not by a dir fd
                raise OSError(e.errno, e.strerror, str(root.joinpath(*parts[:depth]))) from None
            if nxt is None:
                yield None
                return
            fds.append(nxt)
            fd = nxt
        yield fd
    finally:
        for f in fds:
            os.close(f)


def file_kind(mode: int) -> str:
    """What a non-regular file is, for a message."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return kind
    return "not a plain file"


def read_regular(path: str | os.PathLike, limit: int, what: str, error: type[UsageError] = UsageError) -> bytes:
    """The content of regular file `path`, at most `limit` bytes; `error` (bad input) for anything
    else: a device (/dev/zero never ends), a FIFO (opening it would wait for a writer), a directory,
    a larger file; RefusedError when a link others control is on its way (open_file). The message
    names `what` and the path, never the content."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it. Never
        # through a link others control: root acts on what it reads (a policy, a program to load).
        fd = open_file(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError as e:
        full = os.path.realpath(path)   # where it was looked for: `..` and links resolved
        raise error(f"cannot read {what} {path}: {e.strerror}" + ("" if full == str(path) else f" ({full})"),
                    hint="check the path" + ("" if os.path.isabs(path) else " (relative paths are taken from the "
                                                 "current directory)")) from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None
    except RefusedError as e:   # its message starts with the path
        raise RefusedError(f"cannot read {what} {e.message}", hint=e.hint) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is not a regular file ({file_kind(st.st_mode)})")
        if st.st_size > limit:
            raise error(f"{what} {path} is larger than {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(st.st_size + 1)   # one byte over what it says it holds tells a liar
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > st.st_size:   # a /proc or /sys file says 0 bytes and reads on (pagemap: terabytes)
        raise error(f"{what} {path} is no ordinary file: it says it holds {st.st_size} bytes and reads on "
                    "(a /proc or /sys file?)")
    return raw


# Kernel interfaces that look like file systems (statfs f_type): a file there is a knob
# (/proc/sys/..., /sys/class/...), never a place to write data.
_KERNEL_FS = {0x9FA0: "proc", 0x62656572: "sysfs", 0x64626720: "debugfs", 0x74726163: "tracefs",
              0x27E0EB: "cgroup", 0x63677270: "cgroup2", 0x73636673: "securityfs", 0xCAFE4A11: "bpf",
              0x62656570: "configfs", 0xDE5E81E4: "efivarfs", 0x6165676C: "pstore"}


def kernel_fs(fd: int) -> str | None:
    """The type of the kernel-interface file system `fd` is on (proc, sysfs, ...), or None."""
    buf = ctypes.create_string_buffer(256)   # struct statfs: 120 bytes on 64-bit Linux
    if _libc().fstatfs(fd, buf) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"fstatfs: {os.strerror(code)}")
    # f_type, a long (__fsword_t), is the first field; magics are 32-bit
    return _KERNEL_FS.get(ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """`name` in directory `dir_fd` as it is (a link not followed), or None when it is not there."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def require_regular_or_absent(dir_fd: int, name: str, path: str) -> None:
    """Refuse (bad input) to replace `name` when it is not a regular file: a directory someone
    planted, a device, a link (replacing it would silently drop whatever it pointed to)."""
    st = lstat_at(dir_fd, name)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} exists and is not a regular file ({file_kind(st.st_mode)})",
                         hint="remove it, or choose another path")


def replace_file(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Replace `name` in `dir_fd` atomically: a dot-file (readers that skip dot-files, like NFD
    and node-exporter, never see it half-written), O_EXCL|O_NOFOLLOW, fsynced, then renamed.
    Inside a durable.group() both fsyncs are the group's one commit."""
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)   # readable by the collector's own user whatever the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            durable.sync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise
    durable.sync(dir_fd)


def replace_path(path: str, data: bytes, create_dirs: bool = False, mode: int = 0o644) -> None:
    """replace_file() by path: the directory reached by open_dir() (made if `create_dirs`)."""
    directory, name = os.path.split(os.path.abspath(path))
    fd = open_dir(directory, create=create_dirs)
    try:
        require_regular_or_absent(fd, name, path)
        replace_file(fd, name, data, mode)
    finally:
        os.close(fd)
