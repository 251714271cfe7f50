"""Isolation across projects, over the whole URL conf (PRODUCT.md section 5; issue 3 item 8).

The routes are read from Django's resolver, not listed by hand, so a route added later is
covered the day it lands:
- every route with a path parameter is called by a member (labeler, then admin) of project A
  with the objects of project B: the answer must be 404, exactly as for an object that does
  not exist, and nothing of B may change;
- routes without parameters must not show B's slug or name to A's members;
- every (route, method) must be classified as admin-only or open to members; admin-only
  ones answer 403/404 to a labeler of the project. An unclassified route, or a path
  parameter the test cannot fill, fails the suite until someone decides.
And the OpenAPI schema: served, valid OpenAPI 3, generated without warnings.
"""

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from labeling import models as lm
from tests.factories import (
    DemonstrationFactory,
    MembershipFactory,
    PlaygroundReplyFactory,
    ProjectFactory,
    RankingFactory,
    RankingTaskFactory,
    RoundFactory,
    TrainingRunFactory,
)
from training import models as tm

# Not project objects: Django's admin (staff only, its own permission system), the login and
# password pages, and the public API schema with its Swagger UI page.
SKIPPED_PREFIXES = ("admin/", "accounts/", "api/schema/", "api/docs/")
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
MISSING_ID = 10**9

# (url name, method) that only project admins may use.
ADMIN_ONLY = {
    ("api-project-detail", "patch"),
    ("api-member-list", "post"),
    ("api-prompt-import", "post"),
    ("api-prompt-import-slash", "post"),
    ("api-prompt-release", "post"),
    ("api-prompt-drop", "post"),
    ("api-comparison-list", "get"),
    ("api-ranking-list", "get"),
    ("api-round-list", "get"),
    ("api-round-list", "post"),
    ("api-round-detail", "get"),
    ("api-round-advance", "post"),
    ("api-round-cancel", "post"),
    ("api-round-approve", "post"),
    ("api-round-reject", "post"),
    ("api-run-list", "get"),
    ("api-run-metrics", "get"),
    ("api-sft-start", "post"),
    ("api-labeler-stats", "get"),
    ("project-rounds", "get"),
    ("api-review-tasks", "get"),
    ("api-review-task", "get"),
    ("api-ranking-review", "post"),
    ("api-task-gold", "post"),
    ("project-review", "get"),
    ("project-review-task", "get"),
    ("project-review-task", "post"),
    ("project-settings", "get"),
    ("project-settings", "post"),
}
# (url name, method) open to every member of the project (or, without a project, to any
# signed-in user; project creation through the API needs staff, see labeling/api/views.py).
MEMBER_ROUTES = {
    ("api-project-list", "get"),
    ("api-project-list", "post"),
    ("api-project-detail", "get"),
    ("api-member-list", "get"),
    ("api-prompt-list", "get"),
    ("api-task-next", "get"),
    ("api-ranking-create", "post"),
    ("api-task-skip", "post"),
    ("api-demonstration-list", "get"),
    ("api-demonstration-list", "post"),
    ("api-model-list", "get"),
    ("api-playground-request", "post"),
    ("api-playground-reply", "get"),
    ("api-playground-feedback", "post"),
    ("api-playground-demonstration", "post"),
    ("home", "get"),
    ("project-list", "get"),
    ("project-label", "get"),
    ("project-demonstrate", "get"),
    ("project-demonstrate", "post"),
    ("project-playground", "get"),
    ("api-history", "get"),
    ("api-ranking-revise", "post"),
    ("api-task-unskip", "post"),
    ("project-history", "get"),
    ("project-history", "post"),
    ("project-revise", "get"),
    ("project-revise", "post"),
}


@dataclass(frozen=True)
class Route:
    route: str  # e.g. "api/v1/tasks/<int:task_id>/rankings/"
    name: str
    callback: Callable[..., Any]

    @property
    def params(self) -> list[str]:
        return re.findall(r"<(?:\w+:)?(\w+)>", self.route)

    @property
    def is_class_based(self) -> bool:
        return self.view_class is not None

    @property
    def view_class(self) -> type | None:
        return getattr(self.callback, "cls", None) or getattr(self.callback, "view_class", None)

    def methods(self) -> list[str]:
        """The methods a class-based view implements; GET and POST for a function view
        (which may refuse one with 405 before looking at any object)."""
        if self.view_class is None:
            return ["get", "post"]
        return [m for m in HTTP_METHODS if hasattr(self.view_class, m)]

    def url(self, values: dict[str, Any]) -> str:
        return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), self.route)


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[Route]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            route = prefix + str(pattern.pattern)
            yield Route(route=route, name=pattern.name or route, callback=pattern.callback)


ROUTES = [r for r in _walk(get_resolver().url_patterns) if not r.route.startswith(SKIPPED_PREFIXES)]
WITH_PARAMS = [r for r in ROUTES if r.params]
WITHOUT_PARAMS = [r for r in ROUTES if not r.params]
ROUTE_METHODS = [(r, m) for r in ROUTES for m in r.methods()]


# --- The two projects ------------------------------------------------------------------------


@dataclass
class World:
    project: lm.Project
    admin: Any
    labeler: Any
    objects: dict[str, Any]


def _world(slug: str) -> World:
    project = ProjectFactory(slug=slug, name=f"Project {slug.upper()}")
    admin = MembershipFactory(project=project, role="admin").user
    labeler = MembershipFactory(project=project, role="labeler").user
    task = RankingTaskFactory(project=project)
    ranking = RankingFactory(task=task, labeler=admin)
    DemonstrationFactory(project=project, author=labeler)
    round_ = RoundFactory(project=project)
    run = TrainingRunFactory(project=project, round=round_)
    # Path parameters of the URL conf, filled with this project's objects. A route with a
    # parameter missing here fails test_every_path_parameter_can_be_filled.
    objects = {
        "slug": project.slug,
        "task_id": task.pk,
        "prompt_id": task.prompt_id,
        "ranking_id": ranking.pk,
        "round_id": round_.pk,
        "run_id": run.pk,
        "reply_id": PlaygroundReplyFactory(project=project, user=labeler).pk,
    }
    return World(project=project, admin=admin, labeler=labeler, objects=objects)


MISSING = {
    "slug": "no-such-project",
    "task_id": MISSING_ID,
    "prompt_id": MISSING_ID,
    "ranking_id": MISSING_ID,
    "round_id": MISSING_ID,
    "run_id": MISSING_ID,
    "reply_id": MISSING_ID,
}


@pytest.fixture
def a(db) -> World:
    return _world("alpha")


@pytest.fixture
def b(db) -> World:
    return _world("bravo")


def _client(user: Any) -> APIClient:
    client = APIClient()  # CSRF checks off: we test permissions, not CSRF
    client.force_login(user)
    return client


def _call(client: APIClient, method: str, url: str) -> Any:
    return getattr(client, method)(url, data={}, format="json")


def _snapshot() -> dict[str, int]:
    """Row counts of everything a request could create or change."""
    counted = [
        lm.Project, lm.Membership, lm.Prompt, lm.Demonstration, lm.RankingTask, lm.Response,
        lm.Assignment, lm.Ranking, lm.Comparison, lm.Feedback, tm.ModelVersion, tm.Round,
        tm.TrainingRun, tm.PlaygroundReply,
    ]  # fmt: skip
    return {model.__name__: model.objects.count() for model in counted}


# --- Tests -----------------------------------------------------------------------------------


def test_every_path_parameter_can_be_filled() -> None:
    unknown = {(r.route, p) for r in WITH_PARAMS for p in r.params if p not in MISSING}
    assert not unknown, f"teach _world() and MISSING how to fill: {sorted(unknown)}"


def test_every_route_is_classified(a) -> None:
    """Each (route, method) is admin-only or open to members. A function view's POST may be
    left out only if the view refuses it (405) to the project's admin."""
    known = ADMIN_ONLY | MEMBER_ROUTES
    unclassified = []
    for route, method in ROUTE_METHODS:
        if (route.name, method) in known:
            continue
        if not route.is_class_based:
            refused = _call(_client(a.admin), method, route.url(a.objects)).status_code == 405
            if refused:
                continue
        unclassified.append((route.name, method))
    assert not unclassified, f"add to ADMIN_ONLY or MEMBER_ROUTES: {sorted(unclassified)}"


@pytest.mark.parametrize("role", ["labeler", "admin"])
@pytest.mark.parametrize(
    ("route", "method"),
    [(r, m) for r, m in ROUTE_METHODS if r.params],
    ids=lambda value: value.name if isinstance(value, Route) else value,
)
def test_objects_of_another_project_are_404(a, b, route, method, role) -> None:
    if any(p not in MISSING for p in route.params):
        pytest.fail(f"{route.route}: no way to fill {route.params}")
    client = _client(getattr(a, role))
    before = _snapshot()
    foreign = _call(client, method, route.url(b.objects))
    missing = _call(client, method, route.url(MISSING))
    assert foreign.status_code == missing.status_code, (
        f"{method.upper()} {route.url(b.objects)} answers {foreign.status_code} for project "
        f"B's object and {missing.status_code} for a missing one: it leaks existence"
    )
    if route.is_class_based:
        assert foreign.status_code == 404, foreign.content
    else:  # a function view may refuse the method (405) before looking at the object
        assert foreign.status_code in (404, 405), foreign.content
    assert _snapshot() == before


def test_each_function_view_finds_nothing_of_another_project(a, b) -> None:
    """GET or POST of a function view must reach the object lookup at least once (a 405 on
    both methods would make the parametrized test above vacuous)."""
    client = _client(a.admin)
    for route in (r for r in WITH_PARAMS if not r.is_class_based):
        statuses = {_call(client, m, route.url(b.objects)).status_code for m in ("get", "post")}
        assert 404 in statuses, f"{route.route}: {statuses}"


@pytest.mark.parametrize("route", WITHOUT_PARAMS, ids=lambda r: r.name)
def test_lists_do_not_show_another_project(a, b, route) -> None:
    for user in (a.labeler, a.admin):
        response = _client(user).get(route.url({}))
        body = b"".join(response.streaming_content) if response.streaming else response.content
        text = body.decode("utf-8", "replace")
        assert b.project.slug not in text and b.project.name not in text, route.route


@pytest.mark.parametrize(
    ("route", "method"),
    [(r, m) for r, m in ROUTE_METHODS if (r.name, m) in ADMIN_ONLY],
    ids=lambda value: value.name if isinstance(value, Route) else value,
)
def test_admin_only_routes_refuse_labelers(a, route, method) -> None:
    before = _snapshot()
    response = _call(_client(a.labeler), method, route.url(a.objects))
    assert response.status_code in (403, 404), (route.route, method, response.status_code)
    assert _snapshot() == before
    if method == "get":  # and they work for the project's admin (safe to call: a read)
        allowed = _call(_client(a.admin), method, route.url(a.objects))
        assert allowed.status_code == 200, (route.route, allowed.status_code)


def test_member_routes_are_open_to_labelers(a) -> None:
    """The reads of MEMBER_ROUTES answer 200 (204 for no task, 302 for the home redirect) to a
    labeler of the project."""
    client = _client(a.labeler)
    for route, method in ROUTE_METHODS:
        if method == "get" and (route.name, method) in MEMBER_ROUTES:
            response = _call(client, method, route.url(a.objects))
            assert response.status_code in (200, 204, 302), (route.route, response.status_code)


# --- The OpenAPI schema ----------------------------------------------------------------------


def test_schema_is_served_and_valid_openapi_3(a) -> None:
    response = _client(a.labeler).get(
        "/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)  # jsonschema against the OpenAPI 3 specification
    assert "/api/v1/projects/{slug}/comparisons/" in schema["paths"]
    assert "/api/v1/tasks/{task_id}/rankings/" in schema["paths"]


def test_schema_generates_without_warnings(db, tmp_path) -> None:
    # `manage.py spectacular --fail-on-warn` raises on any warning or error.
    call_command("spectacular", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
