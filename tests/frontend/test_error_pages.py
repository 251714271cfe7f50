"""The product's own 403 / 404 / 500 pages (never Django's debug pages), the favicon, the
readable API docs (Swagger UI served from drf-spectacular-sidecar, CSP-compliant), and the
demo's web server running with DEBUG off."""

import signal
from typing import Any

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import Client, override_settings
from django.urls import include, path

from tests.frontend.test_csp import assert_enforcing_csp
from training.management.commands import demo

pytestmark = pytest.mark.django_db


def _boom(request: Any) -> None:
    raise RuntimeError("a bug")


urlpatterns = [path("boom/", _boom), path("", include("config.urls"))]


def test_404_is_the_styled_page_without_url_patterns(client: Client, labeler) -> None:
    assert settings.DEBUG is False
    client.force_login(labeler)
    response = client.get("/no-such-page/")
    body = response.content.decode()
    assert response.status_code == 404
    assert "Nothing here" in body and "studio/base.css" in body
    assert "URLconf" not in body and "projects/&lt;slug" not in body and "admin/" not in body
    assert_enforcing_csp(response)


def test_404_for_another_projects_page_uses_the_same_page(
    client: Client, outsider, project
) -> None:
    client.force_login(outsider)
    response = client.get(f"/projects/{project.slug}/label/")
    assert response.status_code == 404 and "Nothing here" in response.content.decode()


def test_api_404_stays_json(client: Client) -> None:
    response = client.get("/api/v1/no-such-endpoint/")
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}


def test_403_is_the_styled_page_with_the_reason(client: Client, labeler, project) -> None:
    client.force_login(labeler)
    response = client.get(f"/projects/{project.slug}/settings/")
    body = response.content.decode()
    assert response.status_code == 403
    assert "You may not open this page" in body and "Only project admins" in body
    assert_enforcing_csp(response)


@override_settings(ROOT_URLCONF=__name__)
def test_500_is_the_styled_page() -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/boom/")
    body = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in body and "studio/base.css" in body
    assert "RuntimeError" not in body and "a bug" not in body


def test_every_page_links_the_favicon(client: Client, labeler) -> None:
    client.force_login(labeler)
    body = client.get("/projects/").content.decode()
    assert 'rel="icon" href="/static/studio/favicon.svg"' in body
    assert finders.find("studio/favicon.svg")


def test_api_docs_are_swagger_ui_from_the_sidecar_without_inline_code(
    client: Client, labeler
) -> None:
    client.force_login(labeler)
    response = client.get("/api/docs/")
    body = response.content.decode()
    assert response.status_code == 200
    assert_enforcing_csp(response)
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in body
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert "<style" not in body
    assert "<script>" not in body  # every script has a src
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in script.content.decode()


def test_nav_links_the_api_docs(client: Client, labeler) -> None:
    client.force_login(labeler)
    assert 'href="/api/docs/"' in client.get("/projects/").content.decode()


class _Process:
    def __init__(self, cmd: list[str], **kwargs: Any) -> None:
        self.cmd, self.kwargs = cmd, kwargs

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


def test_demo_web_server_runs_with_debug_off_and_serves_static(monkeypatch) -> None:
    started: list[_Process] = []

    def popen(cmd: list[str], **kwargs: Any) -> _Process:
        started.append(_Process(cmd, **kwargs))
        return started[-1]

    def interrupted(processes: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo.subprocess, "Popen", popen)
    monkeypatch.setattr(demo, "watch", interrupted)
    handlers = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        demo.Command().serve(port=8765)
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    web = next(p for p in started if "runserver" in p.cmd)
    assert web.kwargs["env"]["DJANGO_DEBUG"] == "false"
    assert "--insecure" in web.cmd
