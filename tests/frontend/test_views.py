"""HTML pages: login required, scoped to the user's projects, demonstrations stored."""

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from labeling.models import Demonstration
from labeling.services.leasing import task_lease_next, task_skip
from tests.factories import (
    DemonstrationFactory,
    MembershipFactory,
    ProjectFactory,
    PromptFactory,
    RankingTaskFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def labeler_web(labeler) -> Client:
    client = Client()
    client.force_login(labeler)
    return client


def test_root_redirects_to_projects(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/projects/"


@pytest.mark.parametrize(
    "path", ["/projects/", "/projects/{slug}/label/", "/projects/{slug}/demonstrate/"]
)
def test_pages_need_login(client: Client, project, path: str) -> None:
    response = client.get(path.format(slug=project.slug))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_login_page_has_django_form_fields(client: Client) -> None:
    body = client.get("/accounts/login/").content.decode()
    assert 'name="username"' in body and 'name="password"' in body


def test_login_then_projects(client: Client, labeler, project) -> None:
    response = client.post(
        "/accounts/login/", {"username": labeler.username, "password": "pw-for-tests"}
    )
    assert response.status_code == 302 and response["Location"] == "/projects/"
    assert project.name in client.get("/projects/").content.decode()


def test_project_list_shows_own_projects_with_role_and_counts(
    labeler_web, labeler, project
) -> None:
    other = ProjectFactory(name="Secret Other Project")
    MembershipFactory(project=other)  # someone else's project
    RankingTaskFactory(project=project)
    response = labeler_web.get("/projects/")
    body = response.content.decode()
    assert project.name in body
    assert other.name not in body
    assert "labeler" in body
    [row] = response.context["rows"]
    assert row.role == "labeler" and row.counts["remaining"] == 1


@pytest.mark.parametrize("page", ["project-label", "project-demonstrate"])
def test_project_pages_404_for_non_members(labeler_web, page: str) -> None:
    other = ProjectFactory()
    assert labeler_web.get(reverse(page, kwargs={"slug": other.slug})).status_code == 404


def test_label_page_passes_settings_through_json_script(labeler_web, labeler, project) -> None:
    response = labeler_web.get(reverse("project-label", kwargs={"slug": project.slug}))
    assert response.status_code == 200
    config = response.context["rank_config"]
    assert config["slug"] == project.slug and config["userId"] == labeler.pk
    assert config["flags"] == project.flag_vocabulary
    body = response.content.decode()
    assert '<script id="rank-config" type="application/json">' in body
    assert 'type="module" src="/static/labeling/rank.js"' in body


def test_guidelines_are_markdown_with_html_escaped(labeler_web, project) -> None:
    project.guidelines = "Be **kind**.\n\n<script>alert(1)</script> [x](javascript:alert(2))"
    project.save()
    body = labeler_web.get(reverse("project-label", kwargs={"slug": project.slug})).content.decode()
    assert "<strong>kind</strong>" in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert(1)" not in body
    assert "javascript:" not in body


def test_hostile_project_name_is_escaped(labeler_web, project) -> None:
    project.name = '<img src=x onerror="alert(1)">'
    project.save()
    body = labeler_web.get(reverse("project-label", kwargs={"slug": project.slug})).content.decode()
    assert "<img src=x" not in body
    assert "&lt;img src=x" in body


def test_demonstrate_shows_a_prompt_without_demonstration(labeler_web, project) -> None:
    done = PromptFactory(project=project, text="Already answered")
    DemonstrationFactory(project=project, prompt=done)
    todo = PromptFactory(project=project, text="Explain <b>tides</b>.")
    response = labeler_web.get(reverse("project-demonstrate", kwargs={"slug": project.slug}))
    assert response.context["prompt"] == todo
    body = response.content.decode()
    assert "Explain &lt;b&gt;tides&lt;/b&gt;." in body
    assert "Already answered" not in body


def test_demonstrate_skips_to_another_prompt_and_wraps(labeler_web, project) -> None:
    first, second = PromptFactory(project=project), PromptFactory(project=project)
    url = reverse("project-demonstrate", kwargs={"slug": project.slug})
    assert labeler_web.get(f"{url}?after={first.pk}").context["prompt"] == second
    assert labeler_web.get(f"{url}?after={second.pk}").context["prompt"] == first


def test_demonstrate_renders_chat_context(labeler_web, project) -> None:
    chat = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi <there>"},
    ]
    PromptFactory(project=project, text="Hi <there>", chat=chat)
    body = labeler_web.get(
        reverse("project-demonstrate", kwargs={"slug": project.slug})
    ).content.decode()
    assert "You are terse." in body and "Hi &lt;there&gt;" in body


def test_demonstrate_post_stores_and_moves_on(labeler_web, labeler, project) -> None:
    prompt = PromptFactory(project=project)
    url = reverse("project-demonstrate", kwargs={"slug": project.slug})
    response = labeler_web.post(url, {"prompt_id": prompt.pk, "response": "The ideal answer."})
    assert response.status_code == 302
    assert response["Location"] == f"{url}?after={prompt.pk}"
    demo = Demonstration.objects.get()
    assert (demo.prompt, demo.author, demo.response) == (prompt, labeler, "The ideal answer.")


def test_demonstrate_post_needs_csrf(labeler, project) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(labeler)
    prompt = PromptFactory(project=project)
    url = reverse("project-demonstrate", kwargs={"slug": project.slug})
    assert client.post(url, {"prompt_id": prompt.pk, "response": "x"}).status_code == 403
    assert not Demonstration.objects.exists()


def test_demonstrate_rejects_prompt_of_another_project(labeler_web, project) -> None:
    foreign = PromptFactory(project=ProjectFactory(), text="Foreign secret prompt")
    url = reverse("project-demonstrate", kwargs={"slug": project.slug})
    response = labeler_web.post(url, {"prompt_id": foreign.pk, "response": "x"})
    assert response.status_code == 200
    assert not Demonstration.objects.exists()
    body = response.content.decode()
    assert "Foreign secret prompt" not in body
    assert "no prompt" in body


def test_demonstrate_rejects_empty_answer(labeler_web, project) -> None:
    prompt = PromptFactory(project=project)
    url = reverse("project-demonstrate", kwargs={"slug": project.slug})
    response = labeler_web.post(url, {"prompt_id": prompt.pk, "response": "   "})
    assert response.status_code == 200
    assert response.context["prompt"] == prompt
    assert not Demonstration.objects.exists()


def test_rank_config_is_valid_json_even_with_hostile_flags(labeler_web, project) -> None:
    project.flag_vocabulary = ["</script><script>alert(1)</script>"]
    project.save()
    body = labeler_web.get(reverse("project-label", kwargs={"slug": project.slug})).content.decode()
    start = body.index('<script id="rank-config" type="application/json">')
    payload = body[start:].split(">", 1)[1].split("</script>", 1)[0]
    assert json.loads(payload)["flags"] == project.flag_vocabulary


def test_project_nav_links_rounds_for_admins_only(labeler_web, project, project_admin) -> None:
    url = reverse("project-label", kwargs={"slug": project.slug})
    rounds = reverse("project-rounds", kwargs={"slug": project.slug})
    playground = reverse("project-playground", kwargs={"slug": project.slug})
    body = labeler_web.get(url).content.decode()
    assert playground in body and rounds not in body
    admin = Client()
    admin.force_login(project_admin)
    assert rounds in admin.get(url).content.decode()


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries.captured_queries)


def _project_with_work(user, *, open_tasks: int, member: bool = True):
    """A project where `user` has skipped one task and holds a lease on another."""
    project = ProjectFactory()
    if member:
        MembershipFactory(project=project, user=user, role="labeler")
    tasks = [RankingTaskFactory(project=project) for _ in range(open_tasks)]
    task_skip(task=tasks[0], labeler=user)
    task_lease_next(project=project, labeler=user)
    return project


# Session, user, then the page's own reads (projects, memberships, two for the counters).
PROJECT_LIST_QUERIES = 6


@pytest.mark.parametrize("superuser", [False, True])
def test_the_project_list_takes_the_same_queries_for_one_project_or_many(superuser) -> None:
    user = UserFactory(is_superuser=superuser)
    client = Client()
    client.force_login(user)
    _project_with_work(user, open_tasks=2)
    one = _queries(client, "/projects/")
    for n in range(3, 7):
        _project_with_work(user, open_tasks=n, member=not superuser or n % 2 == 0)
    many = _queries(client, "/projects/")
    assert many == one <= PROJECT_LIST_QUERIES


def test_the_project_list_counts_and_roles_are_per_project() -> None:
    user = UserFactory(is_superuser=True)
    client = Client()
    client.force_login(user)
    member_of = _project_with_work(user, open_tasks=2)
    seen_as_superuser = _project_with_work(user, open_tasks=5, member=False)
    empty = ProjectFactory()
    rows = {row.project: row for row in client.get("/projects/").context["rows"]}
    assert rows[member_of].role == "labeler" and rows[seen_as_superuser].role == "superuser"
    assert rows[member_of].counts == {
        "done_today": 0,
        "done_total": 0,
        "skipped": 1,
        "remaining": 1,
    }
    assert rows[seen_as_superuser].counts["remaining"] == 4
    assert rows[empty].counts == {"done_today": 0, "done_total": 0, "skipped": 0, "remaining": 0}
