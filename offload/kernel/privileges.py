"""Effective capabilities of this process, so commands fail early with a message that names them."""

from __future__ import annotations

from offload.errors import PrivilegeError

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_BPF = 39
NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_BPF: "CAP_BPF"}


def effective() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require(*caps: int, action: str) -> None:
    """Raise PrivilegeError naming every missing capability for `action`."""
    have = effective()
    missing = [NAMES[c] for c in caps if not have >> c & 1]
    if missing:
        raise PrivilegeError(f"{action} needs {', '.join(missing)}, which this process lacks",
                             hint="run it as root (sudo)")
