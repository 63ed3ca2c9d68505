"""Which XDP program on an interface is offload's, and which are someone else's.

offload's program is the one its pin holds and the kernel has attached: metadata alone is not
proof (a crash may leave it behind, or damage it), and an attached id alone is not either (a
foreign tool may have replaced ours).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

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
