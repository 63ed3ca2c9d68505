import platform
import subprocess
from pathlib import Path

import pytest
from lib.helpers import need_tool


@pytest.fixture(scope="session")
def xdp_pass_obj(tmp_path_factory) -> Path:
    """xdp_pass.c compiled by clang (not by offload), for attaching through iproute2."""
    clang = need_tool("clang")
    out = tmp_path_factory.mktemp("bpf") / "xdp_pass.o"
    arch_inc = f"/usr/include/{platform.machine()}-linux-gnu"
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", f"-I{arch_inc}", "-c",
                    str(Path(__file__).with_name("xdp_pass.c")), "-o", str(out)], check=True)
    return out
