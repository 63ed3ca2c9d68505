"""The child bcc runs in (load.bccchild), with plain work in place of bcc: fds cross to the parent
alive, a child killed by a signal or exiting without a report is told apart, a hang is stopped,
and the child's output never reaches the parent's own stdout."""

import os
import signal
import time

import pytest

from offload.load import bccchild


def _pipe_work(n: int):
    """Work that sends `n` pipes' write ends, each with its index already written into it."""
    def work():
        reads, writes = [], []
        for i in range(n):
            r, w = os.pipe()
            os.write(w, str(i).encode())
            reads.append(r)
            writes.append(w)
        os.write(1, b"said on stdout\n")
        return {"status": "ok", "reads": len(reads)}, reads
    return work


@pytest.mark.parametrize("n", [1, 300])   # 300: more than SCM_RIGHTS carries in one message
def test_fds_cross_alive_and_the_output_is_kept(n, capfd):
    out = bccchild.run(_pipe_work(n))
    try:
        assert out.report == {"status": "ok", "reads": n} and len(out.fds) == n
        # the child is gone; its pipes live on through the fds it sent, in order
        assert [os.read(fd, 8) for fd in out.fds] == [str(i).encode() for i in range(n)]
    finally:
        for fd in out.fds:
            os.close(fd)
    assert capfd.readouterr().out == "" and out.output == b"said on stdout\n"   # kept, never on our stdout


def test_output_written_to_fd_2_comes_back():
    def work():
        os.write(2, b"clang: error: nope\n")
        return {"status": "compile"}, []
    out = bccchild.run(work)
    assert out.report == {"status": "compile"} and out.fds == [] and out.output == b"clang: error: nope\n"


@pytest.mark.parametrize("how,expect", [
    (lambda: os.kill(os.getpid(), signal.SIGSEGV), "SIGSEGV"),
    (lambda: os.abort(), "SIGABRT"),
    (lambda: os._exit(3), "exit status 3"),
])
def test_a_child_without_a_report_is_told_apart(how, expect):
    def work():
        os.write(2, b"last words\n")
        how()
    with pytest.raises(bccchild.Crashed) as e:
        bccchild.run(work)
    assert e.value.how == expect and e.value.output.startswith(b"last words\n")


def test_an_exception_in_the_work_is_a_report():
    def work():
        raise ImportError("no module named bcc")
    out = bccchild.run(work)
    assert out.report == {"status": "error", "type": "ImportError", "error": "no module named bcc"}


def test_a_hang_is_stopped_and_the_child_reaped(tmp_path):
    pid_file = tmp_path / "pid"

    def work():
        pid_file.write_text(str(os.getpid()))
        time.sleep(3600)
    with pytest.raises(bccchild.Hung) as e:
        bccchild.run(work, timeout=0.5)
    assert e.value.timeout == 0.5
    with pytest.raises(ProcessLookupError):   # killed and reaped: not even a zombie is left
        os.kill(int(pid_file.read_text()), 0)
