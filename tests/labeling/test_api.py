"""The labeling REST API (PRODUCT.md section 3): happy paths, 400s with {"detail"}, 204, 409,
403 for labelers on admin routes, token auth, and exports readable by `datasets`."""

import io
import json

import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.http import HttpRequest
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from labeling.models import Assignment, Demonstration, Membership, Project, Prompt, Ranking
from labeling.services.projects import api_token_create, api_token_revoke
from tests.factories import (
    DemonstrationFactory,
    MembershipFactory,
    ProjectFactory,
    PromptFactory,
    RankingTaskFactory,
    RoundFactory,
    UserFactory,
)

API = "/api/v1"
COMPARISON_KEYS = {
    "prompt", "chosen", "rejected", "prompt_id", "chosen_id", "rejected_id", "ranking_id",
    "labeler", "round", "policy_version", "rejected_policy_version", "margin", "created_at",
}  # fmt: skip
RANKING_KEYS = {
    "prompt", "responses", "order", "labeler", "flags", "all_unacceptable", "round", "task_id",
    "prompt_id", "time_spent_ms", "ranking_id", "method", "n_rankings", "created_at",
}  # fmt: skip


def client_for(user: object) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def lines(response: object) -> list[dict]:
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return [json.loads(line) for line in body.splitlines()]


def rank_next(client: APIClient, project: Project, order: list[list[int]] | None = None) -> dict:
    """Lease the next task through the API and rank it (positions -> ids); the ranking."""
    task = client.get(f"{API}/projects/{project.slug}/tasks/next/").json()
    ids = [r["id"] for r in task["responses"]]
    order = order or [[i] for i in range(len(ids))]
    body = {"order": [[ids[p] for p in group] for group in order], "time_spent_ms": 900}
    response = client.post(f"{API}/tasks/{task['id']}/rankings/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def assert_error(response: object, status: int) -> dict:
    assert response.status_code == status, response.content  # type: ignore[attr-defined]
    data = response.json()  # type: ignore[attr-defined]
    assert isinstance(data["detail"], str) and data["detail"]
    return data


# --- Projects --------------------------------------------------------------------------------


def test_project_list_shows_only_my_projects(labeler_client, project) -> None:
    ProjectFactory()
    response = labeler_client.get(f"{API}/projects/")
    assert response.status_code == 200
    assert [p["slug"] for p in response.json()] == [project.slug]
    assert {"slug", "name", "k", "overlap", "guidelines", "base_model"} <= set(response.json()[0])


def test_staff_create_a_project_and_become_its_admin(db) -> None:
    staff = UserFactory(is_staff=True)
    body = {"slug": "chat", "name": "Chat", "k": 3, "overlap": 2, "guidelines": "Be *kind*.",
            "base_model": "tiny"}  # fmt: skip
    response = client_for(staff).post(f"{API}/projects/", body, format="json")
    assert response.status_code == 201
    assert {key: response.json()[key] for key in body} == body
    assert Membership.objects.get(project__slug="chat", user=staff).role == "admin"


@pytest.mark.parametrize(
    "body",
    [
        {"slug": "x", "k": 12},
        {"slug": "not a slug"},
        {"slug": "x", "base_model": "/no/such/model"},
        {"slug": "x", "colour": "red"},
        {},
    ],
)
def test_project_create_validation(db, body) -> None:
    response = client_for(UserFactory(is_staff=True)).post(f"{API}/projects/", body, format="json")
    assert_error(response, 400)
    assert not Project.objects.filter(slug="x").exists()


def test_project_create_needs_staff(labeler_client) -> None:
    assert_error(labeler_client.post(f"{API}/projects/", {"slug": "mine"}, format="json"), 403)


def test_duplicate_slug_is_a_400(project) -> None:
    client = client_for(UserFactory(is_staff=True))
    assert_error(client.post(f"{API}/projects/", {"slug": project.slug}, format="json"), 400)


def test_project_detail_and_patch(labeler_client, admin_client_api, project) -> None:
    url = f"{API}/projects/{project.slug}/"
    assert labeler_client.get(url).json()["slug"] == project.slug
    response = admin_client_api.patch(url, {"overlap": 3, "name": "Renamed"}, format="json")
    assert response.status_code == 200
    assert (response.json()["overlap"], response.json()["name"]) == (3, "Renamed")
    project.refresh_from_db()
    assert project.overlap == 3
    assert_error(labeler_client.patch(url, {"overlap": 2}, format="json"), 403)
    assert_error(admin_client_api.patch(url, {"k": 12}, format="json"), 400)
    assert_error(admin_client_api.patch(url, {"slug": "other"}, format="json"), 400)
    assert_error(admin_client_api.patch(url, {"flag_vocabulary": ["a", "a"]}, format="json"), 400)


# --- Members ---------------------------------------------------------------------------------


def test_members_list_hides_pseudonyms_from_labelers(
    labeler_client, admin_client_api, labeler, project
) -> None:
    url = f"{API}/projects/{project.slug}/members/"
    as_labeler = {m["username"]: m for m in labeler_client.get(url).json()}
    assert as_labeler[labeler.username]["role"] == "labeler"
    assert {m["pseudonym"] for m in as_labeler.values()} == {None}
    as_admin = {m["username"]: m for m in admin_client_api.get(url).json()}
    pseudonym = Membership.objects.get(project=project, user=labeler).pseudonym
    assert as_admin[labeler.username]["pseudonym"] == pseudonym


def test_admin_adds_a_member(admin_client_api, labeler_client, project) -> None:
    url = f"{API}/projects/{project.slug}/members/"
    response = admin_client_api.post(url, {"username": "bob", "role": "labeler"}, format="json")
    assert response.status_code == 201
    assert response.json()["username"] == "bob" and response.json()["role"] == "labeler"
    assert Membership.objects.filter(project=project, user__username="bob").exists()
    assert_error(
        admin_client_api.post(url, {"username": "bob", "role": "boss"}, format="json"), 400
    )
    assert_error(admin_client_api.post(url, {"role": "labeler"}, format="json"), 400)
    assert_error(labeler_client.post(url, {"username": "eve", "role": "admin"}, format="json"), 403)
    assert not Membership.objects.filter(user__username="eve").exists()


# --- Prompts ---------------------------------------------------------------------------------


def test_import_prompts_as_a_json_list(admin_client_api, project) -> None:
    body = [{"prompt": "Name three birds."}, {"prompt": [{"role": "user", "content": "Hi"}]},
            "Name three birds."]  # fmt: skip
    response = admin_client_api.post(
        f"{API}/projects/{project.slug}/prompts/import", body, format="json"
    )
    assert response.status_code == 201
    assert response.json() == {"created": 2, "duplicates": 1, "duplicate_lines": [3], "flagged": 0}
    assert Prompt.objects.filter(project=project, chat__isnull=False).count() == 1


@pytest.mark.parametrize("suffix", ["import", "import/"])
def test_import_prompts_from_a_file(admin_client_api, project, suffix) -> None:
    upload = SimpleUploadedFile("p.csv", b"prompt,split\nHello?,eval\n<b>Bold</b>,train\n")
    url = f"{API}/projects/{project.slug}/prompts/{suffix}"
    response = admin_client_api.post(url, {"file": upload}, format="multipart")
    assert response.status_code == 201 and response.json()["created"] == 2
    assert Prompt.objects.get(project=project, split="eval").text == "Hello?"
    assert Prompt.objects.filter(text="<b>Bold</b>").exists()  # stored as text


def test_import_is_all_or_nothing_with_the_line(admin_client_api, project) -> None:
    data = b'{"prompt": "fine"}\n{"prompt": "also fine"}\n{"prompt": 7}\n'
    upload = SimpleUploadedFile("p.jsonl", data)
    url = f"{API}/projects/{project.slug}/prompts/import"
    body = assert_error(admin_client_api.post(url, {"file": upload}, format="multipart"), 400)
    assert body["line"] == 3 and "line 3" in body["detail"]
    body = assert_error(
        admin_client_api.post(url, [{"prompt": "ok"}, {"text": "no"}], format="json"), 400
    )
    assert body["line"] == 2
    assert not Prompt.objects.filter(project=project).exists()
    assert_error(admin_client_api.post(url, {"prompt": "not a list"}, format="json"), 400)


def test_import_size_limit_and_admin_only(
    admin_client_api, labeler_client, project, settings
) -> None:
    settings.RLHF_IMPORT_MAX_BYTES = 10
    upload = SimpleUploadedFile("p.jsonl", b'{"prompt": "too long for the limit"}\n')
    url = f"{API}/projects/{project.slug}/prompts/import"
    assert (
        "limit"
        in assert_error(admin_client_api.post(url, {"file": upload}, format="multipart"), 413)[
            "detail"
        ]
    )
    big = [{"prompt": "x" * 1000}] * 100  # ~100 KB, more than the limit plus multipart slack
    assert "limit" in assert_error(admin_client_api.post(url, big, format="json"), 413)["detail"]
    assert not Prompt.objects.exists()
    assert_error(labeler_client.post(url, [{"prompt": "x"}], format="json"), 403)


def test_prompt_list_is_cursor_paginated_and_filtered(labeler_client, project) -> None:
    for i in range(5):
        PromptFactory(project=project, split="eval" if i == 4 else "train", source=f"s{i % 2}")
    PromptFactory()  # another project's prompt
    url = f"{API}/projects/{project.slug}/prompts/"
    first = labeler_client.get(url, {"page_size": 3}).json()
    assert len(first["results"]) == 3 and first["next"]
    second = labeler_client.get(first["next"]).json()
    assert len(second["results"]) == 2 and second["next"] is None
    assert [p["split"] for p in labeler_client.get(url, {"split": "eval"}).json()["results"]] == [
        "eval"
    ]
    assert len(labeler_client.get(url, {"source": "s1"}).json()["results"]) == 2
    assert_error(labeler_client.get(url, {"ordering": "text"}), 400)
    assert_error(labeler_client.get(url, {"split": "test"}), 400)


# --- Labeling --------------------------------------------------------------------------------


def test_next_task_leases_and_returns_the_same_task(labeler_client, project) -> None:
    task = RankingTaskFactory(project=project)
    url = f"{API}/projects/{project.slug}/tasks/next/"
    response = labeler_client.get(url)
    assert response.status_code == 200
    data = response.json()
    assert {
        "id",
        "prompt",
        "responses",
        "expires_at",
        "chat",
        "k",
        "flag_vocabulary",
        "guidelines",
        "counts",
        "round",
    } <= set(data)
    assert data["id"] == task.pk and data["k"] == 4 and data["prompt"] == task.prompt.text
    assert [r["id"] for r in data["responses"]] == list(
        task.responses.order_by("position").values_list("id", flat=True)
    )
    assert set(data["responses"][0]) == {"id", "text", "duplicate_of"}
    assert data["counts"]["remaining"] == 1
    assert labeler_client.get(url).json()["id"] == task.pk  # the lease holds


def test_next_and_submit_queries_do_not_grow_with_the_queue(labeler_client, project) -> None:
    """The hot path of the ranking screen: a constant number of queries per task."""

    def next_and_submit() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as fetched:
            task = labeler_client.get(f"{API}/projects/{project.slug}/tasks/next/").json()
        body = {"order": [[r["id"]] for r in task["responses"]], "time_spent_ms": 5}
        with CaptureQueriesContext(connection) as submitted:
            response = labeler_client.post(
                f"{API}/tasks/{task['id']}/rankings/", body, format="json"
            )
        assert response.status_code == 201
        return len(fetched.captured_queries), len(submitted.captured_queries)

    for _ in range(3):
        RankingTaskFactory(project=project)
    small = next_and_submit()
    # The budget (PostgreSQL takes one more, the labeler's lock): a regression that adds
    # queries to the hot path fails here, not in production's p95.
    assert small[0] <= 12 and small[1] <= 11, small
    for _ in range(30):
        RankingTaskFactory(project=project)
    assert next_and_submit() == small


def test_next_task_with_chat_context_and_round(labeler_client, project) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = PromptFactory(project=project, chat=chat, text="Hi")
    RankingTaskFactory(
        project=project, prompt=prompt, round=RoundFactory(project=project, number=2)
    )
    data = labeler_client.get(f"{API}/projects/{project.slug}/tasks/next/").json()
    assert (data["chat"], data["round"]) == (chat, 2)


def test_next_task_is_204_when_none(labeler_client, project) -> None:
    response = labeler_client.get(f"{API}/projects/{project.slug}/tasks/next/")
    assert response.status_code == 204 and not response.content


def test_submit_a_ranking_with_ties_and_flags(labeler_client, labeler, project) -> None:
    RankingTaskFactory(project=project)
    task = labeler_client.get(f"{API}/projects/{project.slug}/tasks/next/").json()
    a, b, c, d = (r["id"] for r in task["responses"])
    body = {"order": [[d], [c], [a, b]], "flags": {str(a): ["harmful"]}, "time_spent_ms": 41000}
    response = labeler_client.post(f"{API}/tasks/{task['id']}/rankings/", body, format="json")
    assert response.status_code == 201
    data = response.json()
    assert (data["order"], data["flags"], data["time_spent_ms"]) == (
        [[d], [c], [a, b]],
        {str(a): ["harmful"]},
        41000,
    )
    assert Ranking.objects.get(pk=data["id"]).comparisons.count() == 5
    again = labeler_client.post(f"{API}/tasks/{task['id']}/rankings/", body, format="json")
    assert_error(again, 409)
    assert Ranking.objects.filter(labeler=labeler).count() == 1


def _all(ids: list[int]) -> list[list[int]]:
    return [[i] for i in ids]


INVALID_RANKINGS = {
    "order is not a list": lambda ids: {"order": "[[1]]", "time_spent_ms": 1},
    "responses missing": lambda ids: {"order": [[ids[0]], [ids[1]]], "time_spent_ms": 1},
    "a response twice": lambda ids: {"order": [[ids[0]], *_all(ids)], "time_spent_ms": 1},
    "another task's response": lambda ids: {"order": [*_all(ids[:-1]), [10**9]]},
    "an empty tie group": lambda ids: {"order": [[], *_all(ids)], "time_spent_ms": 1},
    "a flag not in the vocabulary": lambda ids: {
        "order": _all(ids),
        "flags": {str(ids[0]): ["rude"]},
        "time_spent_ms": 1,
    },
    "negative time": lambda ids: {"order": _all(ids), "time_spent_ms": -5},
    "an unknown key": lambda ids: {"order": _all(ids), "time_spent_ms": 1, "comment": "x"},
}


@pytest.mark.parametrize("case", INVALID_RANKINGS)
def test_invalid_rankings_are_400_and_store_nothing(labeler_client, project, case) -> None:
    RankingTaskFactory(project=project)
    task = labeler_client.get(f"{API}/projects/{project.slug}/tasks/next/").json()
    body = INVALID_RANKINGS[case]([r["id"] for r in task["responses"]])
    response = labeler_client.post(f"{API}/tasks/{task['id']}/rankings/", body, format="json")
    assert_error(response, 400)
    assert not Ranking.objects.exists()


def test_all_unacceptable_needs_no_order(labeler_client, project) -> None:
    RankingTaskFactory(project=project)
    task = labeler_client.get(f"{API}/projects/{project.slug}/tasks/next/").json()
    body = {"order": [], "all_unacceptable": True, "time_spent_ms": 10}
    response = labeler_client.post(f"{API}/tasks/{task['id']}/rankings/", body, format="json")
    assert response.status_code == 201 and response.json()["all_unacceptable"] is True
    assert not Ranking.objects.get(pk=response.json()["id"]).comparisons.exists()


def test_ranking_without_a_lease_is_409(labeler_client, project) -> None:
    task = RankingTaskFactory(project=project)
    ids = list(task.responses.values_list("id", flat=True))
    body = {"order": [[i] for i in ids], "time_spent_ms": 1}
    assert_error(labeler_client.post(f"{API}/tasks/{task.pk}/rankings/", body, format="json"), 409)


def test_skip(labeler_client, labeler, project) -> None:
    RankingTaskFactory(project=project)
    task = labeler_client.get(f"{API}/projects/{project.slug}/tasks/next/").json()
    response = labeler_client.post(f"{API}/tasks/{task['id']}/skip/")
    assert response.status_code == 204
    assert Assignment.objects.get(task_id=task["id"], labeler=labeler).status == "skipped"
    assert labeler_client.get(f"{API}/projects/{project.slug}/tasks/next/").status_code == 204


def test_demonstrations(labeler_client, admin_client_api, labeler, project) -> None:
    prompt = PromptFactory(project=project)
    url = f"{API}/projects/{project.slug}/demonstrations/"
    response = labeler_client.post(
        url, {"prompt_id": prompt.pk, "response": "The ideal."}, format="json"
    )
    assert response.status_code == 201
    assert (response.json()["prompt_id"], response.json()["response"]) == (prompt.pk, "The ideal.")
    chat = [{"role": "user", "content": "Hi there"}]
    response = labeler_client.post(url, {"prompt": chat, "response": "Hello!"}, format="json")
    assert response.status_code == 201 and response.json()["chat"] == chat
    DemonstrationFactory(project=project, prompt=prompt)  # someone else's
    mine = labeler_client.get(url).json()["results"]
    assert {d["author"] for d in mine} == {labeler.username} and len(mine) == 2
    assert len(admin_client_api.get(url).json()["results"]) == 3
    foreign = PromptFactory()
    assert_error(
        labeler_client.post(url, {"prompt_id": foreign.pk, "response": "x"}, format="json"), 400
    )
    assert_error(labeler_client.post(url, {"response": "no prompt"}, format="json"), 400)
    assert_error(labeler_client.post(url, {"prompt_id": prompt.pk}, format="json"), 400)
    assert Demonstration.objects.count() == 3


# --- Exports ---------------------------------------------------------------------------------


@pytest.fixture
def ranked(labeler_client, project) -> Project:
    """Three tasks ranked by the labeler, one in round 2: 3 x 6 comparisons."""
    round_ = RoundFactory(project=project, number=2)
    RankingTaskFactory(project=project)
    RankingTaskFactory(project=project, round=round_)
    RankingTaskFactory(project=project)
    for _ in range(3):
        rank_next(labeler_client, project)
    return project


def test_comparisons_jsonl_is_trl_rows_readable_by_datasets(
    admin_client_api, ranked, labeler
) -> None:
    response = admin_client_api.get(f"{API}/projects/{ranked.slug}/comparisons/?format=jsonl")
    assert response.status_code == 200 and response["Content-Type"] == "application/jsonl"
    assert response.streaming
    rows = lines(response)
    assert len(rows) == 18 and all(set(row) == COMPARISON_KEYS for row in rows)
    pseudonym = Membership.objects.get(project=ranked, user=labeler).pseudonym
    assert {row["labeler"] for row in rows} == {pseudonym}
    # `datasets.load_dataset("json", ...)` reads JSON Lines with pyarrow: one table.
    body = "\n".join(json.dumps(row) for row in rows).encode()
    assert pa_json.read_json(io.BytesIO(body)).num_rows == 18
    round_rows = lines(
        admin_client_api.get(f"{API}/projects/{ranked.slug}/comparisons/?format=jsonl&round=2")
    )
    assert len(round_rows) == 6 and {row["round"] for row in round_rows} == {2}


def test_comparisons_json_pages_hold_the_same_rows(admin_client_api, ranked) -> None:
    url = f"{API}/projects/{ranked.slug}/comparisons/"
    streamed = lines(admin_client_api.get(url, {"format": "jsonl"}))
    page = admin_client_api.get(url, {"page_size": 10}).json()
    rows = page["results"]
    rows += admin_client_api.get(page["next"]).json()["results"]
    assert rows == streamed


def test_comparisons_parquet(admin_client_api, ranked) -> None:
    response = admin_client_api.get(f"{API}/projects/{ranked.slug}/comparisons/?format=parquet")
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    table = pq.read_table(io.BytesIO(b"".join(response.streaming_content)))
    assert table.num_rows == 18 and set(table.column_names) == COMPARISON_KEYS


def test_export_query_count_is_constant(admin_client_api, labeler_client, ranked) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            lines(admin_client_api.get(f"{API}/projects/{ranked.slug}/comparisons/?format=jsonl"))
        return len(ctx.captured_queries)

    before = queries()
    for _ in range(3):
        RankingTaskFactory(project=ranked)
        rank_next(labeler_client, ranked)
    assert queries() == before


@pytest.mark.parametrize("query", ["format=csv", "round=zero", "round=0", "sort=id"])
def test_export_parameters_are_checked(admin_client_api, project, query) -> None:
    assert_error(admin_client_api.get(f"{API}/projects/{project.slug}/comparisons/?{query}"), 400)


def test_exports_are_for_admins(labeler_client, ranked) -> None:
    for what in ("comparisons", "rankings"):
        assert_error(labeler_client.get(f"{API}/projects/{ranked.slug}/{what}/?format=jsonl"), 403)


def test_rankings_export_raw_and_consensus(admin_client_api, project) -> None:
    project.overlap = 2
    project.save()
    RankingTaskFactory(project=project)
    users = [MembershipFactory(project=project).user for _ in range(2)]
    for user in users:
        rank_next(client_for(user), project, [[0], [1], [2], [3]])
    url = f"{API}/projects/{project.slug}/rankings/"
    raw = lines(admin_client_api.get(url, {"format": "jsonl"}))
    assert [row["method"] for row in raw] == ["raw", "raw"]
    assert all(set(row) == RANKING_KEYS for row in raw)
    merged = lines(admin_client_api.get(url, {"format": "jsonl", "consensus": "ranked_pairs"}))
    assert [row["method"] for row in merged] == ["raw", "raw", "ranked_pairs"]
    assert merged[2]["order"] == raw[0]["order"] and merged[2]["n_rankings"] == 2
    page = admin_client_api.get(url, {"consensus": "bradley_terry"}).json()
    assert [row["method"] for row in page["results"]] == ["raw", "raw", "bradley_terry"]
    assert_error(admin_client_api.get(url, {"consensus": "kemeny"}), 400)


def test_rankings_json_pages_keep_a_task_together(admin_client_api, project) -> None:
    project.overlap = 2
    project.save()
    for _ in range(3):
        RankingTaskFactory(project=project)
    for user in [MembershipFactory(project=project).user for _ in range(2)]:
        client = client_for(user)
        for _ in range(3):
            rank_next(client, project)
    url = f"{API}/projects/{project.slug}/rankings/"
    first = admin_client_api.get(url, {"page_size": 2, "consensus": "borda"}).json()
    assert len(first["results"]) == 6  # two tasks: 2 raw + 1 merged each
    second = admin_client_api.get(first["next"]).json()
    assert len(second["results"]) == 3 and second["next"] is None
    task_ids = [row["task_id"] for row in first["results"] + second["results"]]
    assert len(set(task_ids)) == 3


# --- Authentication --------------------------------------------------------------------------


def test_token_auth_and_revocation(labeler, project) -> None:
    client = APIClient()
    assert_error(client.get(f"{API}/projects/"), 401)
    key = api_token_create(username=labeler.username)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(f"{API}/projects/").status_code == 200
    api_token_revoke(username=labeler.username)
    response = client.get(f"{API}/projects/")
    assert_error(response, 401)
    assert response["WWW-Authenticate"] == "Token"


def test_session_auth_needs_the_csrf_token(labeler, project) -> None:
    RankingTaskFactory(project=project)
    client = APIClient(enforce_csrf_checks=True)
    client.login(request=HttpRequest(), username=labeler.username, password="pw-for-tests")
    task = client.get(f"{API}/projects/{project.slug}/tasks/next/").json()
    response = client.post(f"{API}/tasks/{task['id']}/skip/")
    assert_error(response, 403)
    assert "CSRF" in response.json()["detail"]


@pytest.mark.django_db
def test_next_task_exclude_prefetches_another_task(project, labeler_client) -> None:
    from tests.factories import RankingTaskFactory

    RankingTaskFactory.create_batch(2, project=project)
    url = f"/api/v1/projects/{project.slug}/tasks/next/"
    first = labeler_client.get(url).json()
    second = labeler_client.get(url, {"exclude": first["id"]}).json()
    assert second["id"] != first["id"]
    assert labeler_client.get(url).json()["id"] == first["id"]
