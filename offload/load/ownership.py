"""Which XDP program on an interface is offload's, and which are someone else's.

offload's program is the one its pin holds: metadata alone is not proof (a crash may leave it
behind), and a program id alone is not either (ids of programs that were replaced are reused
only after a wrap, but a foreign tool may have replaced ours).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from offload.load import pins


@dataclass(frozen=True)
class Ownership:
    mine: tuple[str, int] | None                         # (mode, prog id) of our program, if attached
    foreign: dict[str, int] = field(default_factory=dict)  # mode -> prog id of the programs not ours


def ownership(slot: pins.Slot, attached: dict[str, int]) -> Ownership:
    """Split what is attached (mode -> prog id, as rtnetlink says) into ours and foreign."""
    pid = slot.pinned_prog_id() if slot.meta() is not None else None
    mine = next(((m, i) for m, i in attached.items() if pid is not None and i == pid), None)
    return Ownership(mine, {m: i for m, i in attached.items() if mine is None or i != mine[1]})
