"""The one list of states and transitions matches the scripts that perform them."""

from __future__ import annotations

from importlib import resources

from redkit.jobs import PRIORITY_MAX, PRIORITY_MIN, TRANSITIONS, JobState
from redkit.jobs.queue import SCRIPTS
from redkit.jobs.states import waiting_score


def test_higher_priority_scores_lower_and_fifo_holds_within_a_priority() -> None:
    assert waiting_score(10, 1) < waiting_score(0, 1) < waiting_score(-10, 1)
    assert waiting_score(5, 1) < waiting_score(5, 2)
    assert waiting_score(5, 10**12 - 1) < waiting_score(4, 0)


def test_every_score_is_exact_in_a_double() -> None:
    largest = waiting_score(PRIORITY_MIN, 10**12 - 1)
    assert largest < 2**53
    assert float(largest) == largest
    assert waiting_score(PRIORITY_MAX, 0) == 0


def test_every_transition_names_a_script_whose_header_points_back_to_states_py() -> None:
    names = {s.name for s in SCRIPTS}
    for transition in TRANSITIONS:
        assert transition.script in names, transition
    package = resources.files("redkit.jobs")
    for name in {t.script for t in TRANSITIONS}:
        header = (package / f"{name}.lua").read_text().split("\n", 3)[:3]
        assert any("states.py" in line for line in header), name


def test_each_state_is_reached_and_the_terminal_ones_are_left_only_by_retry_or_trim() -> None:
    targets = {t.target for t in TRANSITIONS}
    assert set(JobState) <= targets
    for t in TRANSITIONS:
        if t.source is not None and t.source.terminal:
            assert t.target in (JobState.WAITING, JobState.REMOVED)
            assert t.script in ("retry", "complete", "fail", "cancel")
    assert JobState.WAITING.pending
    assert not JobState.ACTIVE.pending
