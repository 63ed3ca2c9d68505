"""`offload watch`: apply, then keep applying as interfaces come and go, and on drift."""

from __future__ import annotations

import errno
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

from offload.errors import OffloadError
from offload.kernel import netns, rtnl
from offload.load import attach as attach_mod
from offload.load import gc, pins
from offload.orchestrate.apply import apply
from offload.orchestrate.policy import Policy


def watch(pol: Policy, interval: float = 30.0, detach_on_exit: bool = False, journal: Path | None = None,
          log: Callable[[str], None] = print, stop_after: float | None = None,
          metrics_server=None, textfile: str | None = None) -> None:
    """Apply, then re-apply on every link appearing or vanishing (rtnetlink notifications, which
    work inside a network namespace) and every `interval` seconds (drift). SIGTERM ends it.

    `metrics_server` (a bound metrics.MetricsServer) serves /metrics from a thread of its own,
    started here so that it reads this namespace; `textfile` is rewritten after every reconcile."""
    from pyroute2.netlink.rtnl import RTMGRP_LINK

    # Up front: every reconcile would fail on privileges, and the loop would log it forever.
    attach_mod.require_privileges("watching a policy (attaching and detaching programs)")
    stopping = {"now": False}

    def on_term(signum, frame):
        stopping["now"] = True

    health = None
    if metrics_server is not None or textfile is not None:
        from offload.orchestrate import exports, metrics

        health = metrics.Health()

    def reconcile(why: str) -> None:
        ok = _reconcile(why)
        if health is None:
            return
        health.record(ok, _attached_count())
        if textfile is not None:
            try:
                exports.export_prometheus(textfile, health=health)
            except (OffloadError, OSError) as e:
                log(f"offload-watch: textfile={textfile} error={getattr(e, 'message', str(e))!r}")

    def _reconcile(why: str) -> bool:
        # A watcher under systemd's Restart= must not crash-loop on one bad interface or record:
        # every error of a reconcile is logged, and the next event or period tries again.
        try:
            for f in gc.collect(only=netns.current_name())["freed"]:
                log(f"offload-watch: reconcile={why} gc iface={f['interface']} reason={f['reason']!r}")
            res = apply(pol, best_effort=True, journal=journal)
        except OffloadError as e:
            log(f"offload-watch: reconcile={why} error={e.message!r}")
            return False
        except Exception as e:  # noqa: BLE001 - logged; the watcher lives on
            log(f"offload-watch: reconcile={why} error={type(e).__name__}: {e}")
            return False
        for s in res["steps"]:
            if s["status"] == "done":
                log(f"offload-watch: reconcile={why} iface={s['interface']} action={s['action']} "
                    f"program={s['program']} mode={s.get('mode')}")
        for s in res["failed"]:
            log(f"offload-watch: reconcile={why} iface={s['interface']} action={s['action']} error={s['error']!r}")
        return not res["failed"]

    old = signal.signal(signal.SIGTERM, on_term)

    # A plain NETLINK_ROUTE socket subscribed to link events (decoded with pyroute2's ifinfmsg):
    # pyroute2's IPRoute buffers notifications inside its event loop, out of select()'s sight.
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)   # bursts of links: fewer overflows
        sock.bind((0, RTMGRP_LINK))
        log(f"offload-watch: start policy={pol.path} netns={netns.current_name()} interval={interval:g}s")
        if metrics_server is not None:
            metrics_server.start(metrics.registry(health))
            log(f"offload-watch: metrics={metrics_server.url}")
        # Links as they are before the first apply: one added while it runs is then an event
        # of its own (a dump after the apply would count it as known and never say it came).
        known = {link.name for link in rtnl.dump_links()}
        reconcile("start")
        began = last = time.monotonic()
        while not stopping["now"]:
            if stop_after is not None and time.monotonic() - began > stop_after:
                break
            changed = False
            try:
                events = _link_events(sock, 0.2)
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                log("offload-watch: event=overflow (notifications lost: resynchronising)")
                events = [("overflow", "")]
            if any(name not in known for kind, name in events if kind == "new") or \
                    any(name in known for kind, name in events if kind == "del") or ("overflow", "") in events:
                # The notifications say something changed; a dump says exactly what (a burst may
                # be coalesced or lost, and a name may come and go within one batch).
                now = {link.name for link in rtnl.dump_links()}
                for name in sorted(now - known):
                    log(f"offload-watch: event=add iface={name}")
                for name in sorted(known - now):
                    log(f"offload-watch: event=remove iface={name}")
                    _forget(name)
                changed, known = now != known, now
            if changed:
                reconcile("link-change")
                last = time.monotonic()
            elif time.monotonic() - last >= interval:
                reconcile("periodic")
                last = time.monotonic()
    finally:
        sock.close()
        signal.signal(signal.SIGTERM, old)
        if metrics_server is not None:
            metrics_server.close()
        if detach_on_exit:
            for slot in pins.slots(netns.current_name()):
                try:
                    meta = slot.meta() or {}
                except pins.StateError:
                    continue
                if meta.get("managed_by"):
                    try:
                        attach_mod.detach(slot.iface)
                        log(f"offload-watch: exit iface={slot.iface} action=detach")
                    except OffloadError:
                        pass
        log("offload-watch: stopped")


def _link_events(sock: socket.socket, timeout: float) -> list[tuple[str, str]]:
    """(new|del, ifname) for every link notification waiting (after up to `timeout` s)."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    out = []
    r, _, _ = select.select([sock], [], [], timeout)
    while r:
        data = sock.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind in (16, 17):  # RTM_NEWLINK, RTM_DELLINK
                msg = ifinfmsg(data[off:off + length])
                msg.decode()
                name = msg.get_attr("IFLA_IFNAME")
                if name:
                    out.append(("new" if kind == 16 else "del", name))
            off += (length + 3) & ~3
        r, _, _ = select.select([sock], [], [], 0)
    return out


def _attached_count() -> int:
    """Programs offload holds in this namespace (its records; a damaged one does not count)."""
    n = 0
    for slot in pins.slots(netns.current_name()):
        try:
            n += slot.meta() is not None
        except pins.StateError:
            pass
    return n


def _forget(iface: str) -> None:
    """A vanished interface took its program along: drop our records of it."""
    slot = pins.Slot(netns.current_name(), iface)
    if slot.exists():
        slot.remove()


