"""`offload check` on this machine: objects compiled by clang (the VM lane's corpus, tests/lib/
objects.py) read without loading, judged against the nfp and netdevsim profiles with no such device
here (--driver), and against a veth lab's interface; every place checked against the C source."""

from pathlib import Path

import pytest
from lib.cli import offload, offload_json
from lib.objects import CORPUS, corpus_objects
from lib.schemas import validate

from offload.kernel import bpfelf
from offload.load import advisor, programs



@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return corpus_objects(tmp_path_factory.mktemp("corpus"))


def line_of(name: str, needle: str) -> int:
    """The 1-based line of the corpus program's source holding `needle` (the ground truth for BTF)."""
    (n,) = [i for i, ln in enumerate(CORPUS[name].splitlines(), 1) if needle in ln]
    return n


def hw(doc: dict, driver: str) -> dict:
    (t,) = [t for t in doc["targets"] if t["driver"] == driver]
    return t["modes"]["hw"]


def test_a_per_cpu_map_is_refused_by_nfp_naming_the_map_and_its_line(corpus):
    doc = validate(offload_json("check", str(corpus["percpu-array"]), "--driver", "nfp"), "check")
    h = hw(doc, "nfp")
    assert h["status"] == "refused"
    (f,) = [f for f in h["findings"] if f["effect"] == "refuse"]
    assert f["what"] == "map hits: type percpu_array" and f["errno"] == "EINVAL"
    assert f["where"].endswith(f"percpu-array.c:{line_of('percpu-array', 'bpf_map_lookup_elem')}")
    assert f["source"] == "kernel/bpf/offload.c bpf_map_offload_map_alloc()" and f["fix"]
    (t,) = doc["targets"]
    assert t["interface"] is None and t["predicted"] == "native" and t["not_tried"][0]["mode"] == "hw"
    human = offload("check", str(corpus["percpu-array"]), "--driver", "nfp").stdout
    assert "would be refused" in human and "map hits: type percpu_array" in human


def test_an_array_map_passes_and_netdevsim_refuses_three_entries(corpus):
    doc = validate(offload_json("check", str(corpus["array"]), "--driver", "nfp", "--driver", "netdevsim"), "check")
    assert hw(doc, "nfp")["status"] == hw(doc, "netdevsim")["status"] == "would_load"
    assert [t["predicted"] for t in doc["targets"]] == ["hw", "hw"]
    doc = offload_json("check", str(corpus["too-many-entries"]), "--driver", "netdevsim", "--driver", "nfp")
    (f,) = [f for f in hw(doc, "netdevsim")["findings"] if f["effect"] == "refuse"]
    assert (f["rule"], f["errno"]) == ("netdevsim-max-entries", "ENOMEM") and "max_entries 3" in f["what"]
    assert hw(doc, "nfp")["status"] == "would_load"      # nfp's cap is its firmware's


def test_a_program_in_a_dispatcher_chain_is_never_offloaded(corpus):
    """`--in-chain` (attach --priority): an array-map object nfp would offload alone is refused in hw
    as a chain member, with the chain rule's reason; native stays as it was."""
    alone = offload_json("check", str(corpus["array"]), "--driver", "nfp")
    assert hw(alone, "nfp")["status"] == "would_load"
    doc = validate(offload_json("check", str(corpus["array"]), "--driver", "nfp", "--in-chain"), "check")
    (f,) = [f for f in hw(doc, "nfp")["findings"] if f["effect"] == "refuse"]
    assert f["rule"] == "chain" and "never offloaded" in f["why"] and "--priority" in f["fix"]
    (t,) = doc["targets"]
    assert t["predicted"] == "native" and t["modes"]["native"]["status"] == "would_load"


@pytest.mark.parametrize("name,rule", [
    ("frags", "kernel-prog-flags"), ("tail-call", "kernel-tail-calls"), ("lpm-trie", "kernel-map-types"),
    ("global-bss", "netdevsim-global-data"), ("global-rodata", "netdevsim-global-data"),
    ("map-flags", "netdevsim-map-flags"), ("devmap-redirect", "kernel-map-types"),
])
def test_each_refusal_has_its_rule(corpus, name, rule):
    doc = offload_json("check", str(corpus[name]), "--driver", "netdevsim")
    assert rule in {f["rule"] for f in hw(doc, "netdevsim")["findings"] if f["effect"] == "refuse"}


def test_what_the_program_holds_is_read_from_the_object(corpus):
    f = advisor.read(programs.resolve(str(corpus["bpf-to-bpf-call"])))
    assert f.functions == ["bump"] and [u.name for u in f.bpf_calls] == ["bump"]
    (lookup,) = f.helpers
    assert lookup.place.line == line_of("bpf-to-bpf-call", "bpf_map_lookup_elem")
    entry = bpfelf.read(str(corpus["bpf-to-bpf-call"]), corpus["bpf-to-bpf-call"].read_bytes())
    own = next(s for s in entry.functions if s.name == "xdp_prog")
    assert f.insns > own.size // 8          # the subprogram counts, as libbpf appends it
    t = advisor.read(programs.resolve(str(corpus["tail-call"])))
    assert [u.name for u in t.tail_calls] == ["tail_call"] and t.maps[0].type == "prog_array"
    g = advisor.read(programs.resolve(str(corpus["global-bss"])))
    assert [u.name for u in g.global_data] == [".bss seen"] and g.global_data[0].place.line == line_of("global-bss", "seen++")
    (m,) = g.maps
    assert m.internal and "BPF_F_MMAPABLE" in m.flags
    assert advisor.read(programs.resolve(str(corpus["frags"]))).frags
    a = advisor.read(programs.resolve(str(corpus["adjust-head-tx"])))
    assert "3" in {u.name for u in a.returns} and a.to_dict()["adjusts"] == ["xdp_adjust_head"]
    r = advisor.read(programs.resolve(str(corpus["atomic-fetch-add"])))
    assert [u.name for u in r.atomics] == ["fetch_add"]


def test_nfp_refuses_helpers_and_fetching_atomics_netdevsim_takes(corpus):
    for name, rule in (("helper-ktime", "nfp-helpers"), ("redirect-helper", "nfp-helpers"),
                       ("atomic-fetch-add", "nfp-atomics")):
        doc = offload_json("check", str(corpus[name]), "--driver", "nfp", "--driver", "netdevsim")
        assert hw(doc, "netdevsim")["status"] == "would_load"
        assert rule in {f["rule"] for f in hw(doc, "nfp")["findings"] if f["effect"] == "refuse"}, name


def test_library_programs_and_c_source(tmp_path):
    doc = validate(offload_json("check", "count_drop", "--driver", "nfp", "--driver", "netdevsim"), "check")
    assert [t["predicted"] for t in doc["targets"]] == ["hw", "hw"]    # the library's offloadable variant
    src = tmp_path / "percpu.c"
    src.write_text(CORPUS["percpu-array"])
    doc = offload_json("check", str(src), "--driver", "netdevsim")     # libbpf C, compiled into the cache
    assert hw(doc, "netdevsim")["status"] == "refused"


def test_a_legacy_maps_object_is_read_too(tmp_path):
    from lib.objects import hits_object

    doc = offload_json("check", str(hits_object(tmp_path, "BPF_MAP_TYPE_PERCPU_ARRAY", legacy=True)),
                       "--driver", "netdevsim")
    assert hw(doc, "netdevsim")["status"] == "refused"
    assert any("type percpu_array" in f["what"] for f in hw(doc, "netdevsim")["findings"])


@pytest.mark.parametrize("args,needle", [
    (["/nonexistent.o", "--driver", "nfp"], "program not found"),
    (["count_drop", "--driver", "nosuch"], "no driver profile for nosuch"),
    (["count_drop", "nosuch0"], "no such interface"),
    (["count_drop", "--param", "x=1", "--driver", "nfp"], "takes no parameter"),
])
def test_bad_input_exits_2_with_a_message(args, needle):
    res = offload("check", *args, check=False)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr


def test_a_damaged_object_exits_2(tmp_path, corpus):
    cut = tmp_path / "cut.o"
    cut.write_bytes(corpus["array"].read_bytes()[:300])
    res = offload("check", str(cut), "--driver", "nfp", check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr


@pytest.mark.root
def test_on_a_veth_hw_is_the_device_s_refusal(env, corpus):
    doc = validate(env.offload_json("check", str(corpus["percpu-array"]), env.ifname), "check")
    (t,) = doc["targets"]
    assert t["interface"] == env.ifname and t["modes"]["hw"]["status"] == "refused"
    assert [f["rule"] for f in t["modes"]["hw"]["findings"]] == ["device"]   # no offload rules for veth
    assert t["modes"]["native"]["status"] == "would_load" and t["predicted"] == "native"


def test_plan_predicts_the_mode_with_the_advisor_on_a_recorded_nfp(corpus):
    """The plan over a recorded nfp host (tests/fixtures): a per-CPU-map object goes to native with
    the advisor's reason, an array-map one to hw with native as its fallback."""
    from lib.helpers import load_fixture

    from offload.orchestrate.plan import make_plan
    from offload.orchestrate.policy import parse
    from offload.probe import verdicts
    from offload.probe.profiles import load
    from offload.probe.report import Assessed

    host, devs = load_fixture("nfp-6.6")
    profs, _ = load()
    devices = [Assessed(d, profs.get(d.driver or ""), verdicts.evaluate(d, profs.get(d.driver or ""), host))
               for d in devs.values()]
    for name, mode, fallback in (("percpu-array", "native", "generic"), ("array", "hw", "native")):
        pol = parse(f"rules:\n  - name: r\n    match: {{capabilities: [hw-offload]}}\n    program: {corpus[name]}\n")
        (item,) = make_plan(pol, devices, {})
        assert (item.mode, item.fallback) == (mode, fallback), name
        if mode == "native":
            (nt,) = item.not_tried
            assert nt["mode"] == "hw" and "map hits: type percpu_array" in nt["reason"]
        else:
            assert item.not_tried == []


def test_bcc_c_is_not_read_and_hw_stays_unknown(tmp_path):
    src = tmp_path / "b.c"
    src.write_text("BPF_ARRAY(c, u64, 1);\nint xdp_prog(struct xdp_md *ctx) { return XDP_PASS; }\n")
    doc = validate(offload_json("check", str(src), "--driver", "nfp"), "check")
    assert doc["facts"]["read"] is False and "bcc C is compiled at load" in doc["facts"]["unread"]
    (t,) = doc["targets"]
    assert t["modes"]["hw"]["status"] == "unknown" and t["predicted"] == "hw"   # attach tries it, as before
