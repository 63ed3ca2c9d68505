"""Which XDP program on an interface is offload's, and which are someone else's.

offload's program is the one its pin holds and the kernel has attached: metadata alone is not
proof (a crash may leave it behind, or damage it), and an attached id alone is not either (a
foreign tool may have replaced ours).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from offload.kernel import clock
from offload.load import pins


class Held(NamedTuple):
    """Where offload's program is attached, and which program it is."""

    mode: str
    prog_id: int


@dataclass(frozen=True)
class Ownership:
    mine: Held | None                                    # our program, if attached
    foreign: dict[str, int] = field(default_factory=dict)  # mode -> prog id of the programs not ours


def ownership(slot: pins.Slot, attached: dict[str, int], members: dict[int, str] | None = None) -> Ownership:
    """Split what is attached (mode -> prog id, as rtnetlink says) into ours and foreign. With
    `members` (prog id -> mode of the programs in libxdp's dispatcher there), ours may be one of
    them: the dispatcher then stays listed as foreign (other tools' programs run in it)."""
    if not attached:   # nothing attached, nothing of anyone's: no pin to read (most of a fresh node)
        return Ownership(None, {})
    pids = {slot.pinned_prog_id(), slot.staged_prog_id()} - {None}   # staged: a run killed mid-attach
    mine = next((Held(m, i) for m, i in attached.items() if i in pids), None)
    if mine is None and members:
        mine = next((Held(m, i) for i, m in members.items() if i in pids), None)
    return Ownership(mine, {m: i for m, i in attached.items() if mine is None or i != mine.prog_id})


# -- a chain member's replacement killed half-way: which dispatcher members are offload's leftovers ----
class SlotView(NamedTuple):
    """What one slot holds, read once (`view`): the plain data `leftovers` decides over."""

    slot: pins.Slot
    pinned: int | None
    staged: int | None
    record: dict | None          # the committed record (None: none, or damaged)
    staged_record: dict | None   # NAME.json%new: a staged member's, or a write-ahead (`pending`)


class Leftover(NamedTuple):
    """offload's program in a dispatcher that no slot holds as its member: it leaves by id, and
    `stage` says the slot's staging debris goes with it (never the slot's live pins)."""

    slot: pins.Slot
    why: str
    stage: bool


def view(slot: pins.Slot) -> SlotView:
    def safe(read):
        try:
            return read()
        except pins.StateError:
            return None
    return SlotView(slot, slot.pinned_prog_id(), slot.staged_prog_id(), safe(slot.meta), safe(slot.staged_meta))


def leftovers(programs: list[dict], views: list[SlotView]) -> dict[int, Leftover]:
    """prog id -> Leftover of the dispatcher's `programs` (dicts with prog_id, priority and
    chain_call_actions, in run order) that a SIGKILL of a member's attach or replacement left
    running: staged and never committed, replaced by a committed member and not yet gone, or added
    by libxdp before its pins were staged (found by the write-ahead: not among the members before,
    at the priority and actions it was added with). A program a slot pins is never one."""
    held = {v.pinned for v in views} - {None}
    ids = {p["prog_id"] for p in programs} - {None}
    out: dict[int, Leftover] = {}
    for v in views:
        if v.staged in ids - held:
            out[v.staged] = Leftover(v.slot, "staged by a run killed before its pins were committed", True)
        old = (v.record or {}).get("replaces")
        if old in ids - held and v.pinned is not None:
            out.setdefault(old, Leftover(v.slot, f"replaced by program {v.pinned}; the run was killed before "
                                                 "it left", False))
        pending = (v.staged_record or {}).get("pending")
        if pending and v.staged is None:
            new = ids - held - out.keys() - set(pending.get("before", []))
            fits = [p["prog_id"] for p in programs if p["prog_id"] in new and _as_intended(p, v.staged_record or {})]
            if len(fits) == 1:   # two alike: which is ours is unknown, and a foreign one is never touched
                out[fits[0]] = Leftover(v.slot, "added by a run killed before its pins were staged", True)
    return out


# how long after its write-ahead a program libxdp added may have been loaded (libxdp's attach takes
# seconds under an emulator): a program loaded later, alike or not, is another's
PENDING_FOR = 300.0


def _as_intended(p: dict, intent: dict) -> bool:
    """Program `p` has the priority, chain actions and kernel name a write-ahead recorded, and
    was loaded in the moments after it was written."""
    want = intent.get("chain") or {}
    name = (intent.get("pending") or {}).get("name")
    written, loaded = clock.seconds(intent.get("attached_at")), clock.seconds(p.get("loaded_at"))
    return (p["priority"] == want.get("priority") and (name is None or p.get("name") == name)
            and sorted(p["chain_call_actions"]) == sorted(want.get("chain_call_actions", []))
            and (written is None or loaded is None or -5.0 <= loaded - written <= PENDING_FOR))
