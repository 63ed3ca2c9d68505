"""plan / apply: make the host match a policy, transactionally.

apply takes a lock (one apply at a time), executes the plan, journals every step as a JSON line,
and on a failure puts back everything this run changed (unless best effort).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from offload.errors import EnvironmentProblem, NoModeError, OffloadError, RefusedError, UsageError
from offload.kernel import clock, durable, fs, netns, xdp, xdplink
from offload.load import attach as attach_mod
from offload.load import chain, dispatcher, guard, pins
from offload.load.batch import batch
from offload.load import ownership as ownership_mod
from offload.load.ownership import ownership
from offload.orchestrate import plan as plan_mod
from offload.orchestrate.policy import Policy
from offload.orchestrate.policy import load as load_policy
from offload.probe.facts import DeviceFacts
from offload.probe.report import assess

DEFAULT_JOURNAL = Path(os.environ.get("OFFLOAD_JOURNAL", "/var/lib/offload/journal.jsonl"))
MAX_JOURNAL = int(os.environ.get("OFFLOAD_JOURNAL_MAX", 16 << 20))


def current_state(devices: list[DeviceFacts]) -> dict[str, plan_mod.Current]:
    """What is attached on each device (from the probe's own dump), ours or not, and the programs
    of a libxdp dispatcher there (offload's by their slots' pins)."""
    out = {}
    ns = netns.current_name()
    slots: dict[str, list[pins.Slot]] | None = None   # listed once, when a device carries a dispatcher
    for d in devices:
        slot = pins.Slot(ns, d.name)
        attached = {a["mode"]: a["prog_id"] for a in d.attached}
        own = ownership(slot, attached)
        try:
            meta = slot.meta() if own.mine else None
        except pins.StateError:  # ours by its pin, record damaged: the plan re-attaches, which rewrites it
            meta = None
        if meta is not None:
            meta = {**meta, "mode": own.mine.mode}
        cur = plan_mod.Current(meta, own.foreign)
        # the probe named each program: only a dispatcher is looked up again
        for mode, doc in dispatcher.chains(d.ifindex, attached, {a["mode"]: a.get("name") for a in d.attached}):
            if slots is None:
                slots = pins.by_interface(ns)
            cur.dispatcher, cur.chain = mode, _running(doc, slots.get(d.name, []))
        out[d.name] = cur
    return out


def _running(doc: dict, slots: list[pins.Slot]) -> list[plan_mod.Running]:
    """A dispatcher's programs in run order, each with offload's record when a slot pins it; a
    killed run's leftover (load.ownership.leftovers) is offload's too, marked `leftover`."""
    views = [ownership_mod.view(s) for s in slots]
    held = {v.pinned: v for v in views if v.pinned is not None}
    stale = ownership_mod.leftovers(doc["programs"], views)
    out = []
    for p in doc["programs"]:
        v, ours = held.get(p["prog_id"]), None
        if v is not None:
            meta = v.record if (v.record or {}).get("prog_id") == p["prog_id"] else _verified(v.slot, p["prog_id"])
            ours = {**(meta or {"program": p["name"], "sha256": None}), "member": v.slot.member}
        elif p["prog_id"] in stale:
            left = stale[p["prog_id"]]
            ours = {"program": p["name"], "sha256": None, "member": left.slot.member, "leftover": left.why,
                    "stage_only": left.stage}
        out.append(plan_mod.Running(p["prog_id"], p["name"], p["priority"], p["chain_call_actions"], ours))
    return out


def _verified(slot: pins.Slot, prog_id: int) -> dict | None:
    try:
        return slot.verified_meta(prog_id)
    except pins.StateError:   # ours by its pin; its record is no use: the plan replaces it
        return None


def compute_plan(pol: Policy, only: list[str] | None = None) -> list[plan_mod.Item]:
    """The plan for every interface, or for those named in `only`. A policy with a chain asks the
    kernel once whether it runs libxdp's dispatcher (freplace)."""
    _, assessed = assess(only, include_loopback=False)
    refusal = chain.freplace_refusal() if any(r.members for r in pol.rules) and assessed else None
    return plan_mod.make_plan(pol, assessed, current_state([a.facts for a in assessed]), refusal)


def plan_document(policy_file: str) -> dict:
    """`offload plan`: the policy file as given and what apply would do, per interface."""
    return {"policy": policy_file, "plan": [i.to_dict() for i in compute_plan(load_policy(policy_file))]}


class JournalError(OffloadError):
    """A journal record could not be written (a full disk, an I/O error): the run stops and rolls
    back. Exit 1: the operation ran and failed."""


_JOURNAL_TAIL = 256 << 10   # what is read of an old journal to find an unfinished run
# durable at once: a run's start before its first change, its end once the run's group committed;
# the steps in between are made durable together (group commit: durable.group)
_DURABLE_NOW = {"start", "end"}


class Journal:
    """Append-only JSON lines, written before the next kernel change (so a killed run leaves them
    all), and a write that fails stops the run (which then rolls back). The start record is fsynced
    at once; the steps are made durable with the run's records in one group commit, before the end
    record, which is fsynced too: an end on disk means the whole run is.

    offload runs as root: the journal's directory is reached by fs.open_dir (no link others
    control), the file opened O_NOFOLLOW in it and only if it is a regular file (not /dev/full,
    not a FIFO that would block), and never on a kernel interface (/proc, /sys). Each record is one
    write of a whole line; a failed or short one is cut off again, so no half line is left."""

    def __init__(self, path: Path) -> None:
        self.path = path
        named_by = "$OFFLOAD_JOURNAL" if path == DEFAULT_JOURNAL and os.environ.get("OFFLOAD_JOURNAL") else "--journal"
        self._dir_path, self._name = os.path.split(fs.output_path(str(path), named_by))
        self._create_dir = path == DEFAULT_JOURNAL
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        with self._dir() as d:   # every check now: before the lock, the plan and any kernel change
            self.interrupted = self._last_unfinished(d)
        self._started = False
        self._fd: int | None = None
        self.netns = netns.current_name()   # once: every record of a run is in one namespace

    @contextmanager
    def _dir(self) -> Iterator[int]:
        try:
            d = fs.open_dir(self._dir_path, create=self._create_dir, mode=0o700)
        except OffloadError as e:   # same kind (bad input, refused), naming the journal
            raise type(e)(f"journal {self.path}: {e.message}", hint=e.hint) from None
        try:
            fs.check_owned(d, (0, os.geteuid()), sticky_ok=True)   # the journal is root's state
        except fs.Untrusted as e:
            os.close(d)
            raise RefusedError(f"journal {self.path}: its directory {self._dir_path} is not safe for offload's "
                               f"state: {e.strerror}",
                               hint="give --journal a file in a directory only root can write "
                                    f"(the default's: {os.path.dirname(DEFAULT_JOURNAL)})") from None
        try:
            kind = fs.kernel_fs(d)
            if kind:
                raise UsageError(f"journal {self.path}: {self._dir_path} is on {kind}, a kernel interface, not a "
                                 "file system for data", hint="give --journal a file on a disk or tmpfs")
            yield d
        finally:
            os.close(d)

    def _open(self, d: int, flags: int) -> int:
        """The journal file, opened in directory `d` without following a link; a regular file only
        (OSError for the rest: the caller says what it was doing)."""
        try:
            # O_NONBLOCK: a FIFO opens at once (and is then refused) instead of waiting for a reader
            fd = os.open(self._name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, 0o600,
                         dir_fd=d)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RefusedError(f"the journal {self.path} is a symbolic link: offload does not write through links",
                                   hint="give --journal a plain file") from None
            if e.errno in (errno.EISDIR, errno.ENXIO):   # a directory; a socket, or a FIFO without reader
                self._require_regular(os.stat(self._name, dir_fd=d, follow_symlinks=False).st_mode)
            raise
        try:
            st = os.fstat(fd)
            self._require_regular(st.st_mode)
            if st.st_uid != os.geteuid():   # planted beforehand in a shared (sticky) directory
                raise RefusedError(f"the journal {self.path} belongs to uid {st.st_uid}: offload keeps its journal "
                                   "in a file of its own", hint="remove it, or give --journal another file")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _require_regular(self, mode: int) -> None:
        if not stat.S_ISREG(mode):
            raise UsageError(f"journal {self.path} is not a regular file ({fs.file_kind(mode)})",
                             hint="give --journal a plain file")

    def _rotate(self, d: int) -> None:
        """Past MAX_JOURNAL bytes the journal moves to NAME.1 (one generation kept), at a run's start
        only, so one run's records stay in one file."""
        try:
            st = os.stat(self._name, dir_fd=d, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISREG(st.st_mode) and st.st_size > MAX_JOURNAL:
            os.replace(self._name, f"{self._name}.1", src_dir_fd=d, dst_dir_fd=d)

    def _last_unfinished(self, d: int) -> str | None:
        """The run id of the journal's last run if it has a start and no end (it was killed)."""
        try:
            fd = self._open(d, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise UsageError(f"journal {self.path}: cannot read it: {e.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            tail = os.pread(fd, _JOURNAL_TAIL, max(0, size - _JOURNAL_TAIL))   # bounded, whatever the size
        finally:
            os.close(fd)
        last_run, ended = None, True
        for line in tail.decode(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            if rec.get("event") == "start":
                last_run, ended = rec.get("run"), False
            elif rec.get("event") == "end" and rec.get("run") == last_run:
                ended = True
        return None if ended else last_run

    def write(self, event: str, **fields) -> None:
        rec = {"time": clock.rfc3339(), "run": self.run, "netns": self.netns, "event": event, **fields}
        line = (json.dumps(rec) + "\n").encode()
        if self._fd is None:
            self._fd, lead = self._open_for_run()
            line = lead + line
        self._append(self._fd, os.fstat(self._fd).st_size, line, now=event in _DURABLE_NOW)

    def _open_for_run(self) -> tuple[int, bytes]:
        """The journal, opened once per run (rotated first), and what a record must start with: a
        newline when an earlier run's crash cut its last record short (it must not swallow ours)."""
        with self._dir() as d:
            try:
                if not self._started:
                    self._rotate(d)
                    self._started = True
                fd = self._open(d, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            except OSError as e:
                raise self.write_error(e) from None
        try:
            size = os.fstat(fd).st_size
            return fd, b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, fd: int, size: int, line: bytes, now: bool) -> None:
        """`line` in one write, durable now (`now`) or with the run's group commit; on any failure
        the file is cut back to `size`."""
        try:
            n = os.write(fd, line)
            if n != len(line):
                raise JournalError(f"journal {self.path}: a record was cut short ({n} of {len(line)} bytes "
                                   "written: is the file system full?); it was removed again")
            if now:
                os.fsync(fd)
            else:
                durable.sync(fd)
        except BaseException as e:
            try:
                os.ftruncate(fd, size)   # never a half line: the next reader would trip over it
            except OSError:
                pass
            if isinstance(e, OSError):
                raise self.write_error(e) from None
            raise

    def write_error(self, e: OSError) -> JournalError:
        name = errno.errorcode.get(e.errno or 0, str(e.errno))
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        return JournalError(f"journal {self.path}: cannot write a record: {e.strerror} ({name})",
                            hint="free space there, or give --journal another file" if full else None)


def apply(pol: Policy, best_effort: bool = False, journal: Path | None = None, lock_timeout: float = 30.0,
          progress: Callable[[str], None] = lambda m: None,
          count: Callable[[int, int], None] = lambda done, total: None, only: list[str] | None = None) -> dict:
    """Make the interfaces match `pol`. Without best effort it is all or nothing: a failed step,
    and any error at all (the journal, the kernel, an interrupt), puts back what this run changed.
    `progress` gets each change as words, `count` the items handled so far and their number;
    `only` limits the run to the interfaces it names (watch: a burst's new links).

    The run is one batch (_batch): its records and journal steps are made durable together (one
    syncfs per file system), before its end record. What the truth issue promised of a kill at any
    point still holds: every write and rename is where it was, only the fsyncs are grouped."""
    attach_mod.require_privileges("applying a policy")
    pins.require_bpffs()
    j = Journal(journal or DEFAULT_JOURNAL)
    with _batch(j, lock_timeout) as group:
        items = compute_plan(pol, only)
        warnings = []
        if j.interrupted:
            warnings.append(f"the previous run {j.interrupted} in {j.path} has no end record: it was interrupted; "
                            "this run starts from what is attached now")
        j.write("start", policy=pol.path, best_effort=best_effort,
                plan=[i.to_dict() for i in items if i.action != "keep"],
                **({"previous_interrupted": j.interrupted} if j.interrupted else {}))
        done: list[tuple[plan_mod.Item, Saved | None, chain.Built | None]] = []
        results, failed = [], []
        protected = guard.protected_interfaces()   # once per run, not per interface
        try:
            for n, item in enumerate(items):
                count(n, len(items))
                if item.action == "keep":
                    results.append({**item.to_dict(), "status": "kept"})
                    continue
                if item.action == "conflict":
                    failed.append({**item.to_dict(), "status": "failed", "error": item.reason})
                    j.write("step", interface=item.interface, action=item.action, status="failed", error=item.reason)
                    if not best_effort:
                        break
                    continue
                if not _step(item, j, done, results, failed, progress, protected, warnings) and not best_effort:
                    break
            count(len(items), len(items))
            if not failed or best_effort:   # the run stands: chain members replaced or dropped leave now
                for _, _, built in done:
                    if built is not None:
                        warnings += built.finish()
            _commit(group, j)   # the run's records and steps: a write-back error undoes the run
        except BaseException as e:   # not offload's own refusal: a bug, the journal, an interrupt
            _roll_back_all(done, j, progress)
            _close(done)
            try:
                _commit(group, j)
                j.write("end", outcome="failed", rolled_back=[i.interface for i, _, _ in done],
                        error=f"{type(e).__name__}: {e}")
            except (OSError, OffloadError):   # the journal itself may be what failed
                pass
            raise
        rolled_back = _roll_back_all(done, j, progress) if failed and not best_effort else []
        _close(done)
        outcome = "failed" if failed and not best_effort else ("partial" if failed else "ok")
        for r in results:   # what was undone is not done
            if r["interface"] in rolled_back and r["status"] == "done":
                r["status"] = "rolled back"
        _commit(group, j)   # what a roll-back wrote, before the end record says so
        j.write("end", outcome=outcome, rolled_back=rolled_back)
        return {"outcome": outcome, "steps": results, "failed": failed, "rolled_back": rolled_back,
                "changed": sum(1 for r in results if r["status"] == "done"), "journal": str(j.path),
                "warnings": warnings}


@contextmanager
def _batch(j: Journal, lock_timeout: float) -> Iterator[durable.Group]:
    """One run as one batch (load.batch: the lock, group commit, the state directories, each
    program loaded once), the journal open for the run and closed after it."""
    try:
        with batch(lock_timeout, "wait for it, or raise --lock-timeout") as group:
            yield group
    finally:
        j.close()


def _commit(group: durable.Group, j: Journal) -> None:
    """Make the batch durable (group commit), a write-back error reported as the journal's."""
    try:
        group.commit()
    except OSError as e:
        raise j.write_error(e) from None


def _step(item: plan_mod.Item, j: Journal, done: list, results: list, failed: list,
          progress: Callable[[str], None], protected: dict[str, str], warnings: list[str]) -> bool:
    """One change, journaled; False when offload (or the kernel, in words) refused it. `warnings`:
    the run's, which a chain making way through a link adds to (not atomic: replace_way's GAP)."""
    # what the plan's probe saw attached (the attach itself goes by it too): no read per interface
    seen = {a["mode"]: a["prog_id"] for a in item.device.facts.attached} if item.device else None
    snap = save(item.interface, seen)
    built = None
    try:
        progress(f"{item.interface}: {item.action} {item.program or ''}".rstrip())
        if item.chain is not None and item.chain.alone:
            built, r = _make_way(item, protected)
            res = {"mode": r.mode, "prog_id": r.prog_id, "fallbacks": r.fallbacks, "built": built.to_dict(),
                   "via": r.via}
            warnings += r.warnings
        elif item.chain is not None:
            built = _build_chain(item, snap, protected, progress)
            res = {"mode": built.mode, "built": built.to_dict()}
        elif item.action == "detach":
            attach_mod.detach(item.interface)
            res = {"mode": item.mode}
        else:
            r = _attach(item, snap, protected)
            res = {"mode": r.mode, "prog_id": r.prog_id, "fallbacks": r.fallbacks, "via": r.via}
    except OffloadError as e:
        if snap:
            snap.close()
        failed.append({**item.to_dict(), "status": "failed", "error": e.message})
        j.write("step", interface=item.interface, action=item.action, status="failed", error=e.message)
        return False
    except BaseException:
        if snap:
            snap.close()
        raise
    done.append((item, snap, built))   # before the journal write: if that fails, this change is undone too
    results.append({**item.to_dict(), **res, "status": "done"})
    j.write("step", interface=item.interface, action=item.action, status="done", **res)
    return True


def _attach(item: plan_mod.Item, snap: Saved | None, protected: dict[str, str]) -> attach_mod.Result:
    """The rule's program on the interface. One held the other way (netlink against a bpf_link,
    which the kernel puts neither over the other) is taken off first, not atomically, and put
    back if the attach fails."""
    switch = snap is not None and snap.meta.get("via", "netlink") != item.via
    with _set_aside(snap if switch else None):
        return attach_mod.attach(item.interface, item.resolved or item.program, mode=item.prefer,
                                 min_mode=item.min, params=item.params, managed_by=item.rule,
                                 assessed=None if switch else item.device, protected=protected, via=item.via)


@contextmanager
def _set_aside(snap: Saved | None) -> Iterator[None]:
    """offload's saved program (`snap`; None: nothing) off its interface and its pins gone while
    the body runs (not atomic: what comes next cannot go in its place), put back if the body fails."""
    if snap is not None:
        attach_mod.take_off(snap.slot, attach_mod.ifindex_of(snap.slot.iface), snap.mode, snap.meta["prog_id"])
        snap.slot.remove()
    try:
        yield
    except BaseException:
        if snap is not None:
            put_back(snap)
        raise


def _build_chain(item: plan_mod.Item, snap: Saved | None, protected: dict[str, str],
                 progress: Callable[[str], None]) -> chain.Built:
    """A rule's chain on one interface (load.chain.build: one transaction). offload's program
    alone there (`snap`) makes way first, and comes back if the chain cannot be built."""
    plan, iface = item.chain, item.interface
    if plan.refused is not None:
        raise EnvironmentProblem(f"{iface}: cannot build rule {item.rule!r}'s chain in libxdp's dispatcher: "
                                 f"{plan.refused}; nothing was attached",
                                 hint="`allow_single: true` in a rule of one program attaches it alone instead")
    if item.action != "detach":
        attach_mod.refuse_protected(iface, False, protected)
        if item.mode is None:
            raise NoModeError(f"{iface}: {item.reason}")
    adds = [chain.Want(m.key, prog, m.priority, m.chain) for m, prog in plan.add]
    ns = netns.current_name()
    drops = [chain.Leave(r["prog_id"], pins.Slot(ns, iface, r["member"])) for r in plan.remove
             if not r.get("leftover")]
    stale = tuple(chain.Leave(r["prog_id"], pins.Slot(ns, iface, r["member"]) if r.get("stage_only") else None,
                              True) for r in plan.remove if r.get("leftover"))
    with _set_aside(snap):   # offload's lone program: off, so that libxdp can build a dispatcher
        return chain.build(iface, adds, drops, plan.modes, item.rule, progress, stale)


def _make_way(item: plan_mod.Item, protected: dict[str, str]) -> tuple[chain.Built, attach_mod.Result]:
    """A rule that became `program:`: its program alone in the place of offload's chain, one
    transaction (load.chain.make_way: the members leave only once the run stands)."""
    iface, ns = item.interface, netns.current_name()
    attach_mod.refuse_protected(iface, False, protected)
    members = [chain.Leave(r["prog_id"], pins.Slot(ns, iface, r["member"]) if r["member"] else None,
                           bool(r.get("leftover"))) for r in item.chain.remove]
    return chain.make_way(iface, lambda retire: attach_mod.attach(
        iface, item.resolved or item.program, mode=item.prefer, min_mode=item.min, params=item.params,
        managed_by=item.rule, assessed=item.device, protected=protected, force=True, via=item.via,
        displace=retire), members)


def _roll_back_all(done: list, j: Journal, progress: Callable[[str], None]) -> list[str]:
    rolled = []
    for item, snap, built in reversed(done):
        progress(f"{item.interface}: rolling back {item.action}")
        _roll_back(item, snap, built)
        rolled.append(item.interface)
        try:
            j.write("rollback", interface=item.interface, action=item.action)
        except (OSError, OffloadError):   # the kernel state matters more than the record of it
            pass
    return rolled


def _close(done: list) -> None:
    for _, snap, built in done:
        if snap:
            snap.close()
        if built:
            built.close()


def _roll_back(item: plan_mod.Item, snap: Saved | None, built: chain.Built | None) -> None:
    if built is not None:         # a chain: the members this run added out, the pins they replaced back
        built.roll_back()
    if snap is not None:          # replace or detach: put the previous program back
        put_back(snap)
    elif built is None:           # attach onto nothing: take ours off again
        try:
            attach_mod.detach(item.interface)
        except OffloadError:
            pass


@dataclass
class Saved:
    """What offload had on an interface, held open (fds) so a transaction can put it back."""

    slot: pins.Slot
    meta: dict
    mode: str
    prog_fd: int
    map_fds: dict[str, int]

    def close(self) -> None:
        for fd in [self.prog_fd, *self.map_fds.values()]:
            try:
                os.close(fd)
            except OSError:
                pass


def save(iface: str, attached: dict[str, int] | None = None) -> Saved | None:
    """What offload has on `iface` (None: nothing), held open; `attached` is what the caller's
    probe saw there (mode -> prog id), else the kernel is asked."""
    slot = pins.Slot(netns.current_name(), iface)
    try:
        if attached is None:
            attached = xdp.attached_progs(attach_mod.ifindex_of(iface))
        mine = ownership(slot, attached).mine
    except UsageError:
        return None
    if mine is None:
        return None
    try:
        meta = slot.verified_meta(mine.prog_id)
    except pins.StateError:   # ours by its pin; its record is no use: the kernel's view is put back
        meta = None
    pinned = slot.pinned_maps()   # what bpffs holds, whatever the record lists
    if meta is None:
        meta = slot.kernel_record(mine.prog_id, mine.mode, pinned, attach_mod.ifindex_of(iface))
    prog_fd = slot.open_prog()
    maps = {name: slot.open_map(name) for name in pinned}
    return Saved(slot, {**meta, "maps": pinned}, mine.mode, prog_fd, maps)


def put_back(snap: Saved) -> None:
    """Put the saved program back on its interface in its mode (atomically where the kernel
    allows), remove whatever of ours replaced it, and re-pin it with its metadata (and, if a
    bpf_link held it, the link that holds it again)."""
    ifindex = attach_mod.ifindex_of(snap.slot.iface)
    now = xdp.attached_progs(ifindex)
    current = ownership(snap.slot, now).mine
    for mode, prog_id in now.items():  # ours in another mode: take it off first
        if current and prog_id == current.prog_id and mode != snap.mode:
            attach_mod.take_off(snap.slot, ifindex, mode, prog_id)
    link_fd = snap.slot.pinned_link()
    try:
        link_fd = _restore(snap, ifindex, now.get(snap.mode), link_fd)
        snap.slot.write(snap.prog_fd, snap.map_fds, snap.meta, link_fd)
    finally:
        if link_fd is not None:
            os.close(link_fd)


def _restore(snap: Saved, ifindex: int, holder: int | None, link_fd: int | None) -> int | None:
    """Attach the saved program again the way it was held (the kernel puts neither a link over
    netlink nor netlink over a link: a holder attached the other way is taken off first, not
    atomically). The link that holds it, if one does; `link_fd` is consumed."""
    link = xdplink.info(link_fd) if link_fd is not None else None
    ours_link = link is not None and holder is not None and link.ifindex == ifindex and link.prog_id == holder
    was_link = snap.meta.get("via") == "link"
    if holder is not None and ours_link != was_link:
        attach_mod.take_off(snap.slot, ifindex, snap.mode, holder)
        holder, ours_link = None, False
    if not ours_link and link_fd is not None:
        os.close(link_fd)
        link_fd = None
    if ours_link:
        attach_mod.link_swap(link_fd, snap.prog_fd, holder)
    elif was_link:
        link_fd = xdplink.create(snap.prog_fd, ifindex, snap.mode)
    else:
        attach_mod.swap(ifindex, snap.prog_fd, snap.mode, holder)
    return link_fd
