"""The one place tests get devices from, after the kernel's net selftests (lib/py/env.py).

- default: a veth lab in its own network namespace, made for the test and removed after it;
- a real NIC pair: OFFLOAD_TEST_NETIF (and optionally OFFLOAD_TEST_PEER) name interfaces of the
  current namespace, so the same tests run on a SmartNIC; nothing is created or removed then;
- netdevsim: in the real-kernel VM lane (OFFLOAD_TEST_NETDEVSIM=1), a netdevsim port.

Cleanup is structural: everything made is registered on a defer stack when it is made.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from offload import lab


def unique_name() -> str:
    return "t" + secrets.token_hex(3)          # 7 chars: fits lab names and IFNAMSIZ


@dataclass
class NetEnv:
    kind: str                     # "veth" | "real"
    netns: str | None             # namespace holding the interfaces (None: the current one)
    ifname: str
    peer: str | None
    _defer: ExitStack = field(default_factory=ExitStack, repr=False)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_environment(cls) -> "NetEnv":
        real = os.environ.get("OFFLOAD_TEST_NETIF")
        if real:
            return cls("real", None, real, os.environ.get("OFFLOAD_TEST_PEER"))
        env = cls("veth", None, "", None)
        made = env.make_lab(pairs=1)
        env.netns, env.ifname, env.peer = made.netns, made.pairs[0].a, made.pairs[0].b
        return env

    @classmethod
    def netdevsim(cls) -> "NetEnv":
        """A netdevsim port (the VM lane's kernel has it): an offload-capable device in software."""
        new = "/sys/bus/netdevsim/new_device"
        if not os.path.exists(new):
            raise RuntimeError("this kernel has no netdevsim (run the vm lane: scripts/vm-test)")
        env = cls("netdevsim", None, "", None)
        dev_id = 100 + secrets.randbelow(800)
        with open(new, "w") as f:
            f.write(f"{dev_id} 1")
        env.defer(_write, "/sys/bus/netdevsim/del_device", str(dev_id))
        net = f"/sys/bus/netdevsim/devices/netdevsim{dev_id}/net"
        for _ in range(100):  # the port's netdev appears asynchronously
            if os.path.isdir(net) and os.listdir(net):
                break
            time.sleep(0.05)
        (env.ifname,) = os.listdir(net)
        env.dev_id = dev_id
        subprocess.run(["ip", "link", "set", "dev", env.ifname, "up"], check=True)
        return env

    def debugfs(self, name: str, port: bool = False) -> str:
        """Path of a netdevsim debugfs switch (device-wide, or of port 0)."""
        base = f"/sys/kernel/debug/netdevsim/netdevsim{self.dev_id}"
        return f"{base}/ports/0/{name}" if port else f"{base}/{name}"

    def make_lab(self, pairs: int = 1, mtus: list[int] | None = None) -> lab.Lab:
        """A further veth lab, removed with this environment."""
        name = unique_name()
        made = lab.up(name, pairs=pairs, mtus=mtus)
        self._defer.callback(lab.down, name)
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
    def cmd(self, *argv: str, netns: str | None = "__env__", check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
        ns = self.netns if netns == "__env__" else netns
        full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
        return subprocess.run(full, capture_output=True, text=True, check=check, timeout=120,
                              env={**os.environ, **(env or {})})

    def json_cmd(self, *argv: str, netns: str | None = "__env__"):
        return json.loads(self.cmd(*argv, netns=netns).stdout)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
