import pytest


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    """Run what services queue with transaction.on_commit (eager Celery tasks) in the test."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def through_gate(on_commit):
    """Approve a round for as long as the promotion gate stops it in needs_review, as an
    admin would (tiny random models may fail the gate; test_gate.py tests the gate itself).
    Returns the round, refreshed."""

    def approve(round_):
        from training.services import rounds

        round_.refresh_from_db()
        while round_.stage == "needs_review":
            with on_commit():
                rounds.round_approve(round_=round_)
            round_.refresh_from_db()
        return round_

    return approve
