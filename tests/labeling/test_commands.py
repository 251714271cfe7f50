"""The labeling management commands, called as an operator would (call_command)."""

import io
import json
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import HttpRequest
from rest_framework.authtoken.models import Token

from labeling.models import Comparison, Membership, Project, Prompt, Ranking, RankingTask
from labeling.services.leasing import task_lease_next
from labeling.services.rankings import ranking_submit
from tests.factories import RankingTaskFactory, RoundFactory

User = get_user_model()


def run(*args: object) -> str:
    out = io.StringIO()
    call_command(*[str(a) for a in args], stdout=out, stderr=io.StringIO())
    return out.getvalue()


def write(path: Path, *rows: object) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# --- Projects, members, tokens ---------------------------------------------------------


@pytest.mark.django_db
def test_create_project() -> None:
    out = run("create_project", "support-bot", "--name", "Support", "--k", 5, "--overlap", 3)
    project = Project.objects.get(slug="support-bot")
    assert (project.name, project.k, project.overlap, project.base_model) == (
        "Support",
        5,
        3,
        "default",
    )
    assert "Created project support-bot" in out
    run("create_project", "tiny-one", "--base-model", "tiny")
    assert Project.objects.get(slug="tiny-one").base_model == "tiny"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["project-0", "--k", 12], "k:"),
        (["project-0", "--k", 1], "k:"),
        (["project-0", "--overlap", 0], "overlap:"),
        (["not a slug"], "slug:"),
        (["project-0", "--base-model", "/no/such/model"], "base_model:"),
    ],
)
def test_create_project_errors(args: list, fragment: str) -> None:
    with pytest.raises(CommandError, match=fragment):
        run("create_project", *args)
    assert not Project.objects.exists()


def test_create_project_twice_is_an_error(project) -> None:
    with pytest.raises(CommandError, match="slug"):
        run("create_project", project.slug)


def test_add_member_creates_the_user(project) -> None:
    out = run(
        "add_member", project.slug, "carol", "--role", "labeler", "--password", "s3cret-Pass-99"
    )
    membership = Membership.objects.get(project=project, user__username="carol")
    assert membership.role == "labeler"
    assert membership.pseudonym in out
    assert (
        authenticate(HttpRequest(), username="carol", password="s3cret-Pass-99") == membership.user
    )
    run("add_member", project.slug, "carol", "--role", "admin")
    membership.refresh_from_db()
    assert membership.role == "admin"
    assert Membership.objects.filter(user__username="carol").count() == 1


def test_add_member_without_password_cannot_log_in(project) -> None:
    out = run("add_member", project.slug, "dave", "--role", "labeler")
    assert not User.objects.get(username="dave").has_usable_password()
    assert "--password" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["nope", "erin", "--role", "labeler"], "No project 'nope'"),
        (["{slug}", "erin", "--role", "owner"], "invalid choice"),
        (["{slug}", "erin"], "--role"),
        (["{slug}", "erin", "--role", "labeler", "--password", "123"], "password:"),
        (["{slug}", "bad name!", "--role", "labeler"], "username:"),
    ],
)
def test_add_member_errors(project, args: list, fragment: str) -> None:
    with pytest.raises(CommandError, match=fragment):
        run("add_member", *[a.format(slug=project.slug) for a in args])
    assert not User.objects.filter(username__in=["erin", "bad name!"]).exists()


def test_create_api_token_prints_and_revokes(labeler) -> None:
    key = run("create_api_token", labeler.username).strip()
    assert Token.objects.get(user=labeler).key == key
    assert run("create_api_token", labeler.username).strip() == key
    run("create_api_token", labeler.username, "--revoke")
    assert not Token.objects.filter(user=labeler).exists()
    assert run("create_api_token", labeler.username).strip() != key
    with pytest.raises(CommandError, match="no active user 'ghost'"):
        run("create_api_token", "ghost")


# --- Imports ---------------------------------------------------------------------------


def test_import_prompts_jsonl_and_csv(project, tmp_path) -> None:
    chat = [{"role": "user", "content": "Hi <b>there</b>"}]
    jsonl = write(tmp_path / "p.jsonl", {"prompt": "one"}, {"prompt": chat}, {"prompt": "one"})
    out = run("import_prompts", project.slug, jsonl)
    assert "Imported 2 prompts" in out
    assert "1 duplicates skipped (lines 3)" in out
    csv_file = tmp_path / "p.csv"
    csv_file.write_bytes('\ufeffprompt\none\n"two, with comma"\n'.encode())
    out = run("import_prompts", project.slug, csv_file)
    assert "Imported 1 prompts" in out
    assert [p.as_input for p in Prompt.objects.order_by("id")] == ["one", chat, "two, with comma"]
    assert Prompt.objects.get(text="two, with comma").source == "p.csv"


def test_import_prompts_bad_line_saves_nothing(project, tmp_path) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": "b"}\n\n{"prompt": 5}\n')
    with pytest.raises(CommandError, match="line 4: 'prompt' must be a string or a chat list"):
        run("import_prompts", project.slug, bad)
    assert not Prompt.objects.exists()


def test_import_errors(project, tmp_path, settings) -> None:
    with pytest.raises(CommandError, match="No such file"):
        run("import_prompts", project.slug, tmp_path / "missing.jsonl")
    with pytest.raises(CommandError, match="No project"):
        run("import_prompts", "nope", write(tmp_path / "p.jsonl", {"prompt": "a"}))
    settings.RLHF_IMPORT_MAX_BYTES = 10
    with pytest.raises(CommandError, match="import limit is 10 bytes"):
        run("import_prompts", project.slug, write(tmp_path / "p.jsonl", {"prompt": "abcdef"}))
    assert not Prompt.objects.exists()


def test_import_responses(project, tmp_path) -> None:
    generated = {
        "prompt": "Q",
        "responses": [
            {"id": "a", "text": "x", "token_count": 1, "finished": True, "seed": 1},
            {"id": "b", "text": "y", "token_count": 2, "finished": False, "seed": 2},
        ],
    }
    path = write(tmp_path / "r.jsonl", generated, {"prompt": "R", "responses": ["1", "2", "3"]})
    assert "Imported 2 ranking tasks" in run("import_responses", project.slug, path)
    assert RankingTask.objects.filter(project=project, status="open").count() == 2
    bad = write(tmp_path / "bad.jsonl", generated, {"prompt": "S", "responses": ["only"]})
    with pytest.raises(CommandError, match="line 2: 'responses' must be a list of 2 to 9"):
        run("import_responses", project.slug, bad)
    assert RankingTask.objects.count() == 2


def test_import_preferences_all_formats(project, tmp_path) -> None:
    path = write(
        tmp_path / "prefs.jsonl",
        {"prompt": "P", "chosen": "good", "rejected": "bad"},
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.",
        },
        {
            "prompt": "K",
            "responses": [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}, {"id": 3, "text": "c"}],
            "order": [[3], [1, 2]],
            "labeler": "ann",
        },
    )
    assert "Imported 3 ranked prompts" in run("import_preferences", project.slug, path)
    assert Comparison.objects.filter(project=project).count() == 1 + 1 + 2
    hh = Prompt.objects.get(text="\n\nHuman: Hi\n\nAssistant:")
    task = RankingTask.objects.get(prompt=hh)
    assert list(task.responses.values_list("text", flat=True)) == [
        " Hello! How can I help?",
        " Go away.",
    ]
    assert Ranking.objects.filter(source="imported", labeler=None).count() == 3
    assert "3 duplicates skipped" in run("import_preferences", project.slug, path)


def test_import_preferences_bad_line(project, tmp_path) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        json.dumps({"prompt": "P", "chosen": "a", "rejected": "b"})
        + "\n\n"
        + json.dumps({"prompt": "P", "chosen": "a"})
        + "\n"
    )
    with pytest.raises(CommandError, match="line 3: unknown format"):
        run("import_preferences", project.slug, path)
    assert not RankingTask.objects.exists()


# --- Export ----------------------------------------------------------------------------


@pytest.fixture
def ranked(project, labeler):
    """Two ranked tasks: one in round 1 (6 pairs), one without a round (3 pairs, one tie)."""
    first = RankingTaskFactory(project=project, round=RoundFactory(project=project, number=1))
    second = RankingTaskFactory(project=project)
    for task, groups in ((first, [[0], [1], [2], [3]]), (second, [[0], [1, 2, 3]])):
        task_lease_next(project=project, labeler=labeler)
        ids = list(task.responses.order_by("position").values_list("id", flat=True))
        order = [[ids[i] for i in group] for group in groups]
        ranking_submit(task=task, labeler=labeler, order=order, flags=None, time_spent_ms=9)
    return project


def test_export_comparisons_jsonl(ranked, tmp_path, capfd) -> None:
    rows = [json.loads(line) for line in run("export_comparisons", ranked.slug).splitlines()]
    assert len(rows) == 9
    assert {"prompt", "chosen", "rejected", "labeler", "round"} <= set(rows[0])
    run("export_comparisons", ranked.slug, "--round", 1, "-o", tmp_path / "r1.jsonl")
    only_round = (tmp_path / "r1.jsonl").read_text().splitlines()
    assert len(only_round) == 6
    assert {json.loads(line)["round"] for line in only_round} == {1}
    assert not list(tmp_path.glob(".*partial"))


def test_export_comparisons_parquet(ranked, tmp_path) -> None:
    import pyarrow.parquet as pq

    run("export_comparisons", ranked.slug, "--format", "parquet", "-o", tmp_path / "c.parquet")
    table = pq.read_table(tmp_path / "c.parquet")
    assert table.num_rows == 9
    assert {"prompt", "chosen", "rejected"} <= set(table.column_names)
    with pytest.raises(CommandError, match="-o FILE"):
        run("export_comparisons", ranked.slug, "--format", "parquet")
    with pytest.raises(CommandError, match="No project"):
        run("export_comparisons", "nope")
