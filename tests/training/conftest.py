import pytest


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    """Run what services queue with transaction.on_commit (eager Celery tasks) in the test."""
    return lambda: django_capture_on_commit_callbacks(execute=True)
