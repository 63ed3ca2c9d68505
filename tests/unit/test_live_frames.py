"""live-frames: the size of a flat-out call (pure)."""

from offload.bench.generators import live_frames as livegen


def test_a_call_is_sized_to_take_call_seconds_at_the_last_rate():
    # 1,000,000 frames in 0.5 s is 2 Mpps: a 1 s call asks for 2,000,000
    assert livegen.next_chunk(1_000_000, 0.5, 1.0) == 2_000_000
    assert livegen.next_chunk(1_000_000, 0.5, 0.25) == 500_000


def test_a_call_stays_within_its_bounds():
    assert livegen.next_chunk(10, 1.0, 1.0) == livegen.CHUNK_MIN          # a stalled call
    assert livegen.next_chunk(10**9, 0.1, 2.0) == livegen.CHUNK_MAX       # faster than the cap allows
    assert livegen.next_chunk(1000, 0.0, 1.0) == livegen.CHUNK_MAX        # a call too short to time


def test_long_windows_get_long_calls_short_ones_keep_the_short_call():
    assert livegen.call_seconds_for(5.0) == 2.0                              # offload bench's default window
    assert livegen.call_seconds_for(60.0) == livegen.CALL_SECONDS_MAX        # a stop never waits longer
    assert livegen.call_seconds_for(0.5) == livegen.CALL_SECONDS             # compare's trials: as before
    assert livegen.call_seconds_for(1.0) == 0.4
