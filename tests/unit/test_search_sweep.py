"""benchmarks/search.py's sweep judges a load as the search's goal does (MLRsearch's exceed
ratio over a duration sum of trials) and stops trying a load once its first trials decide it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import search as sweep_bench  # noqa: E402

PASS = {"loss_packets": 0, "generator_short": False}
LOST = {"loss_packets": 3, "generator_short": False}
LATE = {"loss_packets": 0, "generator_short": True}


def test_three_trials_at_half_are_decided_by_two_alike():
    d = sweep_bench.decided
    assert d([], 3, 0.5) is None
    assert d([PASS], 3, 0.5) is None
    assert d([PASS, PASS], 3, 0.5) is True          # one failure more is tolerated: decided
    assert d([LOST, LATE], 3, 0.5) is False         # two of three failed: over half
    assert d([PASS, LOST], 3, 0.5) is None          # the third decides
    assert d([PASS, LOST, PASS], 3, 0.5) is True
    assert d([LATE, PASS, LOST], 3, 0.5) is False


def test_rfc2544_reading_one_failure_decides():
    assert sweep_bench.decided([LOST], 1, 0.0) is False
    assert sweep_bench.decided([PASS], 1, 0.0) is True
    assert sweep_bench.decided([PASS, PASS], 3, 0.0) is None   # with no failure allowed, every trial counts
    assert sweep_bench.decided([PASS, PASS, PASS], 3, 0.0) is True


def test_bounds_are_mlrsearchs_relevant_ones():
    verdicts = [(1, True), (2, True), (3, False), (4, True), (5, False)]
    assert sweep_bench.bounds(verdicts) == (2, 3)    # the pass at 4, above a failure, is luck
    assert sweep_bench.bounds([(1, True), (2, True)]) == (2, None)


def test_the_schedule_shuffles_each_pass_over_every_load():
    loads = list(range(10))
    order = sweep_bench.schedule(loads, 3)
    assert len(order) == 30 and all(sorted(order[i * 10:(i + 1) * 10]) == loads for i in range(3))
    assert order[:10] != loads and order == sweep_bench.schedule(loads, 3)   # shuffled, and the same every run
