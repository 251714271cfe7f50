"""Every door reads the formats the same way (issue 10: one rule in one place).

Prompts: `manage.py import_prompts`, the REST import (`POST .../prompts/import`) and the
ML core's reader (`training.ml.data.read_prompts`, behind `python -m training.ml generate
/ppo --data`). Preferences: `manage.py import_preferences` and `train-rm`'s reader
(`training.ml.preferences.read_preferences`). Each corpus entry (tests/formats/corpus.py)
is taken by all of them, or refused by all of them with the same "line N: reason".
And what `python -m training.ml generate` writes, `manage.py import_responses` takes.
"""

import io
import json
from pathlib import Path

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from formats.errors import FormatError
from labeling.models import Project, Prompt, Ranking, RankingTask, Response
from tests.factories import MembershipFactory, ProjectFactory
from tests.formats.corpus import PREFERENCES, PROMPT_CSV, PROMPTS, Entry
from training.ml import cli as ml_cli
from training.ml import loading
from training.ml.data import read_prompts
from training.ml.preferences import read_preferences

FIRST_PROMPT = b'{"prompt": "first"}\n\n'  # a blank line still counts: the entry is on line 3
FIRST_PAIR = b'{"prompt": "P", "chosen": "a", "rejected": "b"}\n\n'
ACCEPTED = "accepted"


def _cli(command: str, project: Project, path: Path) -> str:
    try:
        call_command(command, project.slug, str(path), stdout=io.StringIO())
    except CommandError as error:
        return str(error)
    return ACCEPTED


def _rest(project: Project, data: bytes, filename: str) -> str:
    client = APIClient()
    client.force_authenticate(MembershipFactory(project=project, role="admin").user)
    upload = SimpleUploadedFile(filename, data)
    response = client.post(
        f"/api/v1/projects/{project.slug}/prompts/import", {"file": upload}, format="multipart"
    )
    if response.status_code == 201:
        return ACCEPTED
    assert response.status_code == 400, response.content[:300]
    return str(response.json()["detail"])


def _ml(read, path: Path) -> str:
    try:
        read(path)
    except FormatError as error:
        assert str(error) == f"{path}, {error.located}"  # the CLI's "error: ..." line
        return error.located
    return ACCEPTED


def _expect(outcomes: dict[str, str], refusal: str | None) -> None:
    first = next(iter(outcomes.values()))
    assert all(outcome == first for outcome in outcomes.values()), outcomes
    if refusal is None:
        assert first == ACCEPTED
    else:
        assert refusal in first, first


@pytest.mark.parametrize("entry", PROMPTS, ids=lambda e: e.name)
def test_prompt_doors_agree(db, tmp_path: Path, entry: Entry) -> None:
    data = FIRST_PROMPT + entry.raw + b"\n"
    path = tmp_path / "p.jsonl"
    path.write_bytes(data)
    cli_project, rest_project = ProjectFactory(), ProjectFactory()
    outcomes = {
        "import_prompts": _cli("import_prompts", cli_project, path),
        "rest": _rest(rest_project, data, "p.jsonl"),
        "read_prompts": _ml(read_prompts, path),
    }
    _expect(outcomes, entry.refusal)
    if entry.accepted:  # and all read the same prompts
        for project in (cli_project, rest_project):
            stored = Prompt.objects.filter(project=project).order_by("id")
            assert [p.as_input for p in stored] == read_prompts(path)
    else:
        assert outcomes["rest"].startswith("line 3: ")
        assert not Prompt.objects.exists()


@pytest.mark.parametrize(("name", "text", "refusal"), PROMPT_CSV, ids=lambda v: str(v)[:20])
def test_prompt_doors_agree_on_csv(db, tmp_path: Path, name: str, text: str, refusal) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(text.encode())
    outcomes = {
        "import_prompts": _cli("import_prompts", ProjectFactory(), path),
        "rest": _rest(ProjectFactory(), text.encode(), "p.csv"),
        "read_prompts": _ml(read_prompts, path),
    }
    _expect(outcomes, refusal)


@pytest.mark.parametrize("entry", PREFERENCES, ids=lambda e: e.name)
def test_preference_doors_agree(db, tmp_path: Path, entry: Entry) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(FIRST_PAIR + entry.raw + b"\n")
    project = ProjectFactory()
    outcomes = {
        "import_preferences": _cli("import_preferences", project, path),
        "read_preferences": _ml(read_preferences, path),
    }
    _expect(outcomes, entry.refusal)
    if not entry.accepted:
        assert outcomes["import_preferences"].startswith("line 3: ")
        assert not RankingTask.objects.exists()
        return
    # The same examples: the responses of each imported task, in order, as train-rm reads
    # them ("all unacceptable" rankings are imported as such, and not trained on).
    tasks = RankingTask.objects.filter(project=project).order_by("id")
    imported = [
        list(task.responses.order_by("position").values_list("text", flat=True)) for task in tasks
    ]
    unacceptable = [Ranking.objects.get(task=task).all_unacceptable for task in tasks]
    trained = [example.responses for example in read_preferences(path)]
    assert [
        texts for texts, skip in zip(imported, unacceptable, strict=True) if not skip
    ] == trained


def test_an_all_unacceptable_ranking_is_imported_without_pairs(db, tmp_path: Path) -> None:
    [entry] = [e for e in PREFERENCES if e.name == "kwise_all_unacceptable"]
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(entry.raw + b"\n")
    project = ProjectFactory()
    assert _cli("import_preferences", project, path) == ACCEPTED
    ranking = Ranking.objects.get(task__project=project)
    assert ranking.all_unacceptable and not ranking.comparisons.exists()
    assert _cli("import_preferences", project, path) == ACCEPTED  # a duplicate the second time
    assert Ranking.objects.filter(task__project=project).count() == 1
    with pytest.raises(FormatError, match="no preference records"):
        read_preferences(path)  # nothing to train on


NUL_BYTE_TOKEN = "Ā"  # byte-level BPE's symbol for the byte 0x00


def test_import_responses_takes_what_generate_wrote(
    db, tmp_path: Path, monkeypatch, capsys
) -> None:
    """A policy that emits the byte token decoding to NUL: `generate` writes U+FFFD (and
    counts it), so `import_responses` takes the file instead of refusing a NUL."""
    load = loading.load_causal_lm

    def load_nul_policy(spec, **kwargs):
        model, tokenizer = load(spec, **kwargs)
        token = tokenizer.convert_tokens_to_ids(NUL_BYTE_TOKEN)
        assert isinstance(token, int) and tokenizer.decode([token]) == "\x00"
        bias = torch.zeros(model.config.vocab_size)
        bias[token] = 1e4
        model.lm_head.bias = torch.nn.Parameter(bias)
        return model, tokenizer

    monkeypatch.setattr(loading, "load_causal_lm", load_nul_policy)
    prompts, out = tmp_path / "prompts.jsonl", tmp_path / "samples.jsonl"
    prompts.write_text('{"prompt": "Name a fruit."}\n')
    argv = ["generate", "--model", "tiny", "--data", str(prompts), "--out", str(out)]
    argv += ["--k", "2", "--max-new-tokens", "3", "--seed", "1", "--device", "cpu"]
    assert ml_cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["text/replaced_chars"] == 6  # 2 responses x 3 tokens
    project = ProjectFactory()
    assert _cli("import_responses", project, out) == ACCEPTED
    texts = Response.objects.filter(task__project=project).values_list("text", flat=True)
    assert list(texts) == ["\ufffd" * 3] * 2
