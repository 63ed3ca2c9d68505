"""Names from the command line are one path component, or refused (property tests)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.errors import UsageError
from offload.kernel.names import check_ifname, check_netns
from offload.load import pins


@settings(max_examples=400)
@given(st.text(max_size=40))
def test_an_accepted_interface_name_is_one_safe_component(name):
    try:
        check_ifname(name)
    except UsageError:
        return
    assert name and name not in (".", "..") and "/" not in name and "\0" not in name
    assert len(name.encode(errors="surrogateescape")) <= 15
    slot = pins.Slot("host", name)
    assert slot.meta_path.parent == pins.RUN / "attachments" / "host"      # never escapes its directory
    assert "/" not in slot.meta_path.name


@settings(max_examples=400)
@given(st.text(max_size=300))
def test_an_accepted_namespace_name_is_one_component(name):
    try:
        check_netns(name)
    except UsageError:
        return
    assert name and name not in (".", "..") and "/" not in name and "\0" not in name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/srv/victim", "x" * 16, "a b", "a:b", "tab\tx"])
def test_bad_interface_names(name):
    with pytest.raises(UsageError):
        check_ifname(name)


def test_kernel_limits_are_accepted():
    assert check_ifname("x" * 15) and check_ifname("eth0.100") and check_ifname("veth-a%b")
    assert check_netns("offload-lab-demo") and check_netns("x" * 255)


@pytest.mark.parametrize("check", [check_ifname, check_netns])
def test_a_long_bad_name_is_quoted_short(check):
    """A 5,000-character name (a pasted secret, a `--param target=`) is named by a short excerpt."""
    with pytest.raises(UsageError) as e:
        check("s" * 4999 + "/")
    assert "s" * 40 + "…" in e.value.message and len(e.value.message) < 200
