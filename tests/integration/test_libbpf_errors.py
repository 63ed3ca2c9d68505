"""An object libbpf refuses with one of its own error numbers (a big-endian BPF object on this
little-endian host: LIBBPF_ERRNO__ENDIAN, 4003) is exit 2 in libbpf's words, through the command."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest
from lib.cli import offload
from lib.helpers import need_tool


@pytest.mark.skipif(sys.byteorder != "little", reason="a big-endian host opens a bpfeb object: needs a bpfel one")
def test_a_foreign_endian_object_is_refused_in_libbpfs_words(tmp_path):
    obj = tmp_path / "be.o"
    subprocess.run([need_tool("clang"), "-O2", "-target", "bpfeb", f"-I/usr/include/{platform.machine()}-linux-gnu",
                    "-c", str(Path(__file__).with_name("xdp_pass.c")), "-o", str(obj)], check=True)
    # the interface is never reached: the object is refused first, whatever the interface
    res = offload("attach", "i21b-none0", str(obj), "--json", check=False)
    assert res.returncode == 2, res.stderr
    assert f"{obj}: libbpf cannot open it: Endian mismatch" in res.stderr
    assert "Unknown error" not in res.stderr + res.stdout
    assert "Endian mismatch" in res.stdout   # the --json error document says it too
