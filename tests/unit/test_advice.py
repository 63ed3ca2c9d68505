"""The advisor's rules as data, pinned to the kernel's sources, and the pure judging over them
(load.advice): programs described as plain facts, no kernel, no clang."""

import pytest

from offload.load import advice
from offload.load.advice import MapFacts, Place, ProgramFacts, Use
from offload.probe.profiles import load

PROFILES, _ = load(recheck=True)
NSIM, NFP = PROFILES["netdevsim"], PROFILES["nfp"]


def rule(profile, rule_id):
    (r,) = [r for r in profile.offload_rules if r["id"] == rule_id]
    return r


# -- the rules are the kernel's ----------------------------------------------------------------------
def test_the_kernel_rules_are_the_same_for_every_offloading_driver():
    kernel = [[r for r in p.offload_rules if r["origin"] == "kernel"] for p in (NSIM, NFP)]
    assert kernel[0] == kernel[1] and len(kernel[0]) >= 4
    # bpf_map_offload_map_alloc(): attr->map_type != BPF_MAP_TYPE_ARRAY && != BPF_MAP_TYPE_HASH -> -EINVAL
    r = rule(NSIM, "kernel-map-types")
    assert (set(r["allowed"]), r["errno"]) == ({"array", "hash"}, "EINVAL")
    assert r["source"] == "kernel/bpf/offload.c bpf_map_offload_map_alloc()"
    # bpf_prog_offload_init(): if (attr->prog_flags) return -EINVAL
    assert (rule(NSIM, "kernel-prog-flags")["check"], rule(NSIM, "kernel-prog-flags")["errno"]) == ("prog_flags", "EINVAL")


def test_netdevsim_rules_are_nsim_bpf_map_alloc():
    # NSIM_BPF_MAX_KEYS 2; max_entries > it -> -ENOMEM; map_flags -> -EINVAL
    r = rule(NSIM, "netdevsim-max-entries")
    assert (r["max"], r["errno"], r["effect"]) == (2, "ENOMEM", "refuse")
    assert (rule(NSIM, "netdevsim-map-flags")["allowed"], rule(NSIM, "netdevsim-map-flags")["errno"]) == ([], "EINVAL")
    assert all(r["source"].startswith(("drivers/net/netdevsim/bpf.c", "kernel/bpf/"))
               for r in NSIM.offload_rules)


def test_nfp_rules_are_its_verifier_and_jit():
    # nfp_bpf_check_helper_call()'s cases, which jit.c helper_call() JITs; anything else: "unsupported function id"
    r = rule(NFP, "nfp-helpers")
    assert set(r["allowed"]) == {"map_lookup_elem", "map_update_elem", "map_delete_elem", "get_prandom_u32",
                                 "perf_event_output", "xdp_adjust_head", "xdp_adjust_tail"}
    assert r["errno"] == "EOPNOTSUPP" and "verifier.c nfp_bpf_check_helper_call()" in r["source"]
    # nfp_bpf_check_atomic(): meta->insn.imm != BPF_ADD -> "atomic op not implemented"
    assert rule(NFP, "nfp-atomics")["allowed"] == ["add"]
    # nfp_outro_xdp(): "if R0 > 3 jump to abort": XDP_REDIRECT (4) is an abort on the card
    r = rule(NFP, "nfp-redirect")
    assert (r["refused_values"], r["effect"]) == ([4], "warn")
    # nfp_bpf_map_alloc(): map_flags or a NUMA node -> -EINVAL
    assert rule(NFP, "nfp-map-flags")["errno"] == "EINVAL"
    # program length and stack are the firmware's (NFP_NET_CFG_BPF_MAX_LEN, _STACK_SZ): not known without the card
    assert rule(NFP, "nfp-firmware-size")["effect"] == "note"
    assert all("netronome/nfp/bpf/" in r["source"] or r["origin"] == "kernel" for r in NFP.offload_rules)


def test_only_offloading_drivers_carry_rules():
    assert {d for d, p in PROFILES.items() if p.offload_rules} == {"netdevsim", "nfp"}
    assert {d for d, p in PROFILES.items() if p.capability("hw_offload")["supported"]} == {"netdevsim", "nfp"}


# -- judging -----------------------------------------------------------------------------------------
AT = Place("xdp", 4, "prog.c", 12, "__u64 *v = bpf_map_lookup_elem(&hits, &k);")


def facts(**kw) -> ProgramFacts:
    f = ProgramFacts("prog", "object", "xdp_prog", "xdp", insns=12,
                     helpers=[Use("map_lookup_elem", AT)], atomics=[Use("add", AT)])
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def a_map(type_="array", entries=2, flags=(), internal=False, name="hits", inner=None):
    return MapFacts(name, type_, 4, 8, entries, list(flags), internal, None, inner, AT)


def hw(f, profile):
    return advice.judge(f, profile.offload_rules, "hw", advice.WOULD_LOAD)


def test_an_array_map_program_would_load_on_both():
    f = facts(maps=[a_map()])
    for p in (NSIM, NFP):
        a = hw(f, p)
        assert a.status == advice.WOULD_LOAD and a.reason == ""
    assert {x.effect for x in hw(f, NFP).findings} == {"note"}   # the firmware's caps, as notes


def test_a_per_cpu_map_is_refused_naming_the_map_and_its_line():
    a = hw(facts(maps=[a_map("percpu_array")]), NFP)
    assert a.status == advice.REFUSED
    (f,) = [f for f in a.findings if f.effect == "refuse"]
    assert (f.rule, f.what, f.where, f.errno) == ("kernel-map-types", "map hits: type percpu_array", "prog.c:12", "EINVAL")
    assert "map hits: type percpu_array (prog.c:12)" in a.reason and f.fix


@pytest.mark.parametrize("entries,status", [(2, advice.WOULD_LOAD), (3, advice.REFUSED)])
def test_netdevsim_takes_two_entries(entries, status):
    assert hw(facts(maps=[a_map(entries=entries)]), NSIM).status == status
    assert hw(facts(maps=[a_map(entries=entries)]), NFP).status == advice.WOULD_LOAD   # nfp: the firmware's cap


def test_each_kind_of_refusal():
    cases = {
        "kernel-prog-flags": facts(prog_flags=["BPF_F_XDP_HAS_FRAGS"]),
        "kernel-tail-calls": facts(tail_calls=[Use("tail_call", AT)]),
        "netdevsim-map-flags": facts(maps=[a_map("hash", flags=["BPF_F_NO_PREALLOC"])]),
        "netdevsim-global-data": facts(global_data=[Use(".bss seen", AT)],
                                       maps=[a_map(flags=["BPF_F_MMAPABLE"], internal=True, name="prog.bss")]),
    }
    for rule_id, f in cases.items():
        a = hw(f, NSIM)
        assert a.status == advice.REFUSED and rule_id in {x.rule for x in a.findings if x.effect == "refuse"}, rule_id


def test_an_inner_map_is_judged_too():
    a = hw(facts(maps=[a_map("array_of_maps", inner="percpu_hash")]), NSIM)
    assert {x.what for x in a.findings} == {"map hits: type array_of_maps", "map hits (inner map): type percpu_hash"}


def test_nfp_refuses_what_netdevsim_takes():
    f = facts(helpers=[Use("ktime_get_ns", AT)], atomics=[Use("fetch_add", AT)], kfuncs=[Use("bpf_foo", AT)])
    assert hw(f, NSIM).status == advice.UNKNOWN            # kfuncs: the kernel's config decides
    refused = {x.rule for x in hw(f, NFP).findings if x.effect == "refuse"}
    assert refused == {"nfp-helpers", "nfp-atomics", "nfp-kfuncs"}


def test_redirect_on_nfp_is_a_warning_not_a_refusal():
    a = hw(facts(returns=[Use("4", AT)]), NFP)
    assert a.status == advice.WOULD_LOAD
    (w,) = [x for x in a.findings if x.effect == "warn"]
    assert w.what == "returns XDP_REDIRECT"


def test_the_device_can_only_make_it_worse_and_unread_programs_are_unknown():
    f = facts(maps=[a_map()])
    assert advice.judge(f, NSIM.offload_rules, "hw", advice.REFUSED, "no hw here").status == advice.REFUSED
    unread = ProgramFacts("p", "bcc", "xdp_prog", None, read=False, unread="bcc C is compiled at load")
    assert advice.judge(unread, NSIM.offload_rules, "hw", advice.WOULD_LOAD).status == advice.UNKNOWN
    assert advice.judge(unread, [], "native", advice.WOULD_LOAD).status == advice.WOULD_LOAD


def test_rules_for_other_modes_and_extra_checks_join():
    only_native = [{**rule(NSIM, "kernel-map-types"), "modes": ["native"]}]
    f = facts(maps=[a_map("percpu_array")])
    assert advice.judge(f, only_native, "hw", advice.WOULD_LOAD).status == advice.WOULD_LOAD
    assert advice.judge(f, only_native, "native", advice.WOULD_LOAD).status == advice.REFUSED

    def never_in_hw(fx, mode):
        return [advice.Finding("x-chain", "program", "refuse", "a chain", None, "chains stay on the host", "-", "-")
                ] if mode == "hw" else []
    a = advice.judge(facts(), [], "hw", advice.WOULD_LOAD, extra=[never_in_hw])
    assert a.status == advice.REFUSED and "a chain" in a.reason


def test_docs_list_every_rule():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "advisor.md").read_text()
    for p in (NSIM, NFP):
        for r in p.offload_rules:
            assert f"`{r['id']}`" in doc and r["source"] in doc, r["id"]


def test_a_perf_event_array_stays_on_the_host():
    # bpf_map_offload_neutral(): an offloaded program may use it unbound; the loader leaves it so
    events = a_map("perf_event_array", entries=0, name="events")
    f = facts(maps=[events], helpers=[Use("perf_event_output", AT)])
    assert hw(f, NSIM).status == hw(f, NFP).status == advice.WOULD_LOAD


PAST_END = (b"\x7fELF\x02\x01".ljust(0x28, b"\0") + (1 << 20).to_bytes(8, "little")).ljust(0x3A, b"\0") + \
    bytes([64, 0, 3, 0, 0, 0])           # three section headers at 1 MiB, in a file of 64 bytes


@pytest.mark.parametrize("data", [b"", b"\x7fELF" + b"\0" * 10, PAST_END], ids=["empty", "elf32", "past-end"])
def test_a_damaged_elf_is_a_read_error_never_a_crash(data):
    from offload.kernel import bpfelf

    with pytest.raises(bpfelf.ElfReadError):
        bpfelf.read("x.o", data)
