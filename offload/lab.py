"""A veth lab for trying offload without hardware: one network namespace holding K veth pairs.

Everything a lab creates lives inside its own namespace `offload-lab-<name>`, so removing the
namespace removes every device it made, also after a crash; nothing outside it is touched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pyroute2 import config as pr_config
from pyroute2 import netns as pr_netns  # the submodule only (see offload/__init__.py)
from pyroute2.iproute import IPRoute

from offload.errors import EnvironmentProblem, UsageError
from offload.kernel import netns
from offload.kernel.privileges import CAP_NET_ADMIN, CAP_SYS_ADMIN, require
from offload.load import pins

PREFIX = "offload-lab-"
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
MAX_PAIRS = 2000
MAX_QUEUES = 1024   # as many as `bench --threads` takes (veth itself allows 4096)


@dataclass
class Pair:
    a: str
    b: str


@dataclass
class Lab:
    name: str
    netns: str
    pairs: list[Pair]
    mtu: int
    queues: int = 1   # rx and tx queues of every veth

    def to_dict(self) -> dict:
        return {"name": self.name, "netns": self.netns, "mtu": self.mtu, "queues": self.queues,
                "pairs": [{"a": p.a, "b": p.b} for p in self.pairs]}


def netns_name(name: str) -> str:
    return PREFIX + name


def pair_names(name: str, i: int) -> Pair:
    return Pair(f"{name}-a{i}", f"{name}-b{i}")


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise UsageError(f"bad lab name {name!r}: use 1-8 lowercase letters and digits, starting with a letter "
                         "(interface names must fit in 15 characters)")


def up(name: str = "demo", pairs: int = 1, mtu: int = 1500, mtus: list[int] | None = None,
       queues: int = 1) -> Lab:
    """Create lab `name`. `mtus` gives per-pair MTUs (else every pair gets `mtu`); every veth gets
    `queues` rx and tx queues (a frame redirected into a veth lands on the peer's rx queue
    `sending CPU % queues`, so one queue per generator CPU keeps the generators apart)."""
    _check_name(name)
    if not 1 <= pairs <= MAX_PAIRS:
        raise UsageError(f"--pairs must be between 1 and {MAX_PAIRS}, not {pairs}")
    if not 1 <= queues <= MAX_QUEUES:
        raise UsageError(f"a lab's veths take 1 to {MAX_QUEUES} queues, not {queues}")
    per_pair = mtus or [mtu] * pairs
    for m in per_pair:
        if not 68 <= m <= 65535:
            raise UsageError(f"bad MTU {m}: veth takes 68..65535")
    require(CAP_NET_ADMIN, CAP_SYS_ADMIN, action="creating a lab (network namespace and veth pairs)")
    ns = netns_name(name)
    if netns.exists(ns):
        raise UsageError(f"lab {name!r} exists (namespace {ns})", hint=f"remove it with `offload lab down {name}`")
    try:   # pyroute2 may give up waiting on its helper with the namespace made: down() all the same
        _create_netns(ns)
        made = []
        with netns.inside(ns), IPRoute() as ipr:
            # Quiet links: no IPv6 autoconfiguration chatter, so a counter sees only what a test
            # or a benchmark sends (sysctls under /proc/sys/net belong to the opener's netns).
            for conf in ("all", "default"):
                with open(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "w") as f:
                    f.write("1")
            ipr.link("set", index=1, state="up")  # loopback, for tools that expect it
            for i, m in enumerate(per_pair):
                p = pair_names(name, i)
                q = {"num_tx_queues": queues, "num_rx_queues": queues}
                ipr.link("add", ifname=p.a, kind="veth", peer={"ifname": p.b, "mtu": m, **q}, mtu=m, **q)
                for dev in (p.a, p.b):
                    ipr.link("set", index=ipr.link_lookup(ifname=dev)[0], state="up")
                made.append(p)
        return Lab(name, ns, made, per_pair[0], queues)
    except BaseException:
        down(name)
        raise


# pyroute2 makes a namespace in a forked helper and waits 2 s for its answer by default; on this
# project's 2-core VM at load average 8 the helper took longer, and `lab up` died (exit 70).
_CREATE_WAIT_S = 60


def _create_netns(ns: str) -> None:
    before, pr_config.default_communicate_timeout = pr_config.default_communicate_timeout, _CREATE_WAIT_S
    try:
        pr_netns.create(ns)
    except TimeoutError:
        raise EnvironmentProblem(f"creating network namespace {ns}: the helper process did not answer within "
                                 f"{_CREATE_WAIT_S} s", hint="the host is overloaded or stuck: try again when it is "
                                                            "not") from None
    finally:
        pr_config.default_communicate_timeout = before


def down(name: str) -> bool:
    """Remove lab `name` and everything in it. Idempotent: False when there was nothing to remove."""
    _check_name(name)
    ns = netns_name(name)
    if not netns.exists(ns):
        pins.remove_namespace(ns)  # records a crashed run may have left
        return False
    require(CAP_SYS_ADMIN, action="removing a lab")
    pr_netns.remove(ns)
    pins.remove_namespace(ns)
    return True


@contextmanager
def temporary(prefix: str, pairs: int = 1, mtus: list[int] | None = None, mtu: int = 1500,
              queues: int = 1) -> Iterator[Lab]:
    """A lab for the length of a block, named `prefix` plus this process's id, always removed."""
    name = f"{prefix}{os.getpid() % 10 ** (8 - len(prefix))}"
    made = up(name, pairs=pairs, mtu=mtu, mtus=mtus, queues=queues)
    try:
        yield made
    finally:
        down(name)


def list_labs() -> list[Lab]:
    labs = []
    for ns in sorted(pr_netns.listnetns()):
        if not ns.startswith(PREFIX):
            continue
        name = ns[len(PREFIX):]
        pairs, mtu, queues = [], 0, 1
        try:
            with netns.inside(ns), IPRoute() as ipr:
                names = {m.get_attr("IFLA_IFNAME"): (m.get_attr("IFLA_MTU"), m.get_attr("IFLA_NUM_RX_QUEUES"))
                         for m in ipr.get_links()}
        except UsageError:   # removed (lab down elsewhere) between the listing and the look inside
            continue
        i = 0
        while (p := pair_names(name, i)).a in names:
            pairs.append(p)
            if not mtu:
                mtu, queues = names[p.a][0], names[p.a][1] or 1
            i += 1
        labs.append(Lab(name, ns, pairs, mtu, queues))
    return labs


def listing() -> dict:
    """`offload lab list`: every lab, as its document."""
    return {"labs": [x.to_dict() for x in list_labs()]}


def remove(names: Sequence[str], every: bool = False, each: Callable[[dict], None] = lambda row: None) -> dict:
    """`offload lab down`: remove the labs named (or `every` lab). `each` hears of every lab as it
    is done, so a person sees what was removed before a later name fails."""
    if every:
        names = [x.name for x in list_labs()]
    elif not names:
        raise UsageError("name the lab(s) to remove, or --all")
    rows = []
    for n in names:
        rows.append({"name": n, "removed": down(n)})
        each(rows[-1])
    return {"labs": rows}
