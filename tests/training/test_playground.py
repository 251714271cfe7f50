"""The playground: a request queues a reply, the (eager) task samples it from the current
policy (`tiny`), thumbs become Feedback, a better answer becomes a Demonstration."""

import pytest
from rest_framework.test import APIClient

from labeling.models import Demonstration, Feedback, Prompt
from tests.factories import MembershipFactory
from training.models import PlaygroundReply
from training.services import playground

pytestmark = pytest.mark.django_db


@pytest.fixture
def short_project(project):
    project.max_new_tokens = 12
    project.save()
    return project


def _ask(client: APIClient, project, prompt, capture) -> dict:
    with capture(execute=True):
        response = client.post(
            f"/api/v1/projects/{project.slug}/playground/", {"prompt": prompt}, format="json"
        )
    assert response.status_code == 202, response.content
    return response.json()


def test_a_request_is_answered_by_the_current_policy(
    short_project, labeler_client, django_capture_on_commit_callbacks
):
    queued = _ask(labeler_client, short_project, "Say hello.", django_capture_on_commit_callbacks)
    assert queued["status"] == "queued"

    reply = labeler_client.get(f"/api/v1/playground/{queued['id']}/").json()

    assert reply["status"] == "done", reply["error"]
    assert reply["text"].strip()
    assert reply["policy_version"] == "base-v1"  # the base model became version 1
    assert reply["prompt"] == "Say hello."


def test_a_chat_prompt_is_answered_and_a_single_turn_is_stored_as_text(
    short_project, labeler_client, django_capture_on_commit_callbacks
):
    chat = [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    reply_id = _ask(labeler_client, short_project, chat, django_capture_on_commit_callbacks)["id"]
    single = _ask(
        labeler_client,
        short_project,
        [{"role": "user", "content": "Only one turn."}],
        django_capture_on_commit_callbacks,
    )
    assert PlaygroundReply.objects.get(pk=reply_id).prompt == chat
    assert PlaygroundReply.objects.get(pk=single["id"]).prompt == "Only one turn."
    assert PlaygroundReply.objects.get(pk=reply_id).status == "done"


@pytest.mark.parametrize(
    "prompt",
    ["   ", [], [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], 42],
)
def test_bad_prompts_are_refused(short_project, labeler_client, prompt) -> None:
    response = labeler_client.post(
        f"/api/v1/projects/{short_project.slug}/playground/", {"prompt": prompt}, format="json"
    )
    assert response.status_code == 400
    assert "prompt" in response.json()["detail"]
    assert not PlaygroundReply.objects.exists()


def test_the_loaded_policy_is_reused_between_replies(
    short_project, labeler_client, django_capture_on_commit_callbacks, monkeypatch
):
    from training.ml import loading

    loads: list[str] = []
    real = loading.load_causal_lm

    def counting(spec, **kwargs):
        loads.append(spec)
        return real(spec, **kwargs)

    monkeypatch.setattr(loading, "load_causal_lm", counting)
    monkeypatch.setattr(playground, "_cached", {})
    for text in ("One.", "Two.", "Three."):
        _ask(labeler_client, short_project, text, django_capture_on_commit_callbacks)
    assert loads == ["tiny"]
    assert PlaygroundReply.objects.filter(status="done").count() == 3


def test_a_broken_policy_fails_the_reply_with_its_error(
    short_project, labeler_client, django_capture_on_commit_callbacks, tmp_path
):
    short_project.base_model = str(tmp_path / "no-such-model")
    short_project.save()
    queued = _ask(labeler_client, short_project, "Hello?", django_capture_on_commit_callbacks)
    reply = labeler_client.get(f"/api/v1/playground/{queued['id']}/").json()
    assert reply["status"] == "failed"
    # A spec that is not an allowed model (stored before the check): one message, no path.
    assert "not an allowed model" in reply["error"] and "no-such-model" not in reply["error"]


def test_a_redelivered_task_does_nothing(
    short_project, labeler, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        reply = playground.playground_reply_request(
            project=short_project, user=labeler, prompt="Once."
        )
    reply.refresh_from_db()
    text = reply.text
    PlaygroundReply.objects.filter(pk=reply.pk).update(text="kept")
    reply.refresh_from_db()
    assert playground.playground_reply_generate(reply=reply).text == "kept"
    assert text


def test_thumbs_are_stored_and_a_second_click_changes_the_rating(
    short_project, labeler, labeler_client, django_capture_on_commit_callbacks
):
    reply_id = _ask(labeler_client, short_project, "Rate me.", django_capture_on_commit_callbacks)[
        "id"
    ]
    url = f"/api/v1/playground/{reply_id}/feedback/"
    assert labeler_client.post(url, {"rating": 1}, format="json").status_code == 201
    assert labeler_client.post(url, {"rating": -1}, format="json").status_code == 201
    assert labeler_client.post(url, {"rating": 0}, format="json").status_code == 400

    feedback = Feedback.objects.get()
    reply = PlaygroundReply.objects.get(pk=reply_id)
    assert feedback.rating == -1
    assert feedback.user == labeler and feedback.project == short_project
    assert feedback.prompt == "Rate me." and feedback.response == reply.text
    assert feedback.policy_version == reply.policy_version
    assert labeler_client.get(f"/api/v1/playground/{reply_id}/").json()["rating"] == -1


def test_a_queued_reply_cannot_be_rated(short_project, labeler, labeler_client) -> None:
    reply = playground.playground_reply_request(project=short_project, user=labeler, prompt="Q")
    # no on-commit capture: the task was never sent, the reply stays queued
    response = labeler_client.post(
        f"/api/v1/playground/{reply.pk}/feedback/", {"rating": 1}, format="json"
    )
    assert response.status_code == 409
    assert not Feedback.objects.exists()


def test_a_better_answer_becomes_a_demonstration(
    short_project, labeler, labeler_client, django_capture_on_commit_callbacks
):
    from labeling.services.imports import PromptIn
    from labeling.services.prompts import prompts_get_or_create

    existing = prompts_get_or_create(
        project=short_project, items=[PromptIn(content="What is RLHF?")], source="file"
    )
    reply_id = _ask(
        labeler_client, short_project, "What is RLHF?", django_capture_on_commit_callbacks
    )["id"]
    response = labeler_client.post(
        f"/api/v1/playground/{reply_id}/demonstration/",
        {"response": "Reinforcement learning from human feedback."},
        format="json",
    )
    assert response.status_code == 201, response.content

    demonstration = Demonstration.objects.get()
    assert demonstration.response == "Reinforcement learning from human feedback."
    assert demonstration.author == labeler and demonstration.source == "playground"
    # the imported prompt with the same content is reused, not duplicated
    assert demonstration.prompt in existing.values()
    assert response.json()["prompt_id"] == demonstration.prompt_id
    assert Prompt.objects.filter(project=short_project).count() == 1


def test_a_better_chat_answer_stores_the_whole_chat_as_the_prompt(
    short_project, labeler_client, django_capture_on_commit_callbacks
):
    chat = [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    reply_id = _ask(labeler_client, short_project, chat, django_capture_on_commit_callbacks)["id"]
    labeler_client.post(
        f"/api/v1/playground/{reply_id}/demonstration/", {"response": "Blue."}, format="json"
    )
    prompt = Demonstration.objects.get().prompt
    assert prompt.chat == chat and prompt.text == "Name a colour."


def test_strangers_and_other_members_cannot_reach_a_reply(
    short_project, labeler, outsider, django_capture_on_commit_callbacks
):
    reply = playground.playground_reply_request(project=short_project, user=labeler, prompt="Mine")
    stranger, colleague = APIClient(), APIClient()
    stranger.force_authenticate(outsider)
    colleague.force_authenticate(MembershipFactory(project=short_project, role="admin").user)
    for client in (stranger, colleague):
        assert client.get(f"/api/v1/playground/{reply.pk}/").status_code == 404
        assert (
            client.post(
                f"/api/v1/playground/{reply.pk}/feedback/", {"rating": 1}, format="json"
            ).status_code
            == 404
        )
    response = stranger.post(
        f"/api/v1/projects/{short_project.slug}/playground/", {"prompt": "hi"}, format="json"
    )
    assert response.status_code == 404
    assert APIClient().get(f"/api/v1/playground/{reply.pk}/").status_code in (401, 403)


def test_replies_go_to_the_default_queue_not_behind_training() -> None:
    from config.celery import app

    def queue_of(task: str) -> str:
        return app.amqp.router.route({}, task)["queue"].name

    assert queue_of("training.tasks.playground_reply") == "default"
    assert {q.name for q in app.conf.task_queues} == {"default", "gpu"}  # PRODUCT.md's two
    assert queue_of("training.tasks.gpu_execute_run") == "gpu"
    assert queue_of("training.tasks.round_build_pairs") == "default"
    assert queue_of("training.tasks.reap_stale_runs") == "default"


def test_one_member_cannot_fill_the_queue(short_project, labeler, labeler_client) -> None:
    url = f"/api/v1/projects/{short_project.slug}/playground/"
    # no on-commit capture: the replies stay queued, as behind a long training run
    for _ in range(playground.MAX_QUEUED_PER_USER):
        assert labeler_client.post(url, {"prompt": "hi"}, format="json").status_code == 202
    response = labeler_client.post(url, {"prompt": "hi"}, format="json")
    assert response.status_code == 409
    assert "waiting" in response.json()["detail"]
    assert PlaygroundReply.objects.count() == playground.MAX_QUEUED_PER_USER


def test_the_reply_says_running_while_a_worker_samples_it(
    short_project, labeler, labeler_client, monkeypatch
) -> None:
    """The page tells "queued" from "generating" by what the API says during sampling."""
    from training.ml import sampling

    reply = PlaygroundReply.objects.create(project=short_project, user=labeler, prompt="Hi.")
    seen: list[dict] = []
    real = sampling.sample_responses

    def watching(*args, **kwargs):
        seen.append(labeler_client.get(f"/api/v1/playground/{reply.pk}/").json())
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_responses", watching)
    assert labeler_client.get(f"/api/v1/playground/{reply.pk}/").json()["status"] == "queued"
    done = playground.playground_reply_generate(reply=reply)
    assert [s["status"] for s in seen] == ["running"] and seen[0]["started_at"]
    assert done.status == "done" and done.text.strip() and done.started_at is not None


def test_a_reply_left_running_by_a_dead_worker_is_sampled_when_redelivered(
    short_project, labeler
) -> None:
    reply = PlaygroundReply.objects.create(
        project=short_project, user=labeler, prompt="Again.", status="running"
    )
    assert playground.playground_reply_generate(reply=reply).status == "done"
