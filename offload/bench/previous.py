"""The XDP programs an rx device carries before `offload bench`: the bench attaches its own program
in each mode and detaches it after, which would silently take a policy's (or anyone's) program
off the device. So they are refused unless --force; with it they are set aside for the run (an fd
held on each keeps it loaded) and put back after it, by program id, never over a program that
someone attached meanwhile."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from offload.errors import EnvironmentProblem, OffloadError, RefusedError
from offload.kernel import bpfsys, netns, xdp
from offload.load import pins
from offload.load.ownership import ownership

PutBackError = (OSError, xdp.KernelRefusal, OffloadError)   # OSError: the device gone too (ENODEV)


@dataclass
class Aside:
    """One program the rx device carries, taken off for the bench and put back after."""

    mode: str
    prog_id: int
    name: str
    owner: str
    fd: int = -1
    record: dict | None = None                             # offload's record of it, to pin it again
    maps: dict[str, int] = field(default_factory=dict)     # its pinned maps (name -> fd), the same
    aside: bool = False                                    # taken off the device by set_aside

    def describe(self) -> str:
        return f"{self.mode} prog {self.prog_id} ({self.name or '?'}, {self.owner})"


def find(rx: str, ifindex: int) -> list[Aside]:
    """What `rx` carries now, with who attached it."""
    attached = xdp.attached_progs(ifindex)
    if not attached:
        return []
    slot = pins.Slot(netns.current_name(), rx)
    try:
        mine = ownership(slot, attached).mine
        record = slot.verified_meta(mine.prog_id) if mine else None
        unknown = None
    except (EnvironmentProblem, pins.StateError) as e:   # no bpffs, a damaged record
        mine, record, unknown = None, None, f"owner unknown: {e.message}"
    held = []
    for mode, pid in attached.items():
        if mine is not None and mine.prog_id == pid:
            rule = (record or {}).get("managed_by")
            owner = f"offload's, policy rule {rule!r}" if rule else "offload's, attached by hand"
            held.append(Aside(mode, pid, (record or {}).get("program") or "", owner, record=record))
        else:
            info = bpfsys.prog_info(pid)
            held.append(Aside(mode, pid, info.name if info else "", unknown or "not offload's: another tool "
                             "attached it"))
    return held


def refuse(rx: str, held: list[Aside]) -> RefusedError:
    return RefusedError(f"{rx} carries XDP: {'; '.join(h.describe() for h in held)}. The bench attaches its own "
                        f"program there and would leave {rx} without it",
                        hint="detach it first (a policy's: stop `offload watch`), or pass --force to set it "
                             "aside for the bench and put it back after")


def set_aside(rx: str, ifindex: int, held: list[Aside]) -> None:
    """Take each program off `rx`, holding it (and offload's pinned maps) open to put it back."""
    slot = pins.Slot(netns.current_name(), rx)
    with pins.state_lock():
        for h in held:
            h.fd = bpfsys.prog_fd_by_id(h.prog_id)
            if h.record is not None:   # the maps bpffs holds, whatever the record lists
                h.maps = {name: slot.open_map(name) for name in slot.pinned_maps()}
                h.record = {**h.record, "maps": sorted(h.maps)}
            xdp.clear_prog(ifindex, h.mode, expected_fd=h.fd)   # only if it is still that program
            h.aside = True


def put_back(rx: str, ifindex: int, held: list[Aside]) -> tuple[list[str], list[str]]:
    """Each program back where it was, with offload's pins and record; (done, failed) in words.
    Closes what set_aside opened, whatever happens."""
    done, failed = [], []
    for h in held:
        try:
            if h.aside:
                with pins.state_lock():
                    _restore(rx, ifindex, h)
                done.append(f"{rx}: {h.describe()} put back after the bench (--force)")
        except PutBackError as e:
            failed.append(f"{rx}: could not put back {h.describe()}: {getattr(e, 'message', None) or e}")
        finally:
            for fd in [h.fd, *h.maps.values()]:
                if fd >= 0:
                    os.close(fd)
            h.fd, h.maps, h.aside = -1, {}, False
    return done, failed


def _restore(rx: str, ifindex: int, h: Aside) -> None:
    # IF_NOEXIST: never over a program someone attached during the bench (the kernel says EBUSY)
    xdp.set_prog(ifindex, h.fd, h.mode, no_replace=True)
    now = xdp.attached_progs(ifindex).get(h.mode)
    if now != h.prog_id:
        raise OSError(f"{h.mode} holds prog {now} instead")
    if h.record is not None:   # offload's again: the same pins and record as before the bench
        pins.Slot(netns.current_name(), rx).write(h.fd, h.maps, h.record)
