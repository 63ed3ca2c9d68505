"""A lab's namespace is made by pyroute2's forked helper: on a loaded host its answer may take
longer than pyroute2's default 2 s wait, which killed `lab up` with an internal error (exit 70)."""

import pytest
from pyroute2 import config as pr_config

from offload import lab
from offload.errors import EnvironmentProblem


def test_the_helper_is_given_time_and_the_default_put_back(monkeypatch):
    seen = []
    monkeypatch.setattr(lab.pr_netns, "create", lambda ns: seen.append((ns, pr_config.default_communicate_timeout)))
    before = pr_config.default_communicate_timeout
    lab._create_netns("offload-lab-x")
    assert seen == [("offload-lab-x", lab._CREATE_WAIT_S)] and lab._CREATE_WAIT_S > before
    assert pr_config.default_communicate_timeout == before


def test_a_helper_that_never_answers_is_the_hosts_problem_not_a_bug(monkeypatch):
    def stuck(ns):
        raise TimeoutError("no response from the child pid 1")

    monkeypatch.setattr(lab.pr_netns, "create", stuck)
    with pytest.raises(EnvironmentProblem) as e:
        lab._create_netns("offload-lab-x")
    assert "creating network namespace offload-lab-x" in e.value.message and e.value.hint
