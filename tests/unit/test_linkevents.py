"""Link events (kernel/linkevents) decoded from recorded and constructed netlink bytes, and what
the watcher makes of them (orchestrate/watch: which events send it to a dump, what it logs)."""

import json
import socket
import struct

from hypothesis import given
from hypothesis import strategies as st
from lib.helpers import FIXTURES

from offload.kernel import nlraw, rtnl
from offload.kernel.linkevents import (
    OVERFLOW,
    RTM_DELLINK,
    RTM_NEWLINK,
    Kind,
    LinkEvent,
    decode,
)
from offload.orchestrate.policy import Policy
from offload.orchestrate.watch import Watcher

RTM_NEWADDR = 20
_IFINFO = struct.Struct("=BxHiII")


def message(typ: int, ifindex: int, *attrs: bytes) -> bytes:
    """One netlink message: nlmsghdr, ifinfomsg, attributes (as the kernel pads them)."""
    body = _IFINFO.pack(socket.AF_UNSPEC, 1, ifindex, 0, 0) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), typ, 0, 0, 0) + body


def name(n: str) -> bytes:
    return nlraw.nla(rtnl.IFLA_IFNAME, nlraw.asciiz(n))


def test_recorded_veth_pair_coming_and_going():
    rec = json.loads((FIXTURES / "linkevents/veth-add-del-6.18.json").read_text())
    events = [e for buf in rec["buffers"] for e in decode(bytes.fromhex(buf))]
    assert events == [LinkEvent(Kind.NEW, "rec-b", 2), LinkEvent(Kind.NEW, "rec-a", 3),
                      LinkEvent(Kind.DEL, "rec-a", 3), LinkEvent(Kind.DEL, "rec-b", 2)]


def test_one_buffer_of_several_messages_keeps_only_named_links_in_order():
    buf = b"".join([
        message(RTM_NEWLINK, 4, nlraw.nla(rtnl.IFLA_MTU, nlraw.u32(1500)), name("eth1")),
        message(RTM_NEWADDR, 4, name("not-a-link")),        # another group's message: not a link event
        message(RTM_NEWLINK, 5, nlraw.nla(rtnl.IFLA_MTU, nlraw.u32(9000))),   # no name: skipped
        message(RTM_DELLINK, 6, name("veth-long-name")),
        message(nlraw.NLMSG_DONE, 0),
    ])
    assert decode(buf) == [LinkEvent(Kind.NEW, "eth1", 4), LinkEvent(Kind.DEL, "veth-long-name", 6)]


def test_a_header_shorter_than_itself_ends_the_walk():
    buf = message(RTM_NEWLINK, 4, name("a")) + struct.pack("=IHHII", 0, RTM_NEWLINK, 0, 0, 0) + \
        message(RTM_NEWLINK, 5, name("b"))
    assert decode(buf) == [LinkEvent(Kind.NEW, "a", 4)]
    assert decode(b"") == [] and decode(b"\0" * 15) == []


names = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="/:"), min_size=1,
                max_size=15)


@given(st.lists(st.tuples(st.sampled_from([Kind.NEW, Kind.DEL]), names, st.integers(1, 2**31 - 1)), max_size=8))
def test_messages_encoded_by_pyroute2_decode_to_their_events(items):
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    buf = b""
    for kind, ifname, index in items:
        msg = ifinfmsg()
        msg["header"]["type"] = RTM_NEWLINK if kind is Kind.NEW else RTM_DELLINK
        msg["index"], msg["attrs"] = index, [("IFLA_IFNAME", ifname), ("IFLA_MTU", 1500)]
        msg.encode()
        buf += bytes(msg.data)
    assert decode(buf) == [LinkEvent(*i) for i in items]


# --- what the watcher makes of events (reads this namespace's links; changes nothing) -----------

def watcher(known: set[str]) -> tuple[Watcher, list[str]]:
    lines: list[str] = []
    w = Watcher(Policy("/nonexistent/policy.yaml"), interval=60, detach_on_exit=False, journal=None,
                log=lines.append)
    w.known = set(known)
    return w, lines


def here() -> set[str]:
    return {n for _, n in socket.if_nameindex()}


def test_events_that_tell_nothing_new_need_no_dump():
    w, lines = watcher(here())
    some = next(iter(here()))
    w.known = {some, "gone0"}   # were a dump taken, gone0 would be removed and the others added
    assert not w.on_events([])
    assert not w.on_events([LinkEvent(Kind.NEW, some, 1), LinkEvent(Kind.DEL, "never-seen", 9)])
    assert w.known == {some, "gone0"} and lines == []


def test_a_new_name_or_a_known_one_deleted_resynchronises_from_a_dump():
    w, lines = watcher(here() | {"gone0"})
    assert w.on_events([LinkEvent(Kind.DEL, "gone0", 9)])
    assert w.known == here() and lines == ["offload-watch: event=remove iface=gone0"]
    some = sorted(here())[0]
    w.known = here() - {some}
    lines.clear()
    assert w.on_events([LinkEvent(Kind.NEW, some, 1)])
    assert w.known == here() and lines == [f"offload-watch: event=add iface={some}"]


def test_an_overflow_is_logged_and_resynchronises():
    w, lines = watcher(here())
    assert not w.on_events([OVERFLOW])   # lost notifications, but nothing changed
    assert lines == ["offload-watch: event=overflow (notifications lost: resynchronising)"]
    w.known = here() | {"gone0"}
    lines.clear()
    assert w.on_events([LinkEvent(Kind.NEW, "gone0", 9), OVERFLOW])   # the dump, not the events, decides
    assert w.known == here()
    assert lines == ["offload-watch: event=overflow (notifications lost: resynchronising)",
                     "offload-watch: event=remove iface=gone0"]


class _Scripted:
    """LinkEvents that hands out prepared reads, one per call (then nothing), noting the timeouts."""

    def __init__(self, reads):
        self.reads, self.timeouts = list(reads), []

    def read(self, timeout):
        self.timeouts.append(timeout)
        return self.reads.pop(0) if self.reads else []


def test_a_burst_of_events_is_one_batch():
    from offload.orchestrate import watch

    burst = [[LinkEvent(Kind.NEW, f"pod{i}", 10 + i)] for i in range(5)]
    ev = _Scripted([*burst, [], [LinkEvent(Kind.NEW, "later", 99)]])
    assert [e.name for e in watch._burst(ev)] == [f"pod{i}" for i in range(5)]   # up to the quiet moment
    assert ev.timeouts[0] == watch._POLL and all(t <= watch._QUIET for t in ev.timeouts[1:])
    assert [e.name for e in watch._burst(ev)] == ["later"]                       # the next burst
    assert watch._burst(_Scripted([])) == []


def test_a_trickle_that_never_stops_is_cut_into_bursts(monkeypatch):
    from offload.orchestrate import watch

    monkeypatch.setattr(watch, "_BURST", 0.05)
    endless = type("Endless", (), {"read": lambda self, timeout: [LinkEvent(Kind.NEW, "x", 1)]})()
    assert len(watch._burst(endless)) >= 2   # it returns: a first reconcile is not held back forever


def test_a_burst_names_only_its_new_links_for_the_reconcile():
    """The reconcile after a burst looks at the links that came (and one deleted and made again
    under its name, which needs its program again); after lost events, at every link."""
    some = sorted(here())
    w, _ = watcher(set(some[1:]))
    assert w.on_events([LinkEvent(Kind.NEW, some[0], 1)]) and w.fresh == [some[0]]
    assert w.on_events([LinkEvent(Kind.DEL, some[1], 2), LinkEvent(Kind.NEW, some[1], 3)])   # made again
    assert w.fresh == [some[1]]
    assert not w.on_events([OVERFLOW]) and w.fresh is None   # a resync: the next reconcile sees all
