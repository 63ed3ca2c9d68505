"""benchmarks/cpu_noise.py: the CV of a rate per CPU-second over windows of k seconds."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import cpu_noise  # noqa: E402


def test_windows_are_summed_before_the_rate_is_taken():
    ws = [(100, 1.0), (110, 1.0), (90, 1.0), (100, 1.0)]
    assert cpu_noise.cv_over(ws, 1) == 0.0816     # 100, 110, 90, 100
    assert cpu_noise.cv_over(ws, 2) == 0.0707     # 105, 95
    assert cpu_noise.cv_over(ws, 10) is None      # one window: no spread to take


def test_the_rate_is_per_cpu_second_not_per_window():
    # the same work per CPU-second, whatever share of the CPU each window had: no spread
    assert cpu_noise.cv_over([(100, 1.0), (50, 0.5), (25, 0.25)], 1) == 0.0
