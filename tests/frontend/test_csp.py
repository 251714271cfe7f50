"""Model text must never run as script (PRODUCT.md section 5).

Two locks, both checked here: every page carries an enforcing Content-Security-Policy
without 'unsafe-inline' scripts, and the templates and scripts never turn text into
markup (no `|safe`, no inline code, no inline styles, no innerHTML).
"""

import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.factories import PromptFactory, RankingTaskFactory

FRONTEND = Path(settings.BASE_DIR) / "frontend"
TEMPLATES = sorted((FRONTEND / "templates").rglob("*.html"))
SCRIPTS = sorted((FRONTEND / "static").rglob("*.js"))

# Every HTML page route with the arguments to fill in; the test below fails when a new page
# is added anywhere in the URL conf without being listed here.
PAGES = {
    "home": {},
    "project-list": {},
    "project-label": {"slug": "{slug}"},
    "project-demonstrate": {"slug": "{slug}"},
    "project-playground": {"slug": "{slug}"},
    "project-rounds": {"slug": "{slug}"},
    "project-history": {"slug": "{slug}"},
    "project-revise": {"slug": "{slug}", "ranking_id": "1"},
    "project-review": {"slug": "{slug}"},
    "project-review-task": {"slug": "{slug}", "task_id": "1"},
    "project-settings": {"slug": "{slug}"},
}
OTHER_PAGES = [
    "/accounts/login/",
    "/projects/no-such-project/label/",
    "/no-such-page/",
    "/api/docs/",
]


def _directives(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def assert_enforcing_csp(response) -> None:
    assert "Content-Security-Policy-Report-Only" not in response.headers
    header = response.headers.get("Content-Security-Policy")
    assert header, f"no Content-Security-Policy on {response.request['PATH_INFO']}"
    directives = _directives(header)
    scripts = directives.get("script-src", directives.get("default-src"))
    assert scripts is not None, "neither script-src nor default-src"
    assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
    assert "*" not in scripts and "data:" not in scripts
    assert "'unsafe-inline'" not in directives.get("style-src", [])
    assert directives.get("object-src") == ["'none'"]


NOT_PAGES = ("admin/", "accounts/", "api/")


def _page_patterns(
    patterns: Sequence[URLPattern | URLResolver], prefix: str = ""
) -> list[URLPattern]:
    """The routes of the URL conf outside the admin, the account pages and the API."""
    found: list[URLPattern] = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if route.startswith(NOT_PAGES):
            continue
        if isinstance(pattern, URLResolver):
            found += _page_patterns(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            found.append(pattern)
    return found


def test_every_page_route_is_checked_and_served_by_the_frontend() -> None:
    pages = _page_patterns(get_resolver().url_patterns)
    assert {p.name for p in pages} == set(PAGES)
    # One app owns the pages: a view of another app's module is a page in a second place.
    assert all(p.callback.__module__.startswith("frontend.views.") for p in pages), pages


@pytest.mark.django_db
def test_every_page_has_an_enforcing_csp(labeler, project_admin, project) -> None:
    PromptFactory(project=project)
    RankingTaskFactory(project=project)
    anonymous, member, admin = Client(), Client(), Client()
    member.force_login(labeler)
    admin.force_login(project_admin)
    paths = [
        reverse(name, kwargs={k: v.format(slug=project.slug) for k, v in kwargs.items()})
        for name, kwargs in PAGES.items()
    ] + OTHER_PAGES
    for client in (anonymous, member, admin):
        for path in paths:
            response = client.get(path)
            assert response.status_code in {200, 302, 403, 404}, path
            assert_enforcing_csp(response)


@pytest.mark.django_db
def test_login_post_and_demonstration_post_carry_csp(labeler, project) -> None:
    client = Client()
    response = client.post("/accounts/login/", {"username": labeler.username, "password": "no"})
    assert response.status_code == 200
    assert_enforcing_csp(response)
    client.force_login(labeler)
    url = reverse("project-demonstrate", kwargs={"slug": project.slug})
    assert_enforcing_csp(client.post(url, {"prompt_id": "x", "response": ""}))


def test_templates_exist() -> None:
    assert len(TEMPLATES) >= 5 and len(SCRIPTS) >= 5


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(FRONTEND)))
def test_template_has_no_safe_filter_inline_script_or_style(path: Path) -> None:
    source = path.read_text()
    assert not re.search(r"\|\s*safe\b", source), "|safe turns text into markup"
    assert "{% autoescape off" not in source
    assert not re.search(r"\sstyle\s*=", source, re.IGNORECASE), "inline style attribute"
    assert not re.search(r"<style[\s>]", source, re.IGNORECASE), "inline <style> element"
    assert not re.search(r"\son[a-z]+\s*=", source, re.IGNORECASE), "inline event handler"
    assert "javascript:" not in source.lower()
    for match in re.finditer(
        r"<script\b([^>]*)>(.*?)</script\s*>", source, re.IGNORECASE | re.DOTALL
    ):
        attributes, body = match.groups()
        assert "src=" in attributes, f"inline <script> without src: {match.group(0)[:80]}"
        assert not body.strip(), "a <script src> must have no body"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(FRONTEND)))
def test_scripts_never_parse_text_as_markup(path: Path) -> None:
    source = path.read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ):
        assert sink not in source, f"{sink} in {path.name}"
    assert not re.search(r"setTimeout\(\s*['\"`]", source), "setTimeout with a string"
