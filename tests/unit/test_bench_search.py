"""The throughput search's pure parts: goals, a trial's accounting (the generator's shortfall
apart from the device's loss), what a trial tells MLRsearch, and MLRsearch itself driven by
simulated devices whose NDR and PDR are known, so the bounds it returns can be checked."""

from __future__ import annotations

import pytest
from MLRsearch import MeasurementResult, MultipleLossRatioSearch

from offload.bench import search, trial
from offload.errors import UsageError


def test_goals_parse_ndr_pdr_and_a_ratio():
    assert search.parse_goals("ndr,pdr") == [search.Goal("ndr", 0.0), search.Goal("pdr", 0.005)]
    assert search.parse_goals(" pdr=0.01 ") == [search.Goal("pdr", 0.01)]


@pytest.mark.parametrize("bad", ["", "ndr,ndr", "pdr=x", "pdr=0", "pdr=1", "ndr=0.1", "mrr", "pdr=-0.1"])
def test_bad_goals_are_usage_errors(bad):
    with pytest.raises(UsageError):
        search.parse_goals(bad)


def test_imix_is_csits_v4_1_without_fcs():
    f = trial.imix()
    assert f.sizes == ((60, 28), (566, 16), (1514, 4)) and f.label == "imix"
    assert f.mean_bytes == pytest.approx((60 * 28 + 566 * 16 + 1514 * 4) / 48)
    # 1 Mpps of 60-byte frames: (60 + 4 FCS + 20 preamble and gap) * 8 bits
    assert trial.single(60).gbps(1e6) == pytest.approx(0.672)


def test_a_trial_on_schedule_is_the_devices_loss_only():
    t = trial.account(1e6, 2.0, 2_000_000, 2_000_000, 1_990_000, offered_s=1.9, lag_s=0.001, wall_s=2.3)
    assert not t["generator_short"]
    assert t["loss_packets"] == 10_000 and t["loss_ratio"] == pytest.approx(0.005)
    assert t["offered_load_pps"] == 1_000_000       # sent over the duration: never above the schedule
    m = MeasurementResult(**trial.for_search(t))
    assert m.loss_ratio == pytest.approx(0.005) and m.unsent_count == 0


def test_a_late_generator_is_marked_and_never_the_devices_loss():
    # every frame arrived, but sending 2 s worth took 2.5 s: the load was not offered
    t = trial.account(1e6, 2.0, 2_000_000, 2_000_000, 2_000_000, offered_s=2.5, lag_s=0.5, wall_s=2.8)
    assert t["generator_short"] and t["loss_packets"] == 0 and t["loss_ratio"] == 0
    assert t["offered_load_pps"] == 800_000
    m = MeasurementResult(**trial.for_search(t))
    # the search sees the frames not offered within the duration as unsent: 1 - 2.0/2.5
    assert m.loss_count == 0 and m.unsent_count == 400_000 and m.loss_ratio == pytest.approx(0.2)


def test_lag_within_tolerance_is_on_schedule_and_received_above_sent_is_no_loss():
    t = trial.account(1e5, 1.0, 100_000, 100_000, 100_003, offered_s=1.05, lag_s=0.06, wall_s=1.3)
    assert not t["generator_short"] and t["loss_packets"] == 0   # 3 stray frames (the lab's own ND)
    assert trial.account(1e5, 1.0, 100_000, 99_000, 99_000, 0.9, 0.0, 1.2)["generator_short"]   # sent < intended


class Simulated:
    """A device that forwards everything up to `ndr`, loses a growing share above it, behind a
    generator that cannot offer more than `ceiling` (its trials come back late, as trial.account
    would make them)."""

    def __init__(self, ndr: float, ceiling: float) -> None:
        self.ndr, self.ceiling, self.trials = ndr, ceiling, []

    def measure(self, intended_duration: float, intended_load: float) -> MeasurementResult:
        n = round(intended_load * intended_duration)
        took = intended_duration * max(1.0, intended_load / self.ceiling)
        lost = 0 if intended_load <= self.ndr else round(n * (intended_load - self.ndr) / intended_load * 0.1)
        t = trial.account(intended_load, intended_duration, n, n, n - lost, took, took - intended_duration, took)
        self.trials.append(t)
        return MeasurementResult(**{**trial.for_search(t), "intended_load": intended_load})


def _search(sim: Simulated, max_load: float, goals: list[search.Goal]) -> dict:
    spec = search.SearchSpec(goals, [trial.single(60)])
    cfg = search._config(spec, 1.0, max_load, 600)
    found = MultipleLossRatioSearch(cfg).search(sim, debug=lambda m: None)
    return {g.name: search.goal_result(g, found[sg], sim.trials, trial.single(60)) for g, sg in zip(goals, cfg.goals)}


def test_mlrsearch_brackets_a_devices_ndr_and_pdr_within_the_width():
    sim = Simulated(ndr=1_000_000, ceiling=10_000_000)
    res = _search(sim, 3_000_000, search.parse_goals("ndr,pdr"))
    ndr, pdr = res["ndr"], res["pdr"]
    assert ndr["lower_bound_pps"] <= 1_000_000 < ndr["upper_bound_pps"]
    assert ndr["upper_bound_pps"] / ndr["lower_bound_pps"] <= 1 + search.DEFAULT_WIDTH + 1e-3
    assert ndr["limited_by"] == "device"
    # loss ratio 0.1 * (L - ndr) / L reaches 0.005 at L = ndr / 0.95
    assert pdr["lower_bound_pps"] <= 1_000_000 / 0.95 < pdr["upper_bound_pps"]
    assert pdr["lower_bound_pps"] > ndr["lower_bound_pps"]
    assert all(t["duration_s"] in (1.0,) for t in sim.trials)   # initial and final trials: 1 s here


def test_a_generator_below_the_device_bounds_the_search_as_the_generators():
    sim = Simulated(ndr=5_000_000, ceiling=2_000_000)
    (res,) = _search(sim, 3_000_000, [search.Goal("ndr", 0.0)]).values()
    # a 1 s trial late by up to 2% + 50 ms is on schedule: the bracket sits at the ceiling plus that
    tolerated = 2_000_000 * (1 + trial.SHORT_TOLERANCE + trial.SHORT_SLACK_S / 1.0)
    assert 2_000_000 <= res["lower_bound_pps"] <= tolerated < res["upper_bound_pps"]
    assert res["limited_by"] == "generator"
    assert any(t["generator_short"] for t in sim.trials) and not any(t["loss_packets"] for t in sim.trials)


def test_limited_by_without_an_upper_bound_is_max_load():
    assert search.limited_by(search.Goal("ndr", 0.0), None, []) == "max_load"


def test_a_late_generator_that_had_cpu_to_spare_was_disturbed():
    # 1M frames in 0.4 s of its own CPU time: it could send 2.5M/s, so falling behind 2M/s was
    # other work's doing
    t = trial.account(2_000_000, 1.0, 2_000_000, 1_000_000, 1_000_000, 1.0, 0.5, 1.3, cpu_s=0.4)
    assert t["generator_short"] and t["disturbed"] and t["generator_capacity_pps"] == 2_500_000
    # the same lag with 0.53 s of CPU time (1.9M frames per CPU-second): the generator's own ceiling
    t = trial.account(2_000_000, 1.0, 2_000_000, 1_000_000, 1_000_000, 1.0, 0.5, 1.3, cpu_s=0.5263)
    assert t["generator_short"] and not t["disturbed"]
    on_time = trial.account(2_000_000, 1.0, 2_000_000, 2_000_000, 2_000_000, 1.0, 0.0, 1.2, cpu_s=0.4)
    assert not on_time["disturbed"]
    assert not trial.account(2_000_000, 1.0, 2_000_000, 1_000_000, 1_000_000, 1.0, 0.5, 1.3)["disturbed"]  # no clock


def test_disturbed_needs_capacity_capacity_margin_above_the_load():
    load, margin = 2_000_000, trial.CAPACITY_MARGIN
    assert 0 < margin < 0.5      # a margin of noise in the CPU clock, not a second ceiling
    assert trial.disturbed(True, load, load * (1 + margin))
    assert not trial.disturbed(True, load, load * (1 + margin) - 1)   # within the margin: its own ceiling
    assert not trial.disturbed(False, load, load * 10)                # on schedule: never disturbed
    assert not trial.disturbed(True, load, None)                      # no clock: not known
    # account() judges with the same margin, from the frames sent and the CPU time
    cpu_s = 1_000_000 / (load * (1 + margin) + 1000)
    assert trial.account(load, 1.0, load, 1_000_000, 1_000_000, 1.0, 0.5, 1.3, cpu_s=cpu_s)["disturbed"]
    cpu_s = 1_000_000 / (load * (1 + margin) - 1000)
    assert not trial.account(load, 1.0, load, 1_000_000, 1_000_000, 1.0, 0.5, 1.3, cpu_s=cpu_s)["disturbed"]


def test_a_disturbed_trial_is_run_again_at_most_retries_times(monkeypatch):
    outcomes = iter([True, True, False])
    monkeypatch.setattr(trial, "run", lambda s, gen, load, d: {"disturbed": next(outcomes)})
    assert [r["disturbed"] for r in trial.run_undisturbed(None, None, 1e6, 1.0)] == [True, True, False]
    monkeypatch.setattr(trial, "run", lambda s, gen, load, d: {"disturbed": True})
    assert len(trial.run_undisturbed(None, None, 1e6, 1.0)) == 1 + trial.RETRIES


def test_a_load_is_judged_over_three_final_trials_at_csits_exceed_ratio_by_default():
    spec = search.SearchSpec([search.Goal("ndr", 0.0)], [trial.single(60)])
    (goal,) = search._config(spec, 2.0, 1e7, 60).goals
    assert (goal.exceed_ratio, goal.duration_sum, goal.final_trial_duration) == (0.5, 6.0, 2.0)
    strict = search.SearchSpec([search.Goal("ndr", 0.0)], [trial.single(60)], duration_sum=0.5, exceed_ratio=0.0)
    (goal,) = search._config(strict, 2.0, 1e7, 60).goals
    assert (goal.exceed_ratio, goal.duration_sum) == (0.0, 2.0)    # never less than one final trial


def test_the_searchs_top_is_above_the_ceiling_or_the_capacity_other_work_held_it_under():
    assert search.max_load(2e6, None) == pytest.approx(2.4e6)
    assert search.max_load(2e6, 3_000_000) == pytest.approx(3.6e6)
    assert search.max_load(2e6, 1_000_000) == pytest.approx(2.4e6)


def test_pktgens_lag_is_against_the_rate_it_was_started_at():
    from offload.bench import harness
    from offload.bench.generators import pktgen

    g = object.__new__(harness._Pktgen)
    g.cfg, g.final, g.rate_per_thread = pktgen.PktgenConfig(device="x", threads=[0], count=100_000), [], 100_000.0
    g.final = [pktgen.PktgenResult(device="x", ok=True, packets=100_000, usec=1_250_000, errors=0)]
    assert g.lag() == pytest.approx(0.25)            # 100k frames at 100k/s took 1.25 s
    g.final = [pktgen.PktgenResult(device="x", ok=True, packets=100_000, usec=900_000, errors=0)]
    assert g.lag() == 0.0                            # ahead of the schedule is no lag
    g.rate_per_thread = None
    assert g.lag() == 0.0                            # flat out: no schedule


def test_the_warm_up_settles_when_the_last_windows_show_no_trend():
    k, tol = trial.WARMUP_K, trial.WARMUP_TOLERANCE
    assert not trial.settled([10.0] * (2 * k - 1))                    # too few windows to see a trend
    assert trial.settled([10.0] * k + [10.0 * (1 + tol * 0.9)] * k)   # a rise within the tolerance
    assert not trial.settled([8.0] * k + [10.0] * k)                  # still rising: not settled
    assert trial.settled([5.0, 8.0, 9.0, 10.5, 9.7, 10.1, 10.2, 9.9])  # the climb is over, noise stays
    # judged per CPU-second where every window has it, on the rate otherwise
    assert trial.steady_figures([1.0, 2.0], [10, 20]) == [10.0, 20.0]
    assert trial.steady_figures([1.0, 2.0], [10, None]) == [1.0, 2.0]


class _FlatOut:
    """A generator whose flat-out windows send `rates` frames/s in turn, 1 CPU-second each."""

    def __init__(self, rates):
        self.rates, self.i, self.cpu = list(rates), -1, 0

    def cpu_ns(self):
        return self.cpu


def test_the_warm_up_runs_until_settled_and_reports_every_window(monkeypatch):
    gen = _FlatOut([4e6, 6e6, 8e6, 9e6, 10e6, 10e6, 10.2e6, 9.9e6, 10e6, 10.1e6])

    def window(s, g, seconds):
        g.i += 1
        g.cpu += 10**9
        g.sent = lambda: g.rates[g.i]
        return g.rates[g.i]

    monkeypatch.setattr(trial, "calibrate", window)
    w = trial.warm_up(None, gen, 0.0, 60.0)
    assert w["settled"] and w["ceilings_pps"] == [4e6, 6e6, 8e6, 9e6, 10e6, 10e6, 10.2e6, 9.9e6, 10e6]
    assert w["ceiling_pps"] == 10_000_000 and w["capacity_pps"] == 10_000_000   # the last 3's median
    gen = _FlatOut([1e6 * (i + 1) for i in range(100)])               # never settles: the limit ends it
    monkeypatch.setattr(trial.time, "monotonic", iter(range(0, 1000, 1)).__next__)
    w = trial.warm_up(None, gen, 1.0, 10.0)
    assert not w["settled"] and len(w["ceilings_pps"]) <= 10          # 1 s windows within 10 s
