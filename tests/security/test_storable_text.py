"""Model text is hostile input too (issue 9, item 8): a policy that emits the byte token
decoding to NUL must not kill the round. Sampled responses and playground replies are
stored with NUL replaced by U+FFFD and the replacements counted; exports carry texts
the same way, so an export imports again."""

import io
import json

import pytest
import torch
from django.core.management import call_command
from django.db import connection

from labeling.models import Comparison, Prompt, Response
from labeling.services.leasing import task_lease_next
from labeling.services.rankings import ranking_submit
from tests.factories import MembershipFactory, ProjectFactory, PromptFactory, RankingTaskFactory
from training.ml import loading as ml_loading
from training.models import PlaygroundReply, TrainingRun
from training.services import playground, rounds

NUL_BYTE_TOKEN = "Ā"  # byte-level BPE's symbol for the byte 0x00


@pytest.fixture
def nul_policy(monkeypatch):
    """Every model the workers load is the `tiny` one with an lm_head bias that makes the
    token decoding to "\\x00" win every step (as a policy that learnt it would)."""
    load = ml_loading.load_causal_lm

    def load_nul_policy(spec, **kwargs):
        model, tokenizer = load(spec, **kwargs)
        token = tokenizer.convert_tokens_to_ids(NUL_BYTE_TOKEN)
        assert tokenizer.decode([token]) == "\x00"
        bias = torch.zeros(model.config.vocab_size, device=model.device)
        bias[token] = 1e4
        model.lm_head.bias = torch.nn.Parameter(bias)
        return model, tokenizer

    monkeypatch.setattr(ml_loading, "load_causal_lm", load_nul_policy)
    monkeypatch.setattr(playground, "_cached", {})  # never keep this model for other tests


@pytest.fixture
def tiny_project(db, settings, tmp_path):
    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    project = ProjectFactory(base_model="tiny", k=2, overlap=1, max_new_tokens=4)
    PromptFactory.create_batch(2, project=project)
    return project


@pytest.mark.postgres
@pytest.mark.slow
def test_a_round_whose_policy_emits_nul_reaches_labeling(
    tiny_project, nul_policy, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        round_ = rounds.round_start(project=tiny_project, num_prompts=2)
    round_.refresh_from_db()
    assert round_.stage == "labeling", round_.error
    texts = list(Response.objects.filter(task__round=round_).values_list("text", flat=True))
    assert texts == ["\ufffd" * 4] * 4  # 2 prompts x K=2, 4 tokens each
    run = TrainingRun.objects.get(round=round_, kind=TrainingRun.Kind.GENERATE)
    assert run.metrics["text/replaced_chars"] == 16
    assert "replaced 16" in run.logs


def test_a_playground_reply_that_is_all_nul_is_stored_replaced(
    tiny_project, nul_policy, django_capture_on_commit_callbacks
):
    user = MembershipFactory(project=tiny_project).user
    with django_capture_on_commit_callbacks(execute=True):
        reply = playground.playground_reply_request(project=tiny_project, user=user, prompt="Hi")
    reply = PlaygroundReply.objects.get(pk=reply.pk)
    assert (reply.status, reply.error) == ("done", "")
    assert reply.text == "\ufffd" * 4


def test_exports_carry_storable_text_and_import_again(project, labeler, tmp_path) -> None:
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL never stored a NUL; SQLite kept those stored before the rules")
    texts = ["fine", "\x00", "ends with NUL\x00", "a\x00b"]  # SQLite stores no surrogate
    task = RankingTaskFactory(project=project, responses=texts)
    task_lease_next(project=project, labeler=labeler)
    ids = list(task.responses.order_by("position").values_list("id", flat=True))
    ranking_submit(task=task, labeler=labeler, order=[[i] for i in ids], flags={}, time_spent_ms=1)
    path = tmp_path / "pairs.jsonl"
    call_command(
        "export_comparisons",
        project.slug,
        "--format",
        "jsonl",
        "-o",
        str(path),
        stdout=io.StringIO(),
    )
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    exported = {row[key] for row in rows for key in ("chosen", "rejected")}
    assert exported == {"fine", "\ufffd", "ends with NUL\ufffd", "a\ufffdb"}

    again = ProjectFactory()
    call_command("import_preferences", again.slug, str(path), stdout=io.StringIO())
    assert Comparison.objects.filter(project=again).count() == len(rows) == 6
    assert Prompt.objects.filter(project=again).count() == 1
