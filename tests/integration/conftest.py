from pathlib import Path

import pytest
from lib.helpers import clang_object


@pytest.fixture(scope="session")
def xdp_pass_obj(tmp_path_factory) -> Path:
    """xdp_pass.c compiled by clang (not by offload), for attaching through iproute2."""
    return clang_object(Path(__file__).with_name("xdp_pass.c"), tmp_path_factory.mktemp("bpf") / "xdp_pass.o")
