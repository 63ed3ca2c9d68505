"""ETHTOOL_GDRVINFO: driver, driver version, firmware version and bus of a netdev.

ethtool's netlink API has no drvinfo message, and the python `ethtool` module returns only the
driver and bus (one ioctl each), so one ioctl here returns all four fields.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import socket
from dataclasses import dataclass

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x00000003


class _drvinfo(ctypes.Structure):  # struct ethtool_drvinfo (include/uapi/linux/ethtool.h)
    _fields_ = [
        ("cmd", ctypes.c_uint32),
        ("driver", ctypes.c_char * 32),
        ("version", ctypes.c_char * 32),
        ("fw_version", ctypes.c_char * 32),
        ("bus_info", ctypes.c_char * 32),
        ("erom_version", ctypes.c_char * 32),
        ("reserved2", ctypes.c_char * 12),
        ("n_priv_flags", ctypes.c_uint32),
        ("n_stats", ctypes.c_uint32),
        ("testinfo_len", ctypes.c_uint32),
        ("eedump_len", ctypes.c_uint32),
        ("regdump_len", ctypes.c_uint32),
    ]


# driver, version, fw_version and bus_info: what a DrvInfo holds, in one run of bytes
_TEXT = _drvinfo.erom_version.offset - _drvinfo.driver.offset


class _ifreq(ctypes.Structure):
    _fields_ = [("ifr_name", ctypes.c_char * 16), ("ifr_data", ctypes.c_void_p), ("pad", ctypes.c_char * 16)]


@dataclass(frozen=True)
class DrvInfo:
    driver: str | None
    version: str | None
    firmware: str | None
    bus_info: str | None


def _s(b: bytes) -> str | None:
    v = b.decode(errors="replace").strip()
    return v or None


class DrvInfoReader:
    """Holds one socket for a batch of ioctls (one per device; no processes, no netlink trips).
    Devices answering the same bytes share one DrvInfo (frozen)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # One request reused for every device: only the name changes (fewer ctypes objects per call)
        self._info = _drvinfo()
        self._req = _ifreq(ifr_data=ctypes.addressof(self._info))
        self._seen: dict[bytes, DrvInfo] = {}   # devices of one driver answer alike: decoded once

    def read(self, ifname: str) -> DrvInfo | None:
        info = self._info
        ctypes.memset(ctypes.addressof(info), 0, ctypes.sizeof(info))
        info.cmd = ETHTOOL_GDRVINFO
        self._req.ifr_name = ifname.encode()
        try:
            fcntl.ioctl(self.sock.fileno(), SIOCETHTOOL, self._req)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.ENODEV, errno.ENOTSUP):
                return None
            raise
        raw = ctypes.string_at(ctypes.addressof(info) + _drvinfo.driver.offset, _TEXT)
        if raw not in self._seen:
            self._seen[raw] = DrvInfo(_s(info.driver), _s(info.version), _s(info.fw_version), _s(info.bus_info))
        return self._seen[raw]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "DrvInfoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
