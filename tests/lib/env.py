"""The one place tests get devices from, after the kernel's net selftests (lib/py/env.py).

- `NetEnv.from_environment()`: a veth lab in its own network namespace by default, made for the
  test and removed after it; or a real NIC pair when OFFLOAD_TEST_NETIF (and optionally
  OFFLOAD_TEST_PEER) name interfaces of the current namespace, so the same tests run on a
  SmartNIC; nothing is created or removed then, and whatever offload attached is detached.
- `NetdevSim()`: a netdevsim device with one port (the VM lane's kernel has netdevsim), like the
  selftests' NetdevSimDev.

Cleanup is structural: everything is registered on the environment's defer stack as it is made,
and runs when the environment closes, in reverse order, whatever the test did.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from contextlib import ExitStack
from typing import Any

from lib.cli import offload, offload_json
from offload import lab

_AS_ENV = "__env__"   # "the environment's own namespace", where None means the current one


def unique_name() -> str:
    return "t" + secrets.token_hex(3)          # 7 chars: fits lab names and IFNAMSIZ


class NetEnv:
    """Interfaces to test on: `ifname` (the device under test), `peer` (its link partner, if any),
    both in network namespace `netns` (None: the current one)."""

    kind = "base"

    def __init__(self) -> None:
        self.netns: str | None = None
        self.ifname = ""
        self.peer: str | None = None
        self._defer = ExitStack()

    @staticmethod
    def from_environment() -> "NetEnv":
        real = os.environ.get("OFFLOAD_TEST_NETIF")
        return RealEnv(real, os.environ.get("OFFLOAD_TEST_PEER")) if real else VethEnv()

    def make_lab(self, pairs: int = 1, mtus: list[int] | None = None, queues: int = 1) -> lab.Lab:
        """A further veth lab, removed with this environment."""
        name = unique_name()
        made = lab.up(name, pairs=pairs, mtus=mtus, queues=queues)
        self.defer(lab.down, name)
        return made

    def defer(self, fn, *args, **kwargs) -> None:
        self._defer.callback(fn, *args, **kwargs)

    def close(self) -> None:
        self._defer.close()

    def __enter__(self) -> "NetEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running things where the devices are -------------------------------------------------------
    def cmd(self, *argv: str, netns: str | None = _AS_ENV, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
        ns = self.netns if netns == _AS_ENV else netns
        full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
        return subprocess.run(full, capture_output=True, text=True, check=check, timeout=120,
                              env={**os.environ, **(env or {})})

    def json_cmd(self, *argv: str, netns: str | None = _AS_ENV) -> Any:
        return json.loads(self.cmd(*argv, netns=netns).stdout)

    def offload(self, *args: str, netns: str | None = _AS_ENV, **kw) -> subprocess.CompletedProcess:
        """`offload ARGS --netns NS` in this environment's namespace (see lib.cli.offload)."""
        return offload(*args, netns=self.netns if netns == _AS_ENV else netns, **kw)

    def offload_json(self, *args: str, netns: str | None = _AS_ENV, **kw) -> Any:
        return offload_json(*args, netns=self.netns if netns == _AS_ENV else netns, **kw)

    def _detach_at_close(self, *devs: str | None) -> None:
        for dev in filter(None, devs):
            self.defer(self.offload, "detach", dev, check=False)


class VethEnv(NetEnv):
    """A veth pair in a lab namespace of its own."""

    kind = "veth"

    def __init__(self) -> None:
        super().__init__()
        made = self.make_lab(pairs=1)
        self.netns, self.ifname, self.peer = made.netns, made.pairs[0].a, made.pairs[0].b
        self._detach_at_close(self.ifname, self.peer)   # before the lab goes: defer runs in reverse


class RealEnv(NetEnv):
    """Interfaces that exist already (a real NIC pair): used, never created or removed."""

    kind = "real"

    def __init__(self, ifname: str, peer: str | None) -> None:
        super().__init__()
        self.ifname, self.peer = ifname, peer
        self._detach_at_close(ifname, peer)


class NetdevSim(NetEnv):
    """A netdevsim device with one port: an offload-capable NIC in software (CONFIG_NETDEVSIM)."""

    kind = "netdevsim"
    NEW, DEL = "/sys/bus/netdevsim/new_device", "/sys/bus/netdevsim/del_device"

    def __init__(self) -> None:
        super().__init__()
        if not os.path.exists(self.NEW):
            raise RuntimeError("this kernel has no netdevsim (run the vm lane: scripts/vm-test)")
        self.dev_id = 100 + secrets.randbelow(800)
        write(self.NEW, f"{self.dev_id} 1")
        self.defer(write, self.DEL, str(self.dev_id))
        net = f"/sys/bus/netdevsim/devices/netdevsim{self.dev_id}/net"
        for _ in range(100):  # the port's netdev appears asynchronously
            if os.path.isdir(net) and os.listdir(net):
                break
            time.sleep(0.05)
        (self.ifname,) = os.listdir(net)
        self._detach_at_close(self.ifname)
        subprocess.run(["ip", "link", "set", "dev", self.ifname, "up"], check=True)

    def debugfs(self, name: str, port: bool = False) -> str:
        """Path of a netdevsim debugfs switch (device-wide, or of port 0)."""
        base = f"/sys/kernel/debug/netdevsim/netdevsim{self.dev_id}"
        return f"{base}/ports/0/{name}" if port else f"{base}/{name}"


def write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
