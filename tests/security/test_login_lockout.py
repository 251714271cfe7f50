"""django-axes on the login form and the admin's login: RLHF_LOGIN_FAILURE_LIMIT (5) failures
for one username from one address lock that pair out (429) for RLHF_LOGIN_COOLOFF_MINUTES;
password-reset pages exist only with a mail server."""

import importlib
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client, override_settings
from django.urls import NoReverseMatch, clear_url_caches, reverse

from tests.factories import UserFactory

PASSWORD = "pw-for-tests"


def _log_in(client: Client, username: str, password: str, path: str = "/accounts/login/") -> int:
    return client.post(path, {"username": username, "password": password}).status_code


def test_the_documented_defaults_are_in_force() -> None:
    assert settings.AXES_FAILURE_LIMIT == 5
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]


def test_five_failures_lock_that_user_at_that_address(labeler) -> None:
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    statuses = [_log_in(attacker, labeler.username, f"guess-{n}") for n in range(5)]
    assert statuses[:4] == [200] * 4  # the form again, with its error
    assert statuses[4] == 429
    assert _log_in(attacker, labeler.username, PASSWORD) == 429  # the right one too

    # The pair is locked, not the user everywhere nor the address for everyone.
    assert _log_in(Client(REMOTE_ADDR="198.51.100.1"), labeler.username, PASSWORD) == 302
    other = UserFactory()
    assert _log_in(Client(REMOTE_ADDR="203.0.113.7"), other.username, PASSWORD) == 302


def test_the_lock_lifts_after_the_cool_off(labeler) -> None:
    client = Client(REMOTE_ADDR="203.0.113.8")
    for n in range(5):
        _log_in(client, labeler.username, f"guess-{n}")
    assert _log_in(client, labeler.username, PASSWORD) == 429
    earlier = settings.AXES_COOLOFF_TIME + timedelta(minutes=1)
    for attempt in AccessAttempt.objects.filter(username=labeler.username):
        attempt.attempt_time -= earlier
        attempt.save()
    assert _log_in(client, labeler.username, PASSWORD) == 302


def test_the_admin_login_is_locked_too(db) -> None:
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = Client(REMOTE_ADDR="203.0.113.9")
    statuses = [_log_in(client, staff.username, f"guess-{n}", "/admin/login/") for n in range(5)]
    assert statuses == [200] * 4 + [429]
    assert _log_in(client, staff.username, PASSWORD, "/admin/login/") == 429


def test_password_reset_is_404_without_a_mail_server(client: Client, db) -> None:
    assert client.get("/accounts/password_reset/").status_code == 404
    assert client.post("/accounts/password_reset/", {"email": "a@b.c"}).status_code == 404
    assert client.get("/accounts/reset/done/").status_code == 404
    assert client.get("/accounts/login/").status_code == 200


@pytest.fixture
def urls_reloaded_after() -> object:
    yield importlib.import_module(settings.ROOT_URLCONF)
    importlib.reload(importlib.import_module(settings.ROOT_URLCONF))
    clear_url_caches()


def test_password_reset_exists_with_a_mail_server(urls_reloaded_after) -> None:
    with pytest.raises(NoReverseMatch):
        reverse("password_reset")
    with override_settings(EMAIL_HOST="smtp.example.org"):
        importlib.reload(urls_reloaded_after)  # type: ignore[arg-type]
        clear_url_caches()
        assert reverse("password_reset") == "/accounts/password_reset/"
