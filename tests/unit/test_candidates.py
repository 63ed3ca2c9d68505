"""`load.attach.candidates`: which modes an attach tries, over plain verdicts. Pure: no kernel.

The rules: never a mode below --min-mode; a mode the probe finds unsupported is passed over (with
the probe's reason), while blocked and unknown ones are still tried (the kernel has the last word);
an explicit --mode below --min-mode is a usage error."""

import pytest

from offload.errors import UsageError
from offload.load.attach import candidates
from offload.probe.verdicts import BLOCKED, SUPPORTED, UNKNOWN, UNSUPPORTED, ModeVerdict


def verdicts(hw: str = SUPPORTED, native: str = SUPPORTED, generic: str = SUPPORTED) -> dict[str, ModeVerdict]:
    return {m: ModeVerdict(s, [f"{m} is {s}"]) for m, s in (("hw", hw), ("native", native), ("generic", generic))}


def test_auto_without_a_floor_tries_every_mode_best_first():
    assert candidates("auto", None, verdicts()) == (["hw", "native", "generic"], [])


@pytest.mark.parametrize("floor,tried", [("hw", ["hw"]), ("native", ["hw", "native"]),
                                         ("generic", ["hw", "native", "generic"])])
def test_the_floor_keeps_every_lower_mode_out(floor, tried):
    assert candidates("auto", floor, verdicts()) == (tried, [])


def test_a_mode_below_the_floor_is_neither_tried_nor_listed_even_when_unsupported():
    assert candidates("auto", "native", verdicts(generic=UNSUPPORTED)) == (["hw", "native"], [])


def test_unsupported_modes_are_passed_over_with_the_probes_reason():
    tried, skipped = candidates("auto", None, verdicts(hw=UNSUPPORTED, native=UNSUPPORTED))
    assert tried == ["generic"]
    assert skipped == [{"mode": "hw", "reason": "not tried: hw is unsupported"},
                       {"mode": "native", "reason": "not tried: native is unsupported"}]


def test_blocked_and_unknown_modes_are_still_tried():
    assert candidates("auto", None, verdicts(hw=UNKNOWN, native=BLOCKED)) == (["hw", "native", "generic"], [])


def test_everything_unsupported_above_the_floor_leaves_nothing_to_try():
    tried, skipped = candidates("auto", "native", verdicts(hw=UNSUPPORTED, native=UNSUPPORTED))
    assert tried == [] and [s["mode"] for s in skipped] == ["hw", "native"]


@pytest.mark.parametrize("mode,floor", [("generic", "native"), ("generic", "hw"), ("native", "hw")])
def test_an_explicit_mode_below_the_floor_is_refused(mode, floor):
    with pytest.raises(UsageError, match=f"--mode {mode} is below --min-mode {floor}"):
        candidates(mode, floor, verdicts())


@pytest.mark.parametrize("mode,floor", [("native", None), ("native", "native"), ("hw", "generic")])
def test_an_explicit_mode_at_or_above_the_floor_is_tried_alone_whatever_the_probe_says(mode, floor):
    assert candidates(mode, floor, verdicts(hw=UNSUPPORTED, native=UNSUPPORTED)) == ([mode], [])
