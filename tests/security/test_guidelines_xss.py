"""Guidelines links cannot smuggle a script URL past the scheme filter with HTML character
references (a browser decodes `&#106;` to `j` before it reads the scheme), and oversized
guidelines are refused at every door."""

import time

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from core.exceptions import ApplicationError
from frontend.guidelines import guidelines_html
from labeling.services.projects import project_create, project_update

ENTITY_PAYLOADS = [
    "[a](&#106;avascript:alert(1))",
    "[a](&#x6A;avascript:alert(1))",
    "[a](&#X6a;avascript:alert(1))",
    "[a](&#0000106;avascript:alert(1))",
    "[a](javascript&colon;alert(1))",
    "[a](java&#9;script:alert(1))",
    "[a](java&Tab;script:alert(1))",
    "[a](&#x20;javascript:alert(1))",
    "[a](jav&#x09;ascript&#58;alert(1))",
    "[a]: &#106;avascript:alert(1)\n\n[b][a]",
    "![i](&#106;avascript:alert(1))",
    "<&#106;avascript:alert(1)>",
    "[a](data&colon;text/html;base64,PHNjcmlwdD4=)",
]


def _decoded_urls(html: str) -> list[str]:
    """Every href/src value as a browser reads it (character references decoded)."""
    from html.parser import HTMLParser

    urls: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            urls.extend(v or "" for k, v in attrs if k in {"href", "src"})

    Collect(convert_charrefs=True).feed(html)
    return urls


@pytest.mark.parametrize("source", ENTITY_PAYLOADS)
def test_entity_encoded_script_urls_leave_no_href(source: str) -> None:
    html = str(guidelines_html(source))
    for url in _decoded_urls(html):
        squeezed = "".join(ch for ch in url if ch.isprintable() and not ch.isspace()).lower()
        assert not squeezed.startswith(("javascript:", "data:", "vbscript:")), html
    assert "href=" not in html and "src=" not in html, html


def test_allowed_markup_survives_the_sanitiser() -> None:
    html = guidelines_html(
        "## Rank\n\n3. first\n4. second\n\n> note\n\n    code\n\n---\n\n"
        '[docs](https://example.org/?a=1&b=2 "Docs") ![logo](/static/logo.png)'
    )
    assert "<h2>Rank</h2>" in html and '<ol start="3">' in html
    assert "<blockquote>" in html and "<pre><code>code" in html and "<hr>" in html
    assert 'href="https://example.org/?a=1&amp;b=2"' in html and 'title="Docs"' in html
    assert '<img alt="logo" src="/static/logo.png">' in html


FIVE_MB = "x" * (5 * 2**20)


def test_a_5_mb_body_is_a_quick_400_from_create_and_update(
    admin_client_api, project_admin, project
) -> None:
    project_admin.is_staff = True  # staff may create projects
    project_admin.save()
    started = time.monotonic()
    created = admin_client_api.post(
        "/api/v1/projects/", {"slug": "huge", "guidelines": FIVE_MB}, format="json"
    )
    updated = admin_client_api.patch(
        f"/api/v1/projects/{project.slug}/", {"guidelines": FIVE_MB}, format="json"
    )
    assert time.monotonic() - started < 5
    for response in (created, updated):
        assert response.status_code == 400
        assert response.json()["detail"].startswith("guidelines: at most 65536 bytes")
    project.refresh_from_db()
    assert len(project.guidelines) < 1000


@override_settings(RLHF_GUIDELINES_MAX_BYTES=8)
def test_the_limit_counts_utf8_bytes_in_the_services_and_the_model(project) -> None:
    project_update(project=project, guidelines="12345678")
    with pytest.raises(ApplicationError, match="guidelines: at most 8 bytes"):
        project_update(project=project, guidelines="ééééé")  # 5 characters, 10 bytes
    with pytest.raises(ApplicationError, match="guidelines: at most 8 bytes"):
        project_create(slug="long-rules", guidelines="123456789")
    project.guidelines = "123456789"
    with pytest.raises(ValidationError):
        project.full_clean()  # what the Django admin's form runs
