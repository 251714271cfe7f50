"""The round commands drive the same services as the API and report errors in one line."""

import pytest
from django.core.management import CommandError, call_command

from tests.factories import PromptFactory
from training.models import Round


@pytest.mark.django_db
def test_start_advance_and_cancel_from_the_shell(project, on_commit, monkeypatch, capsys) -> None:
    from training import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks.gpu_execute_run, "delay", queued.append)  # no worker here
    PromptFactory.create_batch(2, project=project)
    with on_commit():
        call_command("start_round", project.slug, "--prompts", "2")
    round_ = Round.objects.get(project=project)
    assert (round_.number, round_.stage, round_.num_prompts) == (1, "generating", 2)
    assert queued == [round_.runs.get().pk]
    assert "Round 1 of" in capsys.readouterr().out

    with pytest.raises(CommandError, match="still generating"):
        call_command("start_round", project.slug)
    with pytest.raises(CommandError, match="moves on by itself"):
        call_command("advance_round", project.slug)
    call_command("cancel_round", project.slug)
    round_.refresh_from_db()
    assert round_.stage == "cancelled"
    with pytest.raises(CommandError, match="no round to advance"):
        call_command("advance_round", project.slug)
    with pytest.raises(CommandError, match="No project"):
        call_command("start_round", "nope")
