from itertools import product

import pytest

from comfy_shared.errors import InvalidTransition
from comfy_shared.task_state import (
    TERMINAL_STATES,
    TaskStatus,
    can_transition,
    check_transition,
)

Q, D, R = TaskStatus.QUEUED, TaskStatus.DISPATCHED, TaskStatus.RUNNING
OK, FAIL, CANCEL = TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED

EXPECTED_ALLOWED = {
    (Q, D), (Q, R), (Q, OK), (Q, FAIL), (Q, CANCEL),
    (D, Q), (D, R), (D, OK), (D, FAIL), (D, CANCEL),
    (R, Q), (R, OK), (R, FAIL), (R, CANCEL),
}  # fmt: skip


@pytest.mark.parametrize(("current", "target"), list(product(TaskStatus, TaskStatus)))
def test_every_pair_of_states(current: TaskStatus, target: TaskStatus) -> None:
    assert can_transition(current, target) is ((current, target) in EXPECTED_ALLOWED)


def test_terminal_states_are_exactly_the_three_final_ones() -> None:
    assert {s for s in TaskStatus if s.is_terminal} == {OK, FAIL, CANCEL} == TERMINAL_STATES


def test_forbidden_transition_raises_with_both_states() -> None:
    with pytest.raises(InvalidTransition) as caught:
        check_transition("t1", OK, R)
    assert (caught.value.current, caught.value.target) == (OK, R)
    assert "succeeded" in str(caught.value)
    assert "running" in str(caught.value)
