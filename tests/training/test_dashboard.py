"""The round dashboard and playground pages, and the JSON endpoints their scripts call."""

import json
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.factories import (
    MembershipFactory,
    MetricPointFactory,
    ModelVersionFactory,
    RankingFactory,
    RankingTaskFactory,
    RoundFactory,
    TrainingRunFactory,
)

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _config(response, element_id: str) -> dict:
    html = response.content.decode()
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html)
    assert match, f"no json_script #{element_id}"
    return json.loads(match.group(1))


def test_an_admin_sees_the_dashboard_with_an_enforcing_csp(project, project_admin) -> None:
    response = _client(project_admin).get(f"/projects/{project.slug}/rounds/")

    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    html = response.content.decode()
    assert "training/dashboard.js" in html and 'type="module"' in html
    assert "<script>" not in html  # no inline script: data only via json_script
    assert " style=" not in html
    config = _config(response, "dashboard-config")
    assert config["urls"]["rounds"] == f"/api/v1/projects/{project.slug}/rounds/"
    assert config["urls"]["metrics"] == "/api/v1/runs/{id}/metrics/"
    assert f"/api/v1/projects/{project.slug}/comparisons/?format=jsonl" in html


def test_a_labeler_is_refused_and_a_stranger_sees_nothing(project, labeler, outsider) -> None:
    assert _client(labeler).get(f"/projects/{project.slug}/rounds/").status_code == 403
    assert _client(outsider).get(f"/projects/{project.slug}/rounds/").status_code == 404
    anonymous = Client().get(f"/projects/{project.slug}/rounds/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_the_playground_page_is_for_members(project, labeler, outsider) -> None:
    response = _client(labeler).get(f"/projects/{project.slug}/playground/")
    assert response.status_code == 200
    assert "Content-Security-Policy" in response
    config = _config(response, "playground-config")
    assert config["requestUrl"] == f"/api/v1/projects/{project.slug}/playground/"
    assert config["replyUrl"] == "/api/v1/playground/{id}/"
    assert "base model (tiny)" in response.content.decode()  # no version row created by a GET
    assert _client(outsider).get(f"/projects/{project.slug}/playground/").status_code == 404


def test_model_text_is_escaped_in_the_config(project, project_admin) -> None:
    project.name = "</script><script>alert(1)</script>"
    project.save()
    html = _client(project_admin).get(f"/projects/{project.slug}/playground/").content.decode()
    assert "<script>alert(1)" not in html


def test_the_endpoints_the_dashboard_polls_answer(project, project_admin, admin_client_api) -> None:
    policy = ModelVersionFactory(project=project, is_current=True)
    round_ = RoundFactory(project=project, number=1, sampling_policy=policy)
    run = TrainingRunFactory(project=project, round=round_, kind="rm", status="running")
    for step in (1, 2, 3):
        MetricPointFactory(run=run, step=step)
    labeler = MembershipFactory(project=project).user
    RankingFactory(task=RankingTaskFactory(project=project, round=round_), labeler=labeler)
    config = _config(
        _client(project_admin).get(f"/projects/{project.slug}/rounds/"), "dashboard-config"
    )

    rounds = admin_client_api.get(config["urls"]["rounds"]).json()
    assert rounds[0]["number"] == 1 and rounds[0]["runs"][0]["id"] == run.pk
    models = admin_client_api.get(config["urls"]["models"]).json()
    assert models[0]["is_current"] is True
    stats = admin_client_api.get(config["urls"]["stats"]).json()
    assert stats["labelers"][0]["rankings"] == 1
    assert stats["rounds"] == [{"round": 1, "rankings": 1, "comparisons": 0}]
    metrics_url = config["urls"]["metrics"].replace("{id}", str(run.pk))
    series = admin_client_api.get(metrics_url, {"after": 1}).json()["series"]
    assert series["step"] == [2, 3]
    assert series["rm/loss"] == pytest.approx([1 / 2, 1 / 3])


def test_labeler_stats_are_for_admins_only(project, labeler_client, outsider) -> None:
    from rest_framework.test import APIClient

    url = f"/api/v1/projects/{project.slug}/labelers/stats/"
    assert labeler_client.get(url).status_code == 403
    stranger = APIClient()
    stranger.force_authenticate(outsider)
    assert stranger.get(url).status_code == 404


def test_the_export_links_answer(project, project_admin, admin_client_api) -> None:
    task = RankingTaskFactory(project=project)
    RankingFactory(task=task, labeler=MembershipFactory(project=project).user)
    html = _client(project_admin).get(f"/projects/{project.slug}/rounds/").content.decode()
    links = re.findall(r'href="(/api/v1/projects/[^"]+)"', html)
    assert len(links) == 3
    for link in links:
        response = admin_client_api.get(link.replace("&amp;", "&"))
        assert response.status_code == 200, link


def test_labeler_stats_take_a_fixed_number_of_queries(
    project, admin_client_api, django_assert_max_num_queries
):
    url = f"/api/v1/projects/{project.slug}/labelers/stats/"
    users = [MembershipFactory(project=project).user for _ in range(3)]
    for _ in range(4):
        task = RankingTaskFactory(project=project)
        for user in users:
            RankingFactory(task=task, labeler=user)
    with django_assert_max_num_queries(8):
        stats = admin_client_api.get(url).json()
    assert stats["project"]["rankings"] == 12
    assert stats["project"]["kendall_w"] == pytest.approx(1.0)  # identical default orders


def _rounds_with_work(project, labelers, number: int):
    """Round `number` of `project` with its models, runs with metrics, and rankings."""
    policy = ModelVersionFactory(project=project, kind="ppo")
    reward = ModelVersionFactory(project=project, kind="rm", role="reward", parent=policy)
    round_ = RoundFactory(
        project=project, number=number, sampling_policy=policy, reward_model=reward, policy=policy
    )
    for kind in ("generate", "rm", "ppo"):
        run = TrainingRunFactory(project=project, round=round_, kind=kind, status="succeeded")
        for _ in range(3):
            MetricPointFactory(run=run)
    task = RankingTaskFactory(project=project, round=round_)
    for user in labelers:
        RankingFactory(task=task, labeler=user)
    return round_


def test_the_dashboard_and_its_endpoints_take_the_same_queries_for_one_round_or_many(
    project, project_admin, admin_client_api
):
    """The page and every JSON endpoint its script polls: the query count is fixed."""
    labelers = [MembershipFactory(project=project).user for _ in range(2)]
    first = _rounds_with_work(project, labelers, 1)
    run = first.runs.get(kind="rm")
    page = _client(project_admin)
    config = _config(page.get(f"/projects/{project.slug}/rounds/"), "dashboard-config")
    urls = {
        "page": f"/projects/{project.slug}/rounds/",
        "rounds": config["urls"]["rounds"],
        "models": config["urls"]["models"],
        "stats": config["urls"]["stats"],
        "round": config["urls"]["round"].replace("{id}", str(first.pk)),
        "metrics": config["urls"]["metrics"].replace("{id}", str(run.pk)),
    }

    def count() -> dict[str, int]:
        counts = {}
        for name, url in urls.items():
            client = page if name == "page" else admin_client_api
            with CaptureQueriesContext(connection) as queries:
                assert client.get(url).status_code == 200, url
            counts[name] = len(queries.captured_queries)
        return counts

    one = count()
    more = [MembershipFactory(project=project).user for _ in range(3)]
    for number in (2, 3, 4):
        _rounds_with_work(project, labelers + more, number)
    many = count()
    assert many == one
    assert max(one.values()) <= 6, one
