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


def _advice(status: str):
    from offload.load import advice

    found = [advice.Finding("kernel-map-types", "kernel", "refuse", "map hits: type percpu_array", "p.c:12",
                            "only ARRAY and HASH", "use an array", "kernel/bpf/offload.c")] if status == "refused" else []
    return advice.Advice("hw", status, found)


def test_hw_the_advisor_refuses_is_passed_over_with_the_programs_place():
    tried, skipped = candidates("auto", None, verdicts(), _advice("refused"))
    assert tried == ["native", "generic"]
    (hw,) = skipped
    assert hw["mode"] == "hw" and hw["reason"].startswith("not tried: the program would be refused: ")
    assert "map hits: type percpu_array (p.c:12)" in hw["reason"] and "--try-hw" in hw["reason"]


def test_hw_the_advisor_passes_or_cannot_tell_is_tried_and_explicit_modes_ignore_it():
    assert candidates("auto", None, verdicts(), _advice("would_load"))[0] == ["hw", "native", "generic"]
    assert candidates("auto", None, verdicts(), _advice("unknown"))[0] == ["hw", "native", "generic"]
    assert candidates("hw", None, verdicts(), _advice("refused")) == (["hw"], [])
    # with a floor of hw and the advisor's refusal, nothing is left to try: attach says why
    assert candidates("auto", "hw", verdicts(), _advice("refused"))[0] == []
