"""Shared test helpers: paths, fixture loading, tool lookups."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from offload.probe.facts import DeviceFacts, HostFacts

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
# offload's state as the commands under test see it: the environment may move it (helpers sharing
# a machine set OFFLOAD_BPFFS / OFFLOAD_RUN_DIR), so the tests look where offload looks.
BPFFS = Path(os.environ.get("OFFLOAD_BPFFS", "/sys/fs/bpf"))
PIN_ROOT = BPFFS / "offload"
RUN_ROOT = Path(os.environ.get("OFFLOAD_RUN_DIR", "/run/offload"))


def kube_validate(path: Path) -> subprocess.CompletedProcess:
    """`kubernetes-validate --strict PATH`: the manifest against Kubernetes' own schemas."""
    return subprocess.run([str(ROOT / ".venv/bin/kubernetes-validate"), "--strict", str(path)],
                          capture_output=True, text=True)


def valid_manifest(path: Path, resources: int) -> list[dict]:
    """The documents of a manifest that kubernetes-validate passes, resource by resource."""
    import yaml

    res = kube_validate(path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count(" passed for resource") == resources, res.stdout
    return list(yaml.safe_load_all(path.read_text()))


def load_fixture(name: str) -> tuple[HostFacts, dict[str, DeviceFacts]]:
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    host = HostFacts(**doc["host"])
    return host, {d["name"]: DeviceFacts.from_dict(d) for d in doc["devices"]}


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed (scripts/setup installs it)")
    return path


def clang_object(src: Path, out: Path) -> Path:
    """Compile libbpf-style C with clang as a user's Makefile would (not through offload).
    With OFFLOAD_TEST_OBJECTS=DIR, an object compiled before from the same source with the same
    flags is taken from DIR (scripts/vm-test fills it on the host before boot, with this function
    and the same clang: under qemu TCG a compile takes ~30 s); a miss compiles, and stores the
    object there when DIR is writable."""
    import hashlib
    import platform
    import subprocess

    flags = ["-O2", "-g", "-target", "bpf", f"-I/usr/include/{platform.machine()}-linux-gnu", "-c"]
    key = hashlib.sha256("\0".join(flags).encode() + b"\0" + src.read_bytes()).hexdigest()[:32]
    cache = os.environ.get("OFFLOAD_TEST_OBJECTS")
    cached = Path(cache, f"{key}.o") if cache else None
    if cached and cached.is_file():
        shutil.copyfile(cached, out)
        return out
    subprocess.run([need_tool("clang"), *flags, str(src), "-o", str(out)], check=True)
    if cached and os.access(cached.parent, os.W_OK):
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(out, tmp)
        os.replace(tmp, cached)
    return out


# bcc-dialect C that crashes bcc itself (SIGSEGV: clang's recursion over one 200,000-term sum runs
# out of stack in bcc 0.26 with an 8 MiB stack; 50,000 terms already do).
BCC_CRASH_TERMS = 200_000


def write_bcc_crasher(path: Path) -> Path:
    terms = "+".join(["x"] * BCC_CRASH_TERMS)
    path.write_text("int xdp_prog(struct xdp_md *ctx) {\n  int x = ctx->ingress_ifindex;\n"
                    f"  return ({terms}) & 1 ? XDP_PASS : XDP_DROP;\n}}\n")
    return path
