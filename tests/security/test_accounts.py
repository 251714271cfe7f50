"""A project admin manages memberships, never accounts (PRODUCT.md section 5): adding an
existing user through the API changes nothing about that user."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.forms.models import model_to_dict
from rest_framework.test import APIClient

from labeling.models import Membership
from tests.factories import MembershipFactory, UserFactory

User = get_user_model()
ACCOUNT_FIELDS = [
    "password",
    "email",
    "first_name",
    "last_name",
    "is_active",
    "is_staff",
    "is_superuser",
    "last_login",
]


def _members_url(project) -> str:
    return f"/api/v1/projects/{project.slug}/members/"


def _account(user) -> dict:
    user.refresh_from_db()
    return model_to_dict(user, fields=ACCOUNT_FIELDS)


@pytest.fixture
def superuser(db):
    return UserFactory(is_superuser=True, is_staff=True, email="root@example.org")


@pytest.fixture
def fellow_admin(project):
    """Another admin of the same project."""
    return MembershipFactory(project=project, role="admin", user__email="ann@example.org").user


@pytest.mark.parametrize("victim_name", ["superuser", "fellow_admin", "outsider"])
def test_project_admin_cannot_set_an_existing_users_password(
    request, admin_client_api: APIClient, project, victim_name: str
) -> None:
    victim = request.getfixturevalue(victim_name)
    before = _account(victim)
    body = {"username": victim.username, "role": "labeler", "password": "attacker-Chosen-77"}
    response = admin_client_api.post(_members_url(project), body, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "password: can only be set for a new user"
    assert _account(victim) == before
    assert victim.check_password("pw-for-tests")
    roles = Membership.objects.filter(project=project, user=victim).values_list("role", flat=True)
    assert list(roles) == (["admin"] if victim_name == "fellow_admin" else [])


@pytest.mark.parametrize(
    "extra",
    [
        {"email": "evil@example.org"},
        {"is_superuser": False},
        {"is_staff": True},
        {"is_active": False},
        {"first_name": "Mallory"},
    ],
)
def test_account_fields_are_refused(admin_client_api, project, superuser, extra) -> None:
    before = _account(superuser)
    body = {"username": superuser.username, "role": "labeler", **extra}
    response = admin_client_api.post(_members_url(project), body, format="json")
    assert response.status_code == 400
    assert _account(superuser) == before
    assert not Membership.objects.filter(project=project, user=superuser).exists()


def test_adding_an_existing_user_changes_only_the_membership(
    admin_client_api, project, superuser, fellow_admin
) -> None:
    accounts = {user.pk: _account(user) for user in (superuser, fellow_admin)}
    for user in (superuser, fellow_admin):
        body = {"username": user.username, "role": "labeler"}
        assert admin_client_api.post(_members_url(project), body, format="json").status_code == 201
        assert _account(user) == accounts[user.pk]
    assert Membership.objects.get(project=project, user=fellow_admin).role == "labeler"


def test_a_password_applies_to_the_user_the_request_creates(admin_client_api, project) -> None:
    body = {"username": "newbie", "role": "labeler", "password": "fresh-Start-2024"}
    response = admin_client_api.post(_members_url(project), body, format="json")
    assert response.status_code == 201
    assert User.objects.get(username="newbie").check_password("fresh-Start-2024")


def test_an_all_digit_password_is_refused_by_the_api(admin_client_api, project) -> None:
    body = {"username": "digits", "role": "labeler", "password": "83749201"}
    response = admin_client_api.post(_members_url(project), body, format="json")
    assert response.status_code == 400
    assert "entirely numeric" in response.json()["detail"]
    assert not User.objects.filter(username="digits").exists()


def _add_member(*args: str) -> str:
    out = StringIO()
    call_command("add_member", *args, stdout=out)
    return out.getvalue()


def test_an_all_digit_password_is_refused_by_add_member(project) -> None:
    with pytest.raises(CommandError, match="entirely numeric"):
        _add_member(project.slug, "digits", "--role", "labeler", "--password", "83749201")
    assert not User.objects.filter(username="digits").exists()


def test_add_member_says_when_it_changes_an_existing_password(project, superuser) -> None:
    out = _add_member(project.slug, superuser.username, "--role", "labeler")
    assert "password" not in out.lower()
    assert _account(superuser)["password"] == superuser.password
    assert superuser.check_password("pw-for-tests")

    out = _add_member(
        project.slug, superuser.username, "--role", "admin", "--password", "operator-Reset-41"
    )
    assert f"Changed the password of the existing user {superuser.username}." in out
    superuser.refresh_from_db()
    assert superuser.check_password("operator-Reset-41")

    out = _add_member(project.slug, "brand-new", "--role", "labeler", "--password", "first-Pw-12")
    assert "Changed the password" not in out


def test_a_new_users_password_keeps_its_spaces(admin_client_api, project) -> None:
    response = admin_client_api.post(
        _members_url(project),
        {"username": "spacey", "role": "labeler", "password": "  a long pass phrase "},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert User.objects.get(username="spacey").check_password("  a long pass phrase ")
