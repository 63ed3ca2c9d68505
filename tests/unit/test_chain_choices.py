"""The pure parts of `attach --priority`: the chain-call actions, the priority's range, the modes a
chain may go in (never hw; the dispatcher's own when one is there), and which member of libxdp's
dispatcher is offload's."""

import pytest

from offload.errors import RefusedError, UsageError
from offload.load import chain
from offload.load.ownership import Held, ownership


def test_chain_actions_parse_like_xdp_loader_s():
    assert chain.parse_chain(None) == ("pass",)
    assert chain.parse_chain("PASS, drop,pass") == ("pass", "drop")
    assert chain.parse_chain("") == ()          # the next program never runs
    with pytest.raises(UsageError, match="unknown action 'xdp_pass'"):
        chain.parse_chain("xdp_pass")


@pytest.mark.parametrize("prio, ok", [(0, True), (20, True), (2**31 - 1, True), (-1, False), (2**31, False)])
def test_priority_range(prio, ok):
    if ok:
        assert chain.check_priority(prio) == prio
    else:
        with pytest.raises(UsageError, match="--priority"):
            chain.check_priority(prio)


def test_a_chain_is_never_offloaded():
    with pytest.raises(UsageError, match="never offloaded") as e:
        chain.chain_modes("hw", None)
    assert "native or generic" in e.value.hint


@pytest.mark.parametrize("requested, current, modes", [
    ("auto", None, ["native", "generic"]),
    ("generic", None, ["generic"]),
    ("auto", "generic", ["generic"]),       # join the dispatcher there, in its mode
    ("native", "native", ["native"]),
])
def test_chain_modes(requested, current, modes):
    assert chain.chain_modes(requested, current) == modes


def test_a_second_dispatcher_in_another_mode_is_refused():
    with pytest.raises(RefusedError, match="runs in generic, not in native"):
        chain.chain_modes("native", "generic")
    with pytest.raises(RefusedError, match="runs in generic, not in native"):   # the floor rules generic out
        chain.chain_modes("auto", "generic", "native")


def test_the_floor():
    assert chain.chain_modes("auto", None, "native") == ["native"]
    assert chain.chain_modes("auto", None, "generic") == ["native", "generic"]
    with pytest.raises(UsageError, match="below --min-mode native"):
        chain.chain_modes("generic", None, "native")
    with pytest.raises(UsageError, match="never offloaded"):
        chain.chain_modes("auto", None, "hw")


class _Slot:
    def __init__(self, pinned, staged=None):
        self._p, self._s = pinned, staged

    def pinned_prog_id(self):
        return self._p

    def staged_prog_id(self):
        return self._s


def test_ours_is_found_among_the_dispatcher_s_members():
    attached = {"native": 100}                   # the dispatcher
    members = {101: "native", 102: "native"}     # xdp-loader's, ours
    own = ownership(_Slot(102), attached, members)
    assert own.mine == Held("native", 102) and own.foreign == {"native": 100}
    assert ownership(_Slot(102), attached).mine is None           # without the members: not seen
    assert ownership(_Slot(999), attached, members).mine is None   # not in the chain: not ours
    assert ownership(_Slot(None, 101), attached, members).mine == Held("native", 101)   # staged, killed mid-attach


def test_a_member_s_kernel_name_is_its_function_s_cut_to_fit_beside_the_nul():
    from offload.kernel import bpfsys

    assert chain._kernel_name("xdp_count_and_pass") == "xdp_count_and_p"   # what bpftool shows
    assert len(chain._kernel_name("x" * 40)) == bpfsys.BPF_OBJ_NAME_LEN - 1 and chain._kernel_name(None) is None
