import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from lib.env import NetEnv  # noqa: E402
from lib.helpers import ROOT  # noqa: E402

from offload.probe import profiles as profiles_mod  # noqa: E402

# No timing in tests (this machine is shared and its load varies): hypothesis's default 200 ms
# deadline per example is off, except where a test sets its own bound on purpose. Not in the VM
# lane, which runs no property tests: importing hypothesis takes minutes under qemu TCG.
if os.environ.get("OFFLOAD_IN_VM") != "1":
    from hypothesis import settings

    settings.register_profile("offload", deadline=None)
    settings.load_profile("offload")


def pytest_collection_modifyitems(config, items):
    in_vm = os.environ.get("OFFLOAD_IN_VM") == "1"
    for item in items:
        if ("root" in item.keywords or "kernels" in item.keywords) and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root: creates network namespaces, veth pairs and "
                                                    "loads BPF programs"))
        if "vm" in item.keywords and not in_vm:
            item.add_marker(pytest.mark.skip(reason="runs only inside the real-kernel VM (scripts/vm-test): "
                                                    "this kernel has no netdevsim and no pktgen"))


@pytest.fixture
def env():
    with NetEnv.from_environment() as e:
        yield e


@pytest.fixture(scope="session")
def shipped_profiles():
    profs, problems = profiles_mod.load(ROOT / "drivers_profiles")
    return profs, problems


