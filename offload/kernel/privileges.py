"""Effective capabilities of this process, so commands fail early with a message that names them."""

from __future__ import annotations

import errno
import os
import stat
from functools import lru_cache

from offload.errors import EnvironmentProblem, OffloadError, PrivilegeError

CAP_DAC_OVERRIDE = 1
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_BPF: "CAP_BPF",
         CAP_PERFMON: "CAP_PERFMON", CAP_DAC_OVERRIDE: "CAP_DAC_OVERRIDE"}
# What offload's commands use: XDP links (NET_ADMIN), loading (BPF), objects by id and namespaces
# (SYS_ADMIN), BPF_PROG_RUN and stats (PERFMON). The systemd unit grants the same.
NEEDED = (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN, CAP_PERFMON)
GRANT = ("AmbientCapabilities= and CapabilityBoundingSet= in a systemd unit, securityContext.capabilities.add "
         "in a pod, or run it as root")


_CAP_V3 = 0x20080522   # _LINUX_CAPABILITY_VERSION_3: two 32-bit halves of each set


@lru_cache(maxsize=1)
def _capget():
    import ctypes

    fn = ctypes.CDLL(None, use_errno=True).capget
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return fn


def effective() -> int:
    """This thread's effective capabilities: capget(2), one system call (an attach asks for every
    interface of a batch); /proc/self/status where that fails."""
    import ctypes

    header = (ctypes.c_uint32 * 2)(_CAP_V3, 0)
    data = (ctypes.c_uint32 * 6)()   # two struct __user_cap_data_struct: effective, permitted, inheritable
    if _capget()(ctypes.addressof(header), ctypes.addressof(data)) == 0:
        return data[0] | data[3] << 32
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require(*caps: int, action: str) -> None:
    """Raise PrivilegeError naming every missing capability for `action`."""
    missing = lacking(caps)
    if missing:
        raise PrivilegeError(f"{action} needs {', '.join(missing)}, which this process lacks", hint=f"grant it: {GRANT}")


def lacking(caps: tuple[int, ...] = NEEDED) -> list[str]:
    have = effective()
    return [NAMES[c] for c in caps if not have >> c & 1]


def _nearest(path: str) -> tuple[str, os.stat_result | None]:
    """`path`, or the nearest of its parents that exists, with its stat."""
    while True:
        try:
            return path, os.stat(path)
        except OSError:
            parent = os.path.dirname(path)
            if parent == path:
                return path, None
            path = parent


def explain_denied(e: OSError) -> OffloadError:
    """A refusal (EPERM, EACCES, EROFS) said as what was refused and what this process lacks: the
    file and the permission it needs on it, or the capabilities the kernel looks for."""
    from offload.kernel.fs import Untrusted

    what = e.strerror or str(e) or os.strerror(e.errno or errno.EPERM)
    if isinstance(e, Untrusted) or e.errno is None:   # our own refusal (a link, a stranger's directory)
        return PrivilegeError(f"refused: {what}")
    if e.filename:
        path = os.path.abspath(os.fsdecode(e.filename))
        if e.errno == errno.EROFS:
            return EnvironmentProblem(f"{path}: {what}: offload cannot write there",
                                      hint="make it writable: ReadWritePaths= (or RuntimeDirectory=, StateDirectory=, "
                                           "CacheDirectory=) in a systemd unit, a writable volume in a container")
        where, st = _nearest(path)
        owner = f" (owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)})" if st else ""
        # every permission it lacks there: a read-only command refused a 0700 directory lacks read
        kind = " and ".join(k for k, m in (("read", os.R_OK), ("write", os.W_OK)) if st and not os.access(where, m))
        who = f"uid {os.geteuid()}" + (", without CAP_DAC_OVERRIDE" if lacking((CAP_DAC_OVERRIDE,)) else "")
        return PrivilegeError(f"{path}: {what}: this process ({who}) lacks {kind or 'the'} permission on {where}{owner}",
                              hint=f"give uid {os.geteuid()} {kind or 'that'} access to {where}, or run offload as its owner")
    missing = lacking()
    if missing:
        return PrivilegeError(f"the kernel refused: {what}: this process lacks {', '.join(missing)}",
                              hint=f"offload needs {', '.join(NAMES[c] for c in NEEDED)}: {GRANT}")
    return PrivilegeError(f"the kernel refused: {what}, though this process holds "
                          f"{', '.join(NAMES[c] for c in NEEDED)}",
                          hint="a security module, kernel lockdown or a seccomp filter forbids it here")
