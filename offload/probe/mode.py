"""The one XDP mode vocabulary: the modes, ranked, and the order to try them in.

Kept apart from `verdicts` so that the CLI's choices cost no imports.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """The XDP attach modes, declared best first. Members are their strings ("hw", ...), so they
    serialise to JSON and compare with plain strings as they are."""

    HW = "hw"              # hardware offload: the program runs on the NIC
    NATIVE = "native"      # in the driver, before an skb exists
    GENERIC = "generic"    # on the skb, in the core stack: works everywhere, slowest

    @property
    def rank(self) -> int:
        """generic 0 < native 1 < hw 2: higher is better."""
        return len(MODES) - 1 - MODES.index(self)

    def at_least(self, floor: "str | None") -> bool:
        return floor is None or self.rank >= Mode(floor).rank


MODES: tuple[Mode, ...] = tuple(Mode)        # best first
AUTO = "auto"                                # "try them in order", where a mode may be asked for
CHOICES: tuple[str, ...] = (AUTO, *MODES)


def fallback_order(requested: str = AUTO, floor: str | None = None) -> list[Mode]:
    """The modes to consider, best first: every mode at or above `floor`, or just the one asked."""
    if requested != AUTO:
        return [Mode(requested)]
    return [m for m in MODES if m.at_least(floor)]


def better(a: str | None, b: str | None) -> str | None:
    """The better of two modes (None counts as no mode)."""
    if a is None or b is None:
        return a or b
    return a if Mode(a).rank >= Mode(b).rank else b
