"""Damaged records, as a crash, a full disk or a hand edit leave them: every reader either uses the
record or says which file is damaged; nothing crashes (property test over random bytes)."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.kernel import netns
from offload.load import pins, status

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def attached():
    from lib.env import VethEnv

    with VethEnv() as env:
        env.offload_json("attach", env.ifname, "count_drop")
        yield env


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_damaged_records_never_crash_readers(attached, junk):
    slot = pins.Slot(attached.netns, attached.ifname)
    good = slot.meta_path.read_bytes()
    try:
        slot.meta_path.write_bytes(junk)
        try:
            meta = slot.meta()
            assert isinstance(meta, dict) and {"interface", "program", "mode", "prog_id", "maps"} <= set(meta)
        except pins.StateError as e:
            assert str(slot.meta_path) in e.message
        with netns.inside(attached.netns):
            st_ = status.status()
        (row,) = [r for r in st_["attachments"] if r["interface"] == attached.ifname]
        assert row["ours"] is True                       # the pin says so, whatever the record says
    finally:
        slot.meta_path.write_bytes(good)
        os.chmod(slot.meta_path, 0o600)
