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

# One map of two entries, updated atomically: the form netdevsim offloads when MAP_TYPE is ARRAY.
HITS = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct {
    __uint(type, MAP_TYPE);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} hits SEC(".maps");

SEC("xdp")
int xdp_hits(struct xdp_md *ctx)
{
    __u32 k = 0;
    __u64 *v = bpf_map_lookup_elem(&hits, &k);
    if (v)
        __sync_fetch_and_add(v, 1);
    return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""
HITS_MAP_TYPES = ("BPF_MAP_TYPE_ARRAY", "BPF_MAP_TYPE_PERCPU_ARRAY")
# The same program with its map as a legacy `struct bpf_map_def SEC("maps")` (libbpf 1.x refuses
# it; offload's own loader takes it, also for hardware offload).
LEGACY_HITS = HITS.replace("""struct {
    __uint(type, MAP_TYPE);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} hits SEC(".maps");""", """struct bpf_map_def { unsigned int type, key_size, value_size, max_entries, map_flags; };
struct bpf_map_def SEC("maps") hits = { .type = MAP_TYPE, .key_size = 4, .value_size = 8, .max_entries = 2 };""")


def hits_object(workdir: Path, map_type: str, legacy: bool = False) -> Path:
    """HITS with `map_type` (as a legacy map definition with `legacy`), compiled (or taken from
    OFFLOAD_TEST_OBJECTS)."""
    from lib.helpers import clang_object

    name = f"hits-{'legacy-' if legacy else ''}{map_type}"
    src = workdir / f"{name}.c"
    src.write_text((LEGACY_HITS if legacy else HITS).replace("MAP_TYPE", map_type))
    return clang_object(src, workdir / f"{name}.o")


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
        return [p.name for p in made]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # so `lib` imports as in the tests
    if len(sys.argv) != 2:
        sys.exit("usage: objects.py DIR")
    print(" ".join(prebuild(Path(sys.argv[1]))))
