"""The settings page in a real browser: the nav link, a refused training value shown on its
field, a saved change, the guidelines preview, members and moderation decisions; and the
API docs linked from the nav render Swagger UI with no CSP violation."""

import os
from pathlib import Path

import pytest

from labeling.models import Membership, Prompt
from tests.browser.conftest import log_in
from tests.factories import PromptFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOT_DIR = os.environ.get("RLHF_SCREENSHOT_DIR")


def _open_settings(page, project) -> None:
    page.goto(f"/projects/{project.slug}/label/")
    page.click(".subnav >> text=Settings")
    page.wait_for_url(f"**/projects/{project.slug}/settings/")


def test_training_field_error_then_save(page, project, project_admin) -> None:
    log_in(page, project_admin.username)
    _open_settings(page, project)
    page.click("#training summary:has-text('rm')")
    page.fill("input[name='rm.lr']", "5")
    page.fill("input[name='rm.batch_size']", "16")
    page.click("text=Save training settings")
    error = page.locator("[data-field='rm.lr'] .field__error")
    assert "<=" in error.text_content()
    assert page.locator("[data-field='rm.lr']").is_visible()  # its section is open
    project.refresh_from_db()
    assert project.training_config == {}
    if SCREENSHOT_DIR:
        page.locator("[data-field='rm.lr']").scroll_into_view_if_needed()
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "settings-error.png"))
    page.fill("input[name='rm.lr']", "0.00002")
    page.click("text=Save training settings")
    page.wait_for_selector(".message-flash--success")
    project.refresh_from_db()
    assert project.training_config == {"rm": {"lr": 2e-05, "batch_size": 16}}


def test_guidelines_preview_k_and_members(page, project, project_admin, make_user) -> None:
    make_user(username="zoe")
    log_in(page, project_admin.username)
    _open_settings(page, project)
    page.fill("textarea[name=guidelines]", "Prefer **short** answers.\n\n<script>x</script>")
    page.click("button[name=preview]")
    preview = page.locator("#guidelines-preview")
    assert preview.locator("strong").text_content() == "short"
    assert preview.locator("script").count() == 0
    page.fill("input[name=k]", "3")
    page.click("text=Save labeling settings")
    page.wait_for_selector(".message-flash--success")
    project.refresh_from_db()
    assert project.k == 3 and project.guidelines.startswith("Prefer **short**")

    page.fill("#member-add input[name=username]", "zoe")
    page.select_option("#member-add select[name=role]", "labeler")
    page.click("text=Add member")
    row = page.locator("tr[data-member=zoe]")
    row.wait_for()
    row.locator("select[name=role]").select_option("admin")
    row.locator("text=Change role").click()
    page.wait_for_selector(".message-flash--success")
    assert Membership.objects.get(project=project, user__username="zoe").role == "admin"
    page.locator("tr[data-member=zoe] >> text=Remove").click()
    page.wait_for_selector(".message-flash--success")
    assert not Membership.objects.filter(project=project, user__username="zoe").exists()


def test_moderation_rules_flag_then_release(page, project, project_admin) -> None:
    prompt = PromptFactory(project=project, text="Say something <b>forbidden</b>")
    log_in(page, project_admin.username)
    _open_settings(page, project)
    page.fill("#moderation textarea[name=words]", "forbidden")
    page.click("text=Save moderation rules")
    row = page.locator(f"tr[data-prompt='{prompt.pk}']")
    row.wait_for()
    assert row.locator(".settings-prompt").text_content() == "Say something <b>forbidden</b>"
    if SCREENSHOT_DIR:
        row.scroll_into_view_if_needed()
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "settings-moderation.png"))
    row.locator("text=Release").click()
    page.wait_for_selector(".message-flash--success")
    prompt.refresh_from_db()
    assert prompt.moderation == Prompt.Moderation.RELEASED


def test_api_docs_render_swagger_ui_without_csp_violations(page, project, labeler) -> None:
    log_in(page, labeler.username)
    page.click(".topnav >> text=API")
    page.wait_for_url("**/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "RLHF Studio API" in page.text_content(".swagger-ui .info .title")
    page.wait_for_selector(".opblock")  # the operations are listed
