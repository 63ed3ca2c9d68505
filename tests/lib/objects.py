"""The BPF objects the VM lane's tests compile, in one place, so that scripts/vm-test can compile
them on the host before boot (`python tests/lib/objects.py DIR`): clang takes ~30 s per object
under qemu TCG, well under a second here. The guest finds them in DIR through
lib.helpers.clang_object (OFFLOAD_TEST_OBJECTS), keyed by source and flags."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

XDP_PASS = Path(__file__).resolve().parents[1] / "integration" / "xdp_pass.c"


def hits_object(workdir: Path, map_type: str, legacy: bool = False) -> Path:
    """HITS with `map_type` (as a legacy map definition with `legacy`), compiled (or taken from
    OFFLOAD_TEST_OBJECTS)."""
    from lib.helpers import clang_object

    name = f"hits-{'legacy-' if legacy else ''}{map_type}"
    src = workdir / f"{name}.c"
    src.write_text((LEGACY_HITS if legacy else HITS).replace("MAP_TYPE", map_type))
    return clang_object(src, workdir / f"{name}.o")


# -- the advisor's corpus ------------------------------------------------------------------------------
# Programs the advisor judges and netdevsim's hw attach settles (tests/vm/test_advisor_corpus.py;
# docs/advisor.md publishes the table). One for each kind of refusal the kernel and netdevsim make,
# and several that offload; each a whole libbpf-style C file.
HEAD = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
"""
TAIL = 'char _license[] SEC("license") = "GPL";\n'


def _map(name: str, type_: str, entries: int = 2, flags: str = "", key: str = "__u32", value: str = "__u64") -> str:
    extra = f"    __uint(map_flags, {flags});\n" if flags else ""
    return (f"struct {{\n    __uint(type, {type_});\n    __uint(max_entries, {entries});\n{extra}"
            f"    __type(key, {key});\n    __type(value, {value});\n}} {name} SEC(\".maps\");\n")


_COUNT = """SEC("SECTION")
int FUNC(struct xdp_md *ctx)
{
    __u32 k = 0;
    __u64 *v = bpf_map_lookup_elem(&MAP, &k);
    if (v)
        __sync_fetch_and_add(v, 1);
    return XDP_PASS;
}
"""


def counter(type_: str, entries: int = 2, flags: str = "", section: str = "xdp", map_name: str = "hits",
            func: str = "xdp_prog") -> str:
    """A program that counts its packets in entry 0 of a map (added atomically)."""
    body = _COUNT.replace("SECTION", section).replace("FUNC", func).replace("MAP", map_name)
    return HEAD + _map(map_name, type_, entries, flags) + body + TAIL


# One map of two entries, updated atomically: the form netdevsim offloads when MAP_TYPE is ARRAY.
HITS = counter("MAP_TYPE", func="xdp_hits")
HITS_MAP_TYPES = ("BPF_MAP_TYPE_ARRAY", "BPF_MAP_TYPE_PERCPU_ARRAY")
# The same program with its map as a legacy `struct bpf_map_def SEC("maps")` (libbpf 1.x refuses
# it; offload's own loader takes it, also for hardware offload).
LEGACY_HITS = HITS.replace(_map("hits", "MAP_TYPE"), """struct bpf_map_def { unsigned int type, key_size, value_size, max_entries, map_flags; };
struct bpf_map_def SEC("maps") hits = { .type = MAP_TYPE, .key_size = 4, .value_size = 8, .max_entries = 2 };
""")


CORPUS: dict[str, str] = {
    # offloads on netdevsim
    "pass": HEAD + 'SEC("xdp")\nint xdp_prog(struct xdp_md *ctx)\n{\n    return XDP_PASS;\n}\n' + TAIL,
    "array": counter("BPF_MAP_TYPE_ARRAY"),
    "hash": counter("BPF_MAP_TYPE_HASH"),
    "bpf-to-bpf-call": HEAD + _map("hits", "BPF_MAP_TYPE_ARRAY") + """
static __attribute__((noinline)) int bump(__u32 k)
{
    __u64 *v = bpf_map_lookup_elem(&hits, &k);
    if (v)
        __sync_fetch_and_add(v, 1);
    return XDP_PASS;
}

SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
    return bump(ctx->rx_queue_index & 1);
}
""" + TAIL,
    "helper-ktime": HEAD + _map("hits", "BPF_MAP_TYPE_ARRAY") + """
SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
    __u32 k = 0;
    __u64 now = bpf_ktime_get_ns();
    bpf_map_update_elem(&hits, &k, &now, BPF_ANY);
    return XDP_PASS;
}
""" + TAIL,
    "redirect-helper": HEAD + """
SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
    return bpf_redirect(ctx->ingress_ifindex, 0);
}
""" + TAIL,
    "adjust-head-tx": HEAD + """
SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
    if (bpf_xdp_adjust_head(ctx, 0))
        return XDP_ABORTED;
    return XDP_TX;
}
""" + TAIL,
    "perf-event-output": HEAD + """struct {
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
    __uint(key_size, sizeof(__u32));
    __uint(value_size, sizeof(__u32));
} events SEC(".maps");

SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
    __u32 len = ctx->data_end - ctx->data;
    bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &len, sizeof(len));
    return XDP_PASS;
}
""" + TAIL,
    "atomic-fetch-add": HEAD + _map("hits", "BPF_MAP_TYPE_ARRAY") + """
SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
    __u32 k = 0;
    __u64 *v = bpf_map_lookup_elem(&hits, &k);
    if (v && __sync_fetch_and_add(v, 1) > 1000)
        return XDP_DROP;
    return XDP_PASS;
}
""" + TAIL,
    # refused by the kernel's rules for device-bound maps and programs
    "percpu-array": counter("BPF_MAP_TYPE_PERCPU_ARRAY"),
    "percpu-hash": counter("BPF_MAP_TYPE_PERCPU_HASH"),
    "lru-hash": counter("BPF_MAP_TYPE_LRU_HASH"),
    "lpm-trie": HEAD + """struct key4 { __u32 prefixlen; __u32 addr; };
""" + _map("hits", "BPF_MAP_TYPE_LPM_TRIE", 2, "BPF_F_NO_PREALLOC", "struct key4") + """
SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
    struct key4 k = { 32, 0 };
    __u64 *v = bpf_map_lookup_elem(&hits, &k);
    if (v)
        __sync_fetch_and_add(v, 1);
    return XDP_PASS;
}
""" + TAIL,
    "devmap-redirect": HEAD + _map("ports", "BPF_MAP_TYPE_DEVMAP", 2, "", "__u32", "__u32") + """
SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
    return bpf_redirect_map(&ports, 0, XDP_PASS);
}
""" + TAIL,
    "tail-call": HEAD + """struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u32);
} jumps SEC(".maps");

SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
    bpf_tail_call(ctx, &jumps, 0);
    return XDP_PASS;
}
""" + TAIL,
    "frags": counter("BPF_MAP_TYPE_ARRAY", section="xdp.frags"),
    # refused by netdevsim's own rules
    "too-many-entries": counter("BPF_MAP_TYPE_ARRAY", entries=3),
    "map-flags": counter("BPF_MAP_TYPE_HASH", flags="BPF_F_NO_PREALLOC"),
    "global-bss": HEAD + """__u64 seen;

SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
    seen++;
    return XDP_PASS;
}
""" + TAIL,
    "global-rodata": HEAD + """const volatile __u32 verdict = XDP_PASS;

SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
    return verdict;
}
""" + TAIL,
}


# A program the verifier refuses (a packet read with no bounds check): a chain member that cannot
# join, for the VM lane's roll-back of a policy's chain (tests/vm/test_chain.py).
UNCHECKED = HEAD + """
SEC("xdp")
int xdp_unchecked(struct xdp_md *ctx)
{
    unsigned char *data = (void *)(long)ctx->data;
    return data[12] == 0x88 ? XDP_DROP : XDP_PASS;
}
""" + TAIL


def unchecked_object(workdir: Path) -> Path:
    from lib.helpers import clang_object

    src = workdir / "unchecked.c"
    src.write_text(UNCHECKED)
    return clang_object(src, workdir / "unchecked.o")


def corpus_objects(workdir: Path) -> dict[str, Path]:
    """Every corpus program compiled (or taken from OFFLOAD_TEST_OBJECTS), by name."""
    from lib.helpers import clang_object

    out = {}
    for name, text in CORPUS.items():
        src = workdir / f"{name}.c"
        src.write_text(text)
        out[name] = clang_object(src, workdir / f"{name}.o")
    return out


def prebuild(dest: Path) -> list[Path]:
    """Compile every object the VM lane's tests use into `dest` (the cache they read)."""
    from lib.helpers import clang_object

    dest.mkdir(parents=True, exist_ok=True)
    os.environ["OFFLOAD_TEST_OBJECTS"] = str(dest)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        made = [hits_object(work, t) for t in HITS_MAP_TYPES]
        made.append(hits_object(work, "BPF_MAP_TYPE_ARRAY", legacy=True))
        made.append(clang_object(XDP_PASS, work / "xdp_pass.o"))
        made += corpus_objects(work).values()
        made.append(unchecked_object(work))
        return [p.name for p in made]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # so `lib` imports as in the tests
    if len(sys.argv) != 2:
        sys.exit("usage: objects.py DIR")
    print(" ".join(prebuild(Path(sys.argv[1]))))
