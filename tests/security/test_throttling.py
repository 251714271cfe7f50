"""API rate limits answer 429 with Retry-After: bad tokens per client address, and the
expensive writes (playground replies, starting rounds, imports) per user. The test settings
raise every rate out of reach; these tests set low ones."""

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from labeling.services.projects import api_token_create

API = "/api/v1"


def _rates(num_proxies: int = 0, **rates: str) -> Any:
    drf = settings.REST_FRAMEWORK
    return override_settings(
        REST_FRAMEWORK={
            **drf,
            "NUM_PROXIES": num_proxies,
            "DEFAULT_THROTTLE_RATES": {**drf["DEFAULT_THROTTLE_RATES"], **rates},
        }
    )


def _fresh_address() -> str:
    """An address no other test (or earlier run sharing a Redis cache) has counted."""
    return f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"


def _assert_throttled(response) -> None:
    assert response.status_code == 429, response.content
    assert 1 <= int(response["Retry-After"]) <= 60


# --- Failed token authentication ------------------------------------------------------


@_rates(token_failure="3/min")
def test_bad_tokens_from_one_address_are_throttled(labeler, project) -> None:
    address = _fresh_address()
    url = f"{API}/projects/"
    guesser = APIClient(REMOTE_ADDR=address, HTTP_AUTHORIZATION="Token wrong-guess")
    for _ in range(3):
        assert guesser.get(url).status_code == 401
    _assert_throttled(guesser.get(url))

    key = api_token_create(username=labeler.username)
    # Even the right key is refused from that address until its window clears...
    _assert_throttled(APIClient(REMOTE_ADDR=address, HTTP_AUTHORIZATION=f"Token {key}").get(url))
    # ...while other addresses and the address's browser sessions are not affected.
    other = APIClient(REMOTE_ADDR=_fresh_address(), HTTP_AUTHORIZATION=f"Token {key}")
    assert other.get(url).status_code == 200
    browser = APIClient(REMOTE_ADDR=address)
    browser.force_login(labeler)
    assert browser.get(url).status_code == 200


@_rates(token_failure="3/min")
def test_a_forged_forwarded_for_does_not_reset_the_count(db) -> None:
    address = _fresh_address()
    client = APIClient(REMOTE_ADDR=address, HTTP_AUTHORIZATION="Token wrong-guess")
    for n in range(3):
        assert client.get(f"{API}/projects/", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code == 401
    _assert_throttled(client.get(f"{API}/projects/", HTTP_X_FORWARDED_FOR="10.0.0.99"))


@_rates(num_proxies=1, token_failure="3/min")
def test_behind_one_proxy_the_address_it_appended_counts(db) -> None:
    client_address = _fresh_address()
    proxy = APIClient(REMOTE_ADDR="172.18.0.5", HTTP_AUTHORIZATION="Token wrong-guess")
    for n in range(3):
        forwarded = f"10.9.9.{n}, {client_address}"  # the client's forgery, then nginx's entry
        assert proxy.get(f"{API}/projects/", HTTP_X_FORWARDED_FOR=forwarded).status_code == 401
    _assert_throttled(proxy.get(f"{API}/projects/", HTTP_X_FORWARDED_FOR=client_address))
    other = f"{_fresh_address()}"
    assert proxy.get(f"{API}/projects/", HTTP_X_FORWARDED_FOR=other).status_code == 401


# --- Expensive writes, per user ---------------------------------------------------------


@pytest.fixture
def fresh_counts(labeler, project_admin) -> Iterator[None]:
    """Forget these users' counts: on SQLite user ids repeat from test to test."""
    keys = [
        f"throttle_{scope}_{user.pk}"
        for scope in ("playground", "training_start", "import")
        for user in (labeler, project_admin)
    ]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


@pytest.mark.parametrize(
    ("scope", "who", "path", "body"),
    [
        ("playground", "labeler", "/projects/{slug}/playground/", {"prompt": ""}),
        ("training_start", "project_admin", "/projects/{slug}/rounds/", {"num_prompts": 0}),
        ("import", "project_admin", "/projects/{slug}/prompts/import", {"prompt": "not a list"}),
    ],
)
def test_expensive_writes_are_throttled_per_user(
    request, fresh_counts, project, scope: str, who: str, path: str, body: dict
) -> None:
    client = APIClient()
    client.force_authenticate(request.getfixturevalue(who))
    url = API + path.format(slug=project.slug)
    with _rates(**{scope: "2/min"}):
        for _ in range(2):  # refused as invalid (400), yet counted: the throttle runs first
            assert client.post(url, body, format="json").status_code == 400
        _assert_throttled(client.post(url, body, format="json"))
        other = APIClient()
        other.force_authenticate(
            request.getfixturevalue("project_admin" if who == "labeler" else "labeler")
        )
        assert other.post(url, body, format="json").status_code != 429


@_rates(training_start="1/min")
def test_reading_a_throttled_url_is_not_counted(fresh_counts, admin_client_api, project) -> None:
    url = f"{API}/projects/{project.slug}/rounds/"
    for _ in range(3):
        assert admin_client_api.get(url).status_code == 200
    assert admin_client_api.post(url, {"num_prompts": 0}, format="json").status_code == 400
    _assert_throttled(admin_client_api.post(url, {"num_prompts": 0}, format="json"))
    assert admin_client_api.get(url).status_code == 200
