"""Shared fixtures. In CI (CI=true) the suite must run on PostgreSQL and Redis: it stops
loudly if either is missing rather than silently testing SQLite."""

import os

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.factories import MembershipFactory, ProjectFactory, UserFactory

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    if not IN_CI:
        return
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        pytest.exit(f"CI=true but DATABASE_URL is not PostgreSQL (engine {engine}).", returncode=3)
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.exit("CI=true but CELERY_BROKER_URL is not Redis.", returncode=3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_postgres = "postgresql" in settings.DATABASES["default"]["ENGINE"]
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip_pg)


@pytest.fixture
def project(db):
    return ProjectFactory()


@pytest.fixture
def labeler(project):
    return MembershipFactory(project=project, role="labeler").user


@pytest.fixture
def project_admin(project):
    return MembershipFactory(project=project, role="admin").user


@pytest.fixture
def outsider(db):
    """A user who is a member of another project only."""
    return MembershipFactory(project=ProjectFactory(), role="admin").user


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def labeler_client(labeler) -> APIClient:
    client = APIClient()
    client.force_authenticate(labeler)
    return client


@pytest.fixture
def admin_client_api(project_admin) -> APIClient:
    client = APIClient()
    client.force_authenticate(project_admin)
    return client


@pytest.fixture
def make_user(db):
    return UserFactory
