"""Hostile JSON against every door that takes JSON (issue 9, item 5): the API doors answer
400 with `{"detail", "errors"}` naming the JSON path (or `line` for a file), the CLI
imports fail with one line naming the line, and nothing is saved. Bodies over the size
limit get a JSON 413, bodies that are not JSON a JSON 415."""

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from rest_framework.test import APIClient

from labeling.models import Demonstration, Project, Prompt, Ranking, RankingTask
from labeling.services.leasing import task_lease_next
from tests.factories import MembershipFactory, ProjectFactory, RankingTaskFactory
from tests.security.corpus import BENIGN_JSON, HOLE, HOSTILE_JSON, Hostile, splice
from training.models import PlaygroundReply

API = "/api/v1"
TRAINING_CONFIG = {"ppo": {"steps": 2}}


@dataclass
class World:
    project: Project
    admin: object
    task: RankingTask
    response_ids: list[int]

    def saved_anything(self) -> bool:
        project = Project.objects.get(pk=self.project.pk)
        return (
            Prompt.objects.filter(project=project).exclude(pk=self.task.prompt_id).exists()
            or Demonstration.objects.exists()
            or PlaygroundReply.objects.exists()
            or Ranking.objects.exists()
            or project.training_config != TRAINING_CONFIG
        )


@pytest.fixture
def world(db) -> World:
    project = ProjectFactory(k=2, training_config=TRAINING_CONFIG)
    admin = MembershipFactory(project=project, role="admin").user
    task = RankingTaskFactory(project=project)
    assert task_lease_next(project=project, labeler=admin) is not None
    ids = list(task.responses.order_by("position").values_list("id", flat=True))
    return World(project, admin, task, ids)


@pytest.fixture
def client(world: World) -> APIClient:
    client = APIClient()
    client.force_authenticate(world.admin)
    return client


# Each JSON door: (method, url, body template with HOLE where the hostile value goes).
JsonDoor = Callable[[World], tuple[str, str, str]]
JSON_DOORS: dict[str, JsonDoor] = {
    "prompt_import_list": lambda w: (
        "post",
        f"{API}/projects/{w.project.slug}/prompts/import",
        f'[{{"prompt": "One"}}, {{"prompt": "Two", "metadata": {{"note": "{HOLE}"}}}}]',
    ),
    "demonstration": lambda w: (
        "post",
        f"{API}/projects/{w.project.slug}/demonstrations/",
        f'{{"prompt": "Name three birds.", "response": "{HOLE}"}}',
    ),
    "playground": lambda w: (
        "post",
        f"{API}/projects/{w.project.slug}/playground/",
        f'{{"prompt": [{{"role": "user", "content": "{HOLE}"}}]}}',
    ),
    "ranking": lambda w: (
        "post",
        f"{API}/tasks/{w.task.pk}/rankings/",
        f'{{"order": {json.dumps([[i] for i in w.response_ids])}, "time_spent_ms": 5, '
        f'"flags": {{"{w.response_ids[0]}": ["{HOLE}"]}}}}',
    ),
    "training_config": lambda w: (
        "patch",
        f"{API}/projects/{w.project.slug}/",
        f'{{"training_config": {{"ppo": {{"steps": 2, "lr": "{HOLE}"}}}}}}',
    ),
}


def _send(client: APIClient, method: str, url: str, body: str | bytes, **extra: object):
    content_type = extra.pop("content_type", "application/json")
    return getattr(client, method)(url, body, content_type=content_type, **extra)


def _refused(response, status: int = 400) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.mark.parametrize("door", list(JSON_DOORS))
@pytest.mark.parametrize("hostile", HOSTILE_JSON, ids=lambda h: h.name)
def test_every_json_door_refuses_hostile_values(world, client, door, hostile: Hostile) -> None:
    method, url, template = JSON_DOORS[door](world)
    body = _refused(_send(client, method, url, splice(template, hostile.json)))
    [(path, [reason])] = body["errors"].items()
    assert path.startswith("$") and body["detail"] == f"{path}: {reason}"
    assert not world.saved_anything()


@pytest.mark.parametrize("door", ["prompt_import_list", "demonstration", "playground"])
@pytest.mark.parametrize("benign", BENIGN_JSON[:3])
def test_json_doors_take_legitimate_unicode(world, client, door, benign) -> None:
    method, url, template = JSON_DOORS[door](world)
    response = _send(client, method, url, splice(template, benign))
    assert response.status_code in (201, 202), response.content


@pytest.mark.parametrize("hostile", HOSTILE_JSON, ids=lambda h: h.name)
def test_prompt_file_import_refuses_hostile_values_with_the_line(world, client, hostile) -> None:
    line = splice(f'{{"prompt": "Two", "metadata": {{"note": "{HOLE}"}}}}', hostile.json)
    upload = SimpleUploadedFile("p.jsonl", f'{{"prompt": "One"}}\n{line}\n'.encode())
    url = f"{API}/projects/{world.project.slug}/prompts/import"
    body = _refused(client.post(url, {"file": upload}, format="multipart"))
    assert body["line"] == 2 and body["detail"].startswith("line 2: $")
    assert not world.saved_anything()


def test_csv_import_refuses_a_nul(world, client) -> None:
    upload = SimpleUploadedFile("p.csv", b"prompt,note\nfine,ok\nbad,a\x00b\n")
    url = f"{API}/projects/{world.project.slug}/prompts/import"
    body = _refused(client.post(url, {"file": upload}, format="multipart"))
    assert body["line"] == 3 and "$.note: contains a NUL character" in body["detail"]
    assert not world.saved_anything()


@pytest.mark.parametrize("door", list(JSON_DOORS))
@pytest.mark.parametrize("form", ["urlencoded", "multipart"])
def test_bodies_that_are_not_json_are_refused(world, client, door, form) -> None:
    method, url, _ = JSON_DOORS[door](world)
    fields = {"prompt": "[" * 50_000, "response": "a\x00b", "training_config": "NaN"}
    if form == "urlencoded":
        response = _send(
            client, method, url, "prompt=a%00b", content_type="application/x-www-form-urlencoded"
        )
    else:
        response = getattr(client, method)(url, fields, format="multipart")
    if door == "prompt_import_list":  # the import takes multipart (for its file) only
        _refused(response, 415 if form == "urlencoded" else 400)
    else:
        _refused(response, 415)
    assert not world.saved_anything()


@pytest.mark.parametrize("door", list(JSON_DOORS))
def test_a_body_over_the_limit_is_a_json_413(world, client, door, settings) -> None:
    settings.RLHF_IMPORT_MAX_BYTES = 1000
    method, url, template = JSON_DOORS[door](world)
    body = splice(template, json.dumps("x" * 2000))
    response = _send(client, method, url, body)
    assert "bytes; the limit is 1000 bytes" in _refused(response, 413)["detail"]
    assert not world.saved_anything()


def test_djangos_own_size_check_answers_the_same_json_413(world, settings) -> None:
    """With a session (the browser), Django reads the body itself and checks its own limit."""
    assert django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE == django_settings.RLHF_IMPORT_MAX_BYTES
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = settings.RLHF_IMPORT_MAX_BYTES = 1000
    browser = Client()
    browser.force_login(world.admin)
    method, url, template = JSON_DOORS["ranking"](world)
    body = splice(template, json.dumps("x" * 2000))
    response = getattr(browser, method)(url, body, content_type="application/json")
    assert "1000 bytes" in _refused(response, 413)["detail"]
    assert not world.saved_anything()


def test_an_uploaded_file_over_the_limit_is_a_413(world, client, settings) -> None:
    settings.RLHF_IMPORT_MAX_BYTES = 1000
    upload = SimpleUploadedFile("p.jsonl", b'{"prompt": "%s"}\n' % (b"x" * 1000))
    url = f"{API}/projects/{world.project.slug}/prompts/import"
    response = client.post(url, {"file": upload}, format="multipart")
    assert "the limit is 1000 bytes" in _refused(response, 413)["detail"]
    assert not world.saved_anything()


# --- The CLI imports ------------------------------------------------------------------------

CLI_LINES = {
    "import_prompts": ('{"prompt": "One"}', f'{{"prompt": "Two", "metadata": {{"n": "{HOLE}"}}}}'),
    "import_responses": (
        '{"prompt": "One", "responses": ["a", "b"]}',
        f'{{"prompt": "Two", "responses": ["a", "{HOLE}"]}}',
    ),
    "import_preferences": (
        '{"prompt": "One", "chosen": "a", "rejected": "b"}',
        f'{{"prompt": "Two", "chosen": "a", "rejected": "{HOLE}"}}',
    ),
}


def _import(command: str, project: Project, path: Path) -> str:
    out = io.StringIO()
    call_command(command, project.slug, str(path), stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _nothing_imported(project: Project) -> bool:
    return not Prompt.objects.filter(project=project).exists()


@pytest.mark.parametrize("command", list(CLI_LINES))
@pytest.mark.parametrize("hostile", HOSTILE_JSON, ids=lambda h: h.name)
def test_cli_imports_refuse_hostile_lines_with_the_line(db, tmp_path, command, hostile) -> None:
    project = ProjectFactory()
    good, bad = CLI_LINES[command]
    path = tmp_path / "data.jsonl"
    path.write_text(f"{good}\n{splice(bad, hostile.json)}\n", encoding="utf-8")
    with pytest.raises(CommandError) as refused:
        _import(command, project, path)
    message = str(refused.value)
    assert message.startswith("line 2: $") and "\n" not in message
    assert _nothing_imported(project)
    path.write_text(f"{good}\n", encoding="utf-8")  # the same command takes the good line
    assert "Imported 1" in _import(command, project, path)


def test_cli_prompt_import_refuses_a_nul_in_csv(db, tmp_path) -> None:
    project = ProjectFactory()
    path = tmp_path / "p.csv"
    path.write_bytes(b"prompt\nfine\na\x00b\n")
    with pytest.raises(CommandError, match=r"^line 3: \$\.prompt: contains a NUL character"):
        _import("import_prompts", project, path)
    assert _nothing_imported(project)


def test_cli_preference_import_refuses_a_nul_in_parquet(db, tmp_path) -> None:
    project = ProjectFactory()
    path = tmp_path / "p.parquet"
    rows = [
        {"prompt": "P", "chosen": "a", "rejected": "b"},
        {"prompt": "Q", "chosen": "a\x00", "rejected": "b"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(CommandError, match=r"^line 2: \$\.chosen: contains a NUL character"):
        _import("import_preferences", project, path)
    assert _nothing_imported(project)


def test_benign_corpus_parses(db, tmp_path) -> None:
    project = ProjectFactory()
    path = tmp_path / "p.jsonl"
    lines = [f'{{"prompt": "P{i}", "x": {value}}}' for i, value in enumerate(BENIGN_JSON)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert f"Imported {len(BENIGN_JSON)} prompts" in _import("import_prompts", project, path)
