"""A/B arithmetic for `offload bench compare` (pure): the ratio of medians of B over A, its
bootstrap confidence interval, and the verdict.

Trials run in ABBA blocks (A B, then B A, ...), so a drift of the machine's load during the
comparison hits both sides alike. The bootstrap resamples whole pairs (the i-th A with the i-th
B, run next to each other), keeping that pairing: the interval reflects the noise between
neighbouring trials, not the slow drift that the interleaving cancels. The interval is the
percentile interval of the resampled ratios (Efron and Tibshirani, ch. 13).
"""

from __future__ import annotations

import random
import statistics

RESAMPLES = 10_000
SEED = 22          # fixed: the same trials give the same interval (recorded in the document)
FASTER, SLOWER, SAME = "faster", "slower", "no significant difference"


def order(pairs: int) -> list[str]:
    """The arms' order for `pairs` trials each: A B B A A B B A ..."""
    return [arm for i in range(pairs) for arm in (("A", "B") if i % 2 == 0 else ("B", "A"))]


def ratio_of_medians(a: list[float], b: list[float]) -> float:
    return statistics.median(b) / statistics.median(a)


def bootstrap_interval(a: list[float], b: list[float], level: float = 0.95, resamples: int = RESAMPLES,
                       seed: int = SEED) -> tuple[float, float]:
    """The `level` percentile interval of median(B)/median(A) over `resamples` resamplings of the
    (A_i, B_i) pairs."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("the bootstrap needs at least 2 pairs of trials, as many A as B")
    if min(a) <= 0 or min(b) <= 0:
        raise ValueError("rates must be positive")
    rng = random.Random(seed)
    n = len(a)
    ratios = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        ratios.append(statistics.median(b[i] for i in idx) / statistics.median(a[i] for i in idx))
    ratios.sort()
    tail = (1 - level) / 2
    return ratios[int(tail * (resamples - 1))], ratios[int(round((1 - tail) * (resamples - 1)))]


def verdict(low: float, high: float) -> str:
    """B against A: faster when the whole interval is above 1, slower when below, else the same."""
    if low > 1:
        return FASTER
    if high < 1:
        return SLOWER
    return SAME


def slower_beyond(ratio: float, high: float, pct: float) -> bool:
    """--fail-if-slower PCT: B is significantly slower (the whole interval below 1) and by more
    than `pct` percent (the ratio of medians below 1 - pct/100)."""
    return high < 1 and ratio < 1 - pct / 100
