"""Group commit: inside a group, records replaced and lines appended cost no fsync each; the group
makes them durable with one syncfs per file system when it ends (or commits), also on failure."""

import os

import pytest

from offload.kernel import durable, fs


@pytest.fixture
def syncs(monkeypatch):
    calls = {"fsync": 0, "syncfs": 0}
    real_fsync = os.fsync

    def fsync(fd):
        calls["fsync"] += 1
        real_fsync(fd)

    def syncfs(fd):
        calls["syncfs"] += 1
        os.fstat(fd)   # a real, open fd: the group kept its own
        return 0

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable, "_syncfs", lambda: syncfs)
    return calls


def _replace_many(tmp_path, n: int) -> None:
    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(n):
            fs.replace_file(d, f"r{i}.json", b"{}\n", 0o600)
    finally:
        os.close(d)


def test_outside_a_group_every_replace_is_fsynced(tmp_path, syncs):
    _replace_many(tmp_path, 5)
    assert syncs == {"fsync": 10, "syncfs": 0}   # the file, then its directory


def test_a_group_commits_once_whatever_the_number_of_records(tmp_path, syncs):
    for before, n in enumerate((3, 60)):
        with durable.group() as g:
            _replace_many(tmp_path, n)
            assert syncs["syncfs"] == before   # nothing durable before the commit...
        assert g.commits == 1                  # ...and one syncfs for the whole batch
    assert syncs == {"fsync": 0, "syncfs": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"r{i}.json" for i in range(60))


def test_nested_groups_join_and_a_commit_starts_a_new_batch(tmp_path, syncs):
    with durable.group() as outer:
        with durable.group() as inner:
            assert inner is outer
            _replace_many(tmp_path, 2)
        assert syncs["syncfs"] == 0       # the inner end is not the batch's end
        outer.commit()
        assert syncs["syncfs"] == 1
        outer.commit()                    # nothing written since: nothing to sync
        assert syncs["syncfs"] == 1
    assert durable.current() is None


def test_a_failing_batch_is_still_made_durable(tmp_path, syncs):
    with pytest.raises(RuntimeError), durable.group():
        _replace_many(tmp_path, 2)
        raise RuntimeError("a step failed")
    assert syncs["syncfs"] == 1 and durable.current() is None


def test_a_write_back_error_is_reported(tmp_path, monkeypatch):
    def failing(fd):
        import ctypes
        ctypes.set_errno(5)
        return -1

    monkeypatch.setattr(durable, "_syncfs", lambda: failing)
    with pytest.raises(OSError, match="syncfs"), durable.group():
        _replace_many(tmp_path, 1)


def test_the_real_syncfs_runs(tmp_path):
    with durable.group() as g:
        _replace_many(tmp_path, 2)
    assert g.commits == 1
