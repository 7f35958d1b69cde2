"""The retry decision as a table (F22)."""

from __future__ import annotations

import pytest

from gateway.policy import KeyAction, Outcome, decide


@pytest.mark.parametrize(
    ("status", "transport", "outcome", "action", "fail_over"),
    [
        (200, None, Outcome.OK, KeyAction.SUCCEED, False),
        (429, None, Outcome.RATE_LIMITED, KeyAction.COOL_DOWN, True),
        (401, None, Outcome.AUTH_FAILED, KeyAction.AUTH_FAILED, True),
        (403, None, Outcome.AUTH_FAILED, KeyAction.AUTH_FAILED, True),
        (500, None, Outcome.SERVER_ERROR, KeyAction.COUNT_FAILURE, True),
        (502, None, Outcome.SERVER_ERROR, KeyAction.COUNT_FAILURE, True),
        (503, None, Outcome.SERVER_ERROR, KeyAction.COUNT_FAILURE, True),
        (408, None, Outcome.SERVER_ERROR, KeyAction.COUNT_FAILURE, True),
        (400, None, Outcome.CLIENT_ERROR, KeyAction.NONE, False),
        (404, None, Outcome.CLIENT_ERROR, KeyAction.NONE, False),
        (413, None, Outcome.CLIENT_ERROR, KeyAction.NONE, False),
        (422, None, Outcome.CLIENT_ERROR, KeyAction.NONE, False),
        (None, Outcome.TIMEOUT, Outcome.TIMEOUT, KeyAction.COUNT_FAILURE, True),
        (None, Outcome.CONNECTION_ERROR, Outcome.CONNECTION_ERROR, KeyAction.COUNT_FAILURE, True),
        (None, Outcome.BAD_RESPONSE, Outcome.BAD_RESPONSE, KeyAction.COUNT_FAILURE, True),
    ],
)
def test_decision_table(status, transport, outcome, action, fail_over):
    decision = decide(status, transport)
    assert (decision.outcome, decision.key_action, decision.fail_over) == (
        outcome,
        action,
        fail_over,
    )


@pytest.mark.parametrize(
    ("status", "overflow", "outcome", "action", "fail_over"),
    [
        # The adapter read "prompt too long": not the key's fault, nor another key's cure.
        (400, True, Outcome.CONTEXT_OVERFLOW, KeyAction.NONE, False),
        (413, True, Outcome.CONTEXT_OVERFLOW, KeyAction.NONE, False),
        (400, False, Outcome.CLIENT_ERROR, KeyAction.NONE, False),
        # Whatever the text says, these keep their own meaning.
        (429, True, Outcome.RATE_LIMITED, KeyAction.COOL_DOWN, True),
        (401, True, Outcome.AUTH_FAILED, KeyAction.AUTH_FAILED, True),
        (500, True, Outcome.SERVER_ERROR, KeyAction.COUNT_FAILURE, True),
        (200, True, Outcome.OK, KeyAction.SUCCEED, False),
    ],
)
def test_context_overflow_in_the_table(status, overflow, outcome, action, fail_over):
    decision = decide(status, overflow=overflow)
    assert (decision.outcome, decision.key_action, decision.fail_over) == (
        outcome,
        action,
        fail_over,
    )
