"""kernel.signals: a signal in a deferred block waits for the block's end, then interrupts."""

import os
import signal

import pytest

from offload.kernel import signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_a_deferred_block_interrupts_after_it(sig: int) -> None:
    # what SIGINT had before (SIG_IGN when the suite runs as a shell's background job)
    before = signal.getsignal(signal.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals.interrupts_deferred():
            os.kill(os.getpid(), sig)
            done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is before   # handlers put back


def test_a_quiet_deferred_block_ends_as_usual() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with signals.interrupts_deferred():
        pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_is_taken_as_ctrl_c_and_its_handler_put_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), signals.sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_someone_caught_is_still_known(sig: int) -> None:
    before = signal.getsignal(signal.SIGINT)
    with signals.sigterm_as_interrupt() as interrupted:
        assert not interrupted()
        try:   # as the bench does: the interrupt becomes partial results
            os.kill(os.getpid(), sig)
        except KeyboardInterrupt:
            pass
        assert interrupted()
    assert signal.getsignal(signal.SIGINT) is before


def test_an_interrupt_held_in_a_deferred_block_is_known_outside_it() -> None:
    with signals.sigterm_as_interrupt() as interrupted:
        with pytest.raises(KeyboardInterrupt), signals.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
        assert interrupted()
    with signals.sigterm_as_interrupt() as later:
        assert not later()   # counted from the block's start
