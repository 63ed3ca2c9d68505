"""The programs users have: compiled BPF objects (the test's own, built with clang, and Debian's
libxdp ones that nobody here wrote), libbpf-style C compiled once into a cache, and every bad
file a user may hand over. The kernel's view (`ip -d -j link`, the pins) is the ground truth."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from lib.helpers import PIN_ROOT
from lib.helpers import clang_object as compile_c
from lib.kernel import kernel_xdp
from lib.objects import HEAD, TAIL, counter

from offload.bench.frames import ipv4_udp
from offload.kernel import bpfsys

pytestmark = pytest.mark.root

LIBXDP = Path("/usr/lib/x86_64-linux-gnu/bpf")
XDP_PASS, XDP_DROP = 2, 1

COUNTER = counter("BPF_MAP_TYPE_ARRAY", entries=1, map_name="seen", func="xdp_count")
VERDICT = HEAD + """
const volatile __u32 verdict = XDP_PASS;
const volatile char label[8] = "none";
volatile __u64 hits = 0;

SEC("xdp")
int xdp_verdict(struct xdp_md *ctx)
{
    hits++;
    return verdict;
}
""" + TAIL
TWO = HEAD + """
SEC("xdp") int first(struct xdp_md *ctx) { return XDP_PASS; }
SEC("xdp.frags") int second(struct xdp_md *ctx) { return XDP_DROP; }
""" + TAIL
LEGACY_DEF = """
struct bpf_map_def {
    unsigned int type, key_size, value_size, max_entries, map_flags;
};
"""
# Maps as libbpf 0.x and older tutorials declared them; the program counts frames and bytes.
LEGACY = HEAD + LEGACY_DEF + """
struct bpf_map_def SEC("maps") frames = {
    .type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 8, .max_entries = 1,
};
struct bpf_map_def SEC("maps") bytes = {
    .type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 8, .max_entries = 1,
};

SEC("xdp")
int legacy_count(struct xdp_md *ctx)
{
    __u32 k = 0;
    __u64 *v = bpf_map_lookup_elem(&frames, &k);
    if (v)
        __sync_fetch_and_add(v, 1);
    v = bpf_map_lookup_elem(&bytes, &k);
    if (v)
        __sync_fetch_and_add(v, ctx->data_end - ctx->data);
    return XDP_DROP;
}
""" + TAIL
LEGACY_CALL = HEAD + LEGACY_DEF + """
struct bpf_map_def SEC("maps") m = { .type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 8, .max_entries = 1 };
__attribute__((noinline)) int helper(struct xdp_md *ctx) { return ctx->data_end > ctx->data ? XDP_PASS : XDP_DROP; }
SEC("xdp") int calls(struct xdp_md *ctx) { __u32 k = 0; bpf_map_lookup_elem(&m, &k); return helper(ctx); }
""" + TAIL
TC_ONLY = HEAD + 'SEC("tc") int classifier(struct __sk_buff *skb) { return 0; }\n' + TAIL


def clang_object(tmp_path: Path, name: str, text: str) -> Path:
    src = tmp_path / f"{name}.c"
    src.write_text(text)
    return compile_c(src, tmp_path / f"{name}.o")


def pinned_prog(env, dev: str) -> int:
    return bpfsys.obj_get(str(PIN_ROOT / env.netns / dev / "prog"))


def nothing_left(env, dev: str) -> None:
    assert kernel_xdp(dev, env.netns) == {}
    assert not (PIN_ROOT / env.netns / dev).exists()


def test_object_attaches_like_ip_link_obj(env, tmp_path):
    obj = clang_object(tmp_path, "counter", COUNTER)
    res = env.offload_json("attach", env.ifname, str(obj))
    assert res["mode"] == "native" and res["program"] == "counter"
    assert kernel_xdp(env.ifname, env.netns) == {"native": res["prog_id"]}
    info = bpfsys.prog_info(res["prog_id"])
    assert info.name == "xdp_count"
    assert (PIN_ROOT / env.netns / env.ifname / "map_seen").exists()   # its BTF map, pinned with it
    st = env.offload_json("stats", env.ifname)                          # no offload counters: run counts
    assert st["program"] == "counter" and st["counters"] == "prog_info" and "run_cnt" in st
    det = env.offload_json("detach", env.ifname)
    assert det["detached"]["prog_id"] == res["prog_id"]
    nothing_left(env, env.ifname)


def test_globals_are_set_before_load(env, tmp_path):
    obj = clang_object(tmp_path, "verdict", VERDICT)
    res = env.offload_json("attach", env.ifname, str(obj), "--mode", "generic",
                           "--param", "verdict=1", "--param", "label=drop", "--param", "hits=5")
    assert kernel_xdp(env.ifname, env.netns) == {"generic": res["prog_id"]}
    fd = pinned_prog(env, env.ifname)
    try:  # the kernel runs the attached program itself: the .rodata it sees says XDP_DROP
        assert bpfsys.prog_test_run(fd, ipv4_udp("192.0.2.1", "198.51.100.1")).retval == XDP_DROP
    finally:
        os.close(fd)
    rodata = subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True, text=True, check=True).stdout
    assert "rodata" in rodata


@pytest.mark.parametrize("param,needle", [
    ("verdict=4294967296", "out of range"), ("verdict=x", "is an integer"),
    ("label=much-too-long", "holds 8"), ("nosuch=1", "no global variable nosuch")])
def test_bad_params_are_refused_before_anything_loads(env, tmp_path, param, needle):
    obj = clang_object(tmp_path, "verdict", VERDICT)
    res = env.offload("attach", env.ifname, str(obj), "--param", param, check=False)
    assert res.returncode == 2 and needle in res.stderr and str(obj) in res.stderr, res.stderr
    nothing_left(env, env.ifname)


def test_several_xdp_programs_need_a_choice(env, tmp_path):
    obj = clang_object(tmp_path, "two", TWO)
    res = env.offload("attach", env.ifname, str(obj), check=False)
    assert res.returncode == 2 and "first (section xdp)" in res.stderr and "--prog" in res.stderr
    nothing_left(env, env.ifname)
    by_name = env.offload_json("attach", env.ifname, str(obj), "--prog", "second")
    assert bpfsys.prog_info(by_name["prog_id"]).name == "second"
    by_section = env.offload_json("attach", env.ifname, str(obj), "--section", "xdp")
    assert bpfsys.prog_info(by_section["prog_id"]).name == "first"
    assert by_section["replaced"] == by_name["prog_id"]


def test_libbpf_c_is_compiled_once_and_cached(env, tmp_path):
    src = tmp_path / "counter.c"
    src.write_text(COUNTER)
    cache = tmp_path / "cache"
    objects = cache / "objects"
    first = env.offload_json("attach", env.ifname, str(src), extra_env={"OFFLOAD_CACHE_DIR": str(cache)})
    (obj,) = objects.glob("counter-*.o")
    stamp = obj.stat().st_mtime_ns
    second = env.offload_json("attach", env.ifname, str(src), extra_env={"OFFLOAD_CACHE_DIR": str(cache)})
    assert second["replaced"] == first["prog_id"]
    assert [p.stat().st_mtime_ns for p in objects.glob("counter-*.o")] == [stamp], "compiled again"
    src.write_text(COUNTER.replace("XDP_PASS", "XDP_DROP"))                # new content, new object
    env.offload_json("attach", env.ifname, str(src), extra_env={"OFFLOAD_CACHE_DIR": str(cache)})
    assert len(list(objects.glob("counter-*.o"))) == 2


def _verdict_of(env, dev: str) -> int:
    fd = pinned_prog(env, dev)
    try:
        return bpfsys.prog_test_run(fd, ipv4_udp("192.0.2.1", "198.51.100.1")).retval
    finally:
        os.close(fd)


def test_libbpf_c_cache_key_covers_every_header(env, tmp_path):
    """A header included as <x.h>, or with a comment after the #include, is part of the program:
    changing it compiles again, and the kernel runs the new program."""
    src = tmp_path / "hdr.c"
    src.write_text(HEAD + '#include <verdict.h>\n#include "extra.h" // more\n'
                   'SEC("xdp") int hdr(struct xdp_md *ctx) { return VERDICT + EXTRA; }\n' + TAIL)
    (tmp_path / "verdict.h").write_text("#define VERDICT XDP_PASS\n")
    (tmp_path / "extra.h").write_text("#define EXTRA 0\n")
    cache = {"OFFLOAD_CACHE_DIR": str(tmp_path / "cache")}
    env.offload_json("attach", env.ifname, str(src), extra_env=cache)
    assert _verdict_of(env, env.ifname) == XDP_PASS
    (tmp_path / "verdict.h").write_text("#define VERDICT XDP_DROP\n")
    env.offload_json("attach", env.ifname, str(src), extra_env=cache)
    assert _verdict_of(env, env.ifname) == XDP_DROP
    (tmp_path / "extra.h").write_text("#define EXTRA 2\n")                # XDP_DROP + 2: XDP_TX
    env.offload_json("attach", env.ifname, str(src), extra_env=cache)
    assert _verdict_of(env, env.ifname) == 3
    assert len(list((tmp_path / "cache" / "objects").glob("hdr-*.o"))) == 3


@pytest.mark.parametrize("case", ["other owner", "link"])
def test_a_cache_directory_not_ours_alone_is_refused(env, tmp_path, case):
    """root compiles into the cache and loads what it finds there: a cache another user owns, or
    a link, is refused (exit 9) before anything is compiled, read or loaded."""
    src = tmp_path / "counter.c"
    src.write_text(COUNTER)
    cache = tmp_path / "cache"
    if case == "other owner":
        (cache / "objects").mkdir(parents=True)
        for d in (cache, cache / "objects"):
            os.chown(d, 65534, 65534)
    else:
        (tmp_path / "elsewhere").mkdir()
        cache.symlink_to(tmp_path / "elsewhere")
    res = env.offload("attach", env.ifname, str(src), extra_env={"OFFLOAD_CACHE_DIR": str(cache)}, check=False)
    assert res.returncode == 9, res.stderr
    assert f"the cache directory {cache} is not safe to use" in res.stderr and "OFFLOAD_CACHE_DIR" in res.stderr
    assert not list(tmp_path.glob("*/objects/*.o")) and not (tmp_path / "elsewhere" / "objects").exists()
    nothing_left(env, env.ifname)


def _deep(tmp_path: Path, depth: int) -> str:
    for i in range(depth):
        (tmp_path / f"d{i}.h").write_text(f'#include "d{i + 1}.h"\n')
    (tmp_path / f"d{depth}.h").write_text("\n")
    return '#include "d0.h"\n'


@pytest.mark.parametrize("case", ["4-byte ELF", "pagemap", "libbpf includes pagemap", "libbpf includes binary",
                                  "bcc includes binary", "bcc 1200 deep", "libbpf 1200 deep"])
def test_bad_program_input_exits_2_or_5_naming_the_file(env, tmp_path, case):
    libbpf = HEAD + '{}SEC("xdp") int p(struct xdp_md *ctx) {{ return XDP_PASS; }}\n' + TAIL
    bcc = "{}int xdp_prog(struct xdp_md *ctx) {{ return XDP_PASS; }}\n"
    shutil.copy("/bin/true", tmp_path / "bin.h")
    prog, code, needle = tmp_path / "prog.c", 2, None
    if case == "4-byte ELF":
        prog = tmp_path / "four.o"
        prog.write_bytes(b"\x7fELF")
        needle = f"{prog}: a truncated or damaged ELF file (4 bytes)"
    elif case == "pagemap":
        prog, needle = Path("/proc/self/pagemap"), "/proc/self/pagemap is no ordinary file"
    elif case == "libbpf includes pagemap":
        prog.write_text(libbpf.format('#include "/proc/self/pagemap"\n'))
        needle = "/proc/self/pagemap is no ordinary file"
    elif case.endswith("includes binary"):
        prog.write_text((libbpf if case.startswith("libbpf") else bcc).format('#include "bin.h"\n'))
        needle = "bin.h: not C source: not UTF-8 text"
    elif case == "bcc 1200 deep":
        prog.write_text(bcc.format(_deep(tmp_path, 1200)))
        needle = f"{prog}: #includes nest deeper than 200"
    else:
        prog.write_text(libbpf.format(_deep(tmp_path, 1200)))
        code, needle = 5, "#include nested too deeply"
    res = env.offload("attach", env.ifname, str(prog), check=False)
    assert res.returncode == code and needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr) < 2000, res.stderr
    nothing_left(env, env.ifname)


@pytest.mark.parametrize("program,param,needle", [
    ("redirect", "target=\udcff", "--param 'target': its value is not UTF-8 text (byte 0xff at character 0)"),
    ("verdict.o", "label=" + "s" * 5000, "--param label='" + "s" * 40 + "…'"),
    ("filter", "prefixes=" + "s" * 5000, "bad prefix '" + "s" * 40 + "…'"),
    ("redirect", "x" * 5000 + "=1", "bad --param '" + "x" * 40 + "…'"),
])
def test_param_errors_quote_a_short_excerpt(env, tmp_path, program, param, needle):
    if program.endswith(".o"):
        program = str(clang_object(tmp_path, "verdict", VERDICT))
    res = env.offload("attach", env.ifname, program, "--param", param, check=False)
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert "s" * 41 not in res.stderr and "x" * 41 not in res.stderr and "Traceback" not in res.stderr
    nothing_left(env, env.ifname)


def test_libbpf_c_compile_error_names_file_and_line(env, tmp_path):
    src = tmp_path / "broken.c"
    src.write_text(HEAD + 'SEC("xdp")\nint x(struct xdp_md *ctx)\n{\n    return nope;\n}\n')
    res = env.offload("attach", env.ifname, str(src), check=False)
    assert res.returncode == 5 and f"{src}:6:" in res.stderr and "nope" in res.stderr, res.stderr
    nothing_left(env, env.ifname)


def test_libbpf_verifier_rejection_keeps_the_log(env, tmp_path):
    obj = clang_object(tmp_path, "oob", HEAD + 'SEC("xdp") int oob(struct xdp_md *ctx) {\n'
                       "    unsigned char *p = (void *)(long)ctx->data;\n"
                       "    return p[100] ? XDP_DROP : XDP_PASS;\n}\n" + TAIL)
    res = env.offload("attach", env.ifname, str(obj), check=False)
    assert res.returncode == 6 and "invalid access to packet" in res.stderr, res.stderr
    nothing_left(env, env.ifname)


def _map_value(path: Path) -> int:
    fd = bpfsys.obj_get(str(path))
    try:
        return int.from_bytes(bpfsys.map_lookup(fd, b"\0" * 4, 8), "little")
    finally:
        os.close(fd)


def test_legacy_maps_object_loads_where_libbpf_refuses(env, tmp_path):
    obj = clang_object(tmp_path, "legacy", LEGACY)
    ip = subprocess.run(["ip", "-n", env.netns, "link", "set", "dev", env.ifname, "xdpgeneric", "obj", str(obj),
                         "sec", "xdp"], capture_output=True, text=True)
    assert ip.returncode != 0, "iproute2 with libbpf 1.x loaded it: the premise of this test is gone"
    res = env.offload_json("attach", env.ifname, str(obj))
    assert res["mode"] == "native" and kernel_xdp(env.ifname, env.netns) == {"native": res["prog_id"]}
    assert bpfsys.prog_info(res["prog_id"]).name == "legacy_count"
    pins = PIN_ROOT / env.netns / env.ifname
    assert {p.name for p in pins.iterdir()} >= {"prog", "map_frames", "map_bytes"}
    frame = ipv4_udp("192.0.2.1", "198.51.100.1")
    fd = pinned_prog(env, env.ifname)
    try:   # the attached program, run by the kernel: its relocated maps are the pinned ones
        for _ in range(3):
            assert bpfsys.prog_test_run(fd, frame).retval == XDP_DROP
    finally:
        os.close(fd)
    assert _map_value(pins / "map_frames") == 3 and _map_value(pins / "map_bytes") == 3 * len(frame)
    env.offload_json("detach", env.ifname)
    nothing_left(env, env.ifname)


def test_legacy_object_limits_are_explained(env, tmp_path):
    obj = clang_object(tmp_path, "legacy", LEGACY)
    res = env.offload("attach", env.ifname, str(obj), "--param", "x=1", check=False)
    assert res.returncode == 2 and "no global variables" in res.stderr and str(obj) in res.stderr, res.stderr
    calls = clang_object(tmp_path, "calls", LEGACY_CALL)
    res = env.offload("attach", env.ifname, str(calls), check=False)
    assert res.returncode == 2 and ".text" in res.stderr and "BTF-defined maps" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    nothing_left(env, env.ifname)


@pytest.mark.parametrize("name", ["xdpfilt_dny_all", "xdpfilt_alw_ip"])
def test_libxdp_objects_from_debian(env, name):
    """xdp-filter's programs as Debian's libxdp1 installs them: BTF maps, libxdp's run-config
    section, written by other people."""
    obj = LIBXDP / f"{name}.o"
    if not obj.exists():
        pytest.skip(f"{obj} is missing: Debian's libxdp1 installs it (scripts/setup does)")
    res = env.offload_json("attach", env.ifname, str(obj))
    assert kernel_xdp(env.ifname, env.netns) == {"native": res["prog_id"]}
    assert bpfsys.prog_info(res["prog_id"]).name == name[:15]
    assert not any(Path("/sys/fs/bpf").glob("xdpfilt*")), "maps pinned outside offload's tree"
    env.offload_json("detach", env.ifname)
    nothing_left(env, env.ifname)


def test_libxdp_dispatcher_needs_prog(env):
    obj = LIBXDP / "xdp-dispatcher.o"
    if not obj.exists():
        pytest.skip(f"{obj} is missing: Debian's libxdp1 installs it (scripts/setup does)")
    res = env.offload("attach", env.ifname, str(obj), check=False)
    assert res.returncode == 2 and "xdp_dispatcher" in res.stderr and "xdp_pass" in res.stderr


@pytest.fixture
def bad_files(tmp_path):
    garbage = tmp_path / "garbage.o"
    garbage.write_bytes(os.urandom(4096))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    native_elf = tmp_path / "true"
    shutil.copy("/bin/true", native_elf)
    trunc = tmp_path / "truncated.o"
    trunc.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x01\x00\xf7\x00")
    d = tmp_path / "adir"
    d.mkdir()
    return {"garbage": (garbage, "neither a BPF object"), "native ELF": (native_elf, "not a BPF object"),
            "truncated": (trunc, "libbpf cannot open it"), "directory": (d, "is not a regular file (a directory)"),
            "device": (Path("/dev/zero"), "not a regular file"), "missing": (tmp_path / "nope.o", "not found")}


@pytest.mark.parametrize("case", ["garbage", "native ELF", "truncated", "directory", "device", "missing"])
def test_bad_files_exit_2_naming_the_file(env, bad_files, case):
    path, needle = bad_files[case]
    res = env.offload("attach", env.ifname, str(path), check=False)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and str(path) in res.stderr and "Traceback" not in res.stderr, res.stderr
    nothing_left(env, env.ifname)


def test_object_without_xdp_program(env, tmp_path):
    obj = clang_object(tmp_path, "tc", TC_ONLY)
    res = env.offload("attach", env.ifname, str(obj), check=False)
    assert res.returncode == 2 and "holds no XDP program" in res.stderr and "classifier" in res.stderr
    nothing_left(env, env.ifname)


def test_a_policy_can_name_an_object_and_its_program(env, tmp_path):
    obj = clang_object(tmp_path, "two", TWO)
    pol = tmp_path / "p.yaml"
    pol.write_text(f"rules:\n  - name: objs\n    match: {{interfaces: ['{env.ifname}']}}\n"
                   f"    program: {obj}\n    prog: second\n")
    res = env.offload_json("apply", "-f", str(pol), "--journal", str(tmp_path / "j.jsonl"))
    (step,) = res["steps"]
    assert step["status"] == "done" and bpfsys.prog_info(step["prog_id"]).name == "second"
    assert kernel_xdp(env.ifname, env.netns) == {"native": step["prog_id"]}
    again = env.offload_json("apply", "-f", str(pol), "--journal", str(tmp_path / "j.jsonl"))
    assert [s["status"] for s in again["steps"]] == ["kept"]            # same object, same program
    bad = tmp_path / "bad.yaml"
    bad.write_text(pol.read_text().replace("prog: second", "prog: third"))
    res = env.offload("plan", "-f", str(bad), check=False)
    assert res.returncode == 2 and "no program named third" in res.stderr and "bad.yaml:" in res.stderr


def test_damaged_legacy_objects_are_refused_not_crashed_on(tmp_path):
    """offload's own ELF reading (legacy objects) meets untrusted files: any damage to a real
    legacy object gives its error (exit 2 at the CLI), never another exception."""
    import random

    from offload.kernel.legacyobj import LegacyError, LegacyObject

    good = clang_object(tmp_path, "legacy", LEGACY).read_bytes()
    rng = random.Random(20261125)
    bad = tmp_path / "damaged.o"
    refused = 0
    for _ in range(500):
        data = bytearray(good)
        for _ in range(rng.randint(1, 30)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        bad.write_bytes(data)
        try:
            LegacyObject(str(bad)).programs()
        except LegacyError:
            refused += 1
    assert refused > 0   # the damage is real: some of it must be refused
