"""The playground's waiting message says what the server says: queued (no worker yet), then
generating (a worker is sampling, with the time it has taken), then the reply."""

import json

import pytest

from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_waiting_message_follows_the_replys_status(page, project, labeler) -> None:
    states = iter(["queued", "running", "running", "done"])
    seen: list[str] = []

    def request(route) -> None:
        route.fulfill(status=202, json={"id": 41, "status": "queued"})

    def reply(route) -> None:
        status = next(states, "done")
        body = {
            "id": 41,
            "status": status,
            "prompt": "Hi",
            "text": "Hello there." if status == "done" else "",
            "finished": True,
            "policy_version": "base-v1",
            "error": "",
            "rating": None,
            "created_at": "2026-01-01T00:00:00Z",
            "started_at": "2026-01-01T00:00:00Z" if status != "queued" else None,
        }
        route.fulfill(status=200, body=json.dumps(body), content_type="application/json")

    page.route(f"**/api/v1/projects/{project.slug}/playground/", request)
    page.route("**/api/v1/playground/41/", reply)
    log_in(page, labeler.username)
    page.goto(f"/projects/{project.slug}/playground/")
    page.fill("#message", "Hi")
    page.press("#message", "Enter")
    label = page.locator("[data-role=waiting]")
    for expected in ("Queued for a worker", "Generating (up to"):
        page.wait_for_function(
            "text => document.querySelector('[data-role=waiting]')?.textContent.startsWith(text)",
            arg=expected,
        )
        seen.append(label.text_content())
    page.wait_for_selector(".turn--assistant .turn__tools")
    assert page.text_content(".turn--assistant .turn__text") == "Hello there."
    assert f"up to {project.max_new_tokens} tokens" in seen[1]
