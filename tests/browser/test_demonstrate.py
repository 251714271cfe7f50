"""Pages besides ranking, in a real browser: login, project list, demonstrations, logout."""

import pytest

from labeling.models import Demonstration
from tests.browser.conftest import log_in
from tests.factories import PromptFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_demonstration_is_written_and_stored(page, project, labeler) -> None:
    first = PromptFactory(project=project, text="Explain <em>tides</em> to a child.")
    second = PromptFactory(project=project, text="Name three prime numbers.")
    log_in(page, labeler.username)
    page.click(f"a[href='/projects/{project.slug}/demonstrate/']")
    assert page.text_content(".message__content") == first.text
    page.fill("textarea[name=response]", "The Moon pulls the sea toward it.")
    page.click("button:has-text('Save demonstration')")
    page.wait_for_selector(".message-flash--success")
    demo = Demonstration.objects.get()
    assert (demo.prompt_id, demo.author_id) == (first.pk, labeler.pk)
    assert demo.response == "The Moon pulls the sea toward it."
    assert page.text_content(".message__content") == second.text  # the next prompt


def test_another_prompt_link(page, project, labeler) -> None:
    PromptFactory(project=project, text="First prompt")
    PromptFactory(project=project, text="Second prompt")
    log_in(page, labeler.username)
    page.goto(f"/projects/{project.slug}/demonstrate/")
    page.click("text=Another prompt")
    assert page.text_content(".message__content") == "Second prompt"
    assert not Demonstration.objects.exists()


def test_login_error_and_logout(page, labeler) -> None:
    page.goto("/projects/")
    page.wait_for_url("**/accounts/login/?next=/projects/")
    page.fill("input[name=username]", labeler.username)
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert "correct username and password" in page.text_content(".form-errors")
    log_in(page, labeler.username)
    page.click("button:has-text('Log out')")
    page.wait_for_url("**/accounts/login/")
    page.goto("/projects/")
    page.wait_for_url("**/accounts/login/?next=/projects/")


def test_empty_ranking_queue(page, project, labeler) -> None:
    log_in(page, labeler.username)
    page.click(f"a[href='/projects/{project.slug}/label/']")
    page.wait_for_selector("#empty:not([hidden])")
    assert page.locator("#task").is_hidden() and page.locator("#tray").is_hidden()
