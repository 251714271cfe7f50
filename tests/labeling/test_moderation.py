"""The moderation filter on prompts (issue 11 item 9) and near-duplicate responses.

Rules run on import and when they change; a flagged prompt is held out of rounds until an
admin releases or drops it; the optional classifier runs before sampling; near-duplicate
responses of a task are resampled once, then marked.
"""

import json
from types import SimpleNamespace

import pytest
import torch
from django.urls import reverse

from core.exceptions import ApplicationError
from labeling.models import Prompt, Response
from labeling.moderation import ModerationRules, RulesError, near_duplicates
from labeling.services.imports import parse_prompt_list
from labeling.services.moderation import prompt_release
from labeling.services.projects import project_update
from labeling.services.prompts import prompts_import
from tests.factories import MembershipFactory, ProjectFactory, PromptFactory
from training.selectors import prompts_for_round
from training.services import rounds
from training.services.sample_screening import resample_near_duplicates


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    """Run what services queue on commit (eager Celery tasks) inside the test."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


RULES = {"words": ["forbidden topic"], "regexes": [r"\bssn:\s*\d{3}-\d{2}-\d{4}"]}


def _import(project, records):
    return prompts_import(project=project, items=parse_prompt_list(records), source="test")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([], "moderation_rules: must be an object"),
        ({"wordz": []}, "moderation_rules.wordz: unknown key"),
        ({"words": "x"}, "moderation_rules.words: must be a list of strings"),
        ({"words": [" "]}, "moderation_rules.words[0]: 1 to 500 characters"),
        ({"regexes": ["(unclosed"]}, "moderation_rules.regexes[0]: "),
        ({"classifier": "/models/c"}, "moderation_rules.labels: name the classifier labels"),
        ({"threshold": 0}, "moderation_rules.threshold: must be in (0, 1]"),
        ({"threshold": True}, "moderation_rules.threshold: must be a number"),
    ],
)
def test_invalid_rules_are_refused_naming_the_key(config, message):
    with pytest.raises(RulesError, match=message.replace("(", r"\(").replace("[", r"\[")):
        ModerationRules.parse(config)


def test_words_match_whole_words_case_insensitively_and_regexes_time_out_safely():
    rules = ModerationRules.parse({"words": ["bomb"], "regexes": [r"(a|aa)+$", r"card \d{4}"]})
    assert rules.reasons("How do I build a BOMB?") == ["word: bomb"]
    assert rules.reasons("bombastic prose") == []  # a whole word, not a substring
    assert rules.reasons("my card 1234 please") == ["regex: card \\d{4}"]
    # catastrophic backtracking: flagged as timed out instead of hanging the process
    assert rules.reasons("a" * 40 + "!") == ["regex timed out: (a|aa)+$"]


@pytest.mark.django_db
def test_import_flags_prompts_by_the_rules_and_rounds_skip_them(project, project_admin):
    project_update(project=project, moderation_rules=RULES)
    result = _import(
        project,
        [
            {"prompt": "Tell me about the weather"},
            {"prompt": "Let us discuss the Forbidden Topic today"},
            # every turn of a chat is checked, not only the last user turn
            {
                "prompt": [
                    {"role": "user", "content": "my ssn: 123-45-6789"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "what now?"},
                ]
            },
        ],
    )
    assert (result.created, result.flagged) == (3, 2)
    flagged = Prompt.objects.filter(project=project, moderation="flagged")
    assert sorted(r for p in flagged for r in p.moderation_reasons) == [
        "regex: \\bssn:\\s*\\d{3}-\\d{2}-\\d{4}",
        "word: forbidden topic",
    ]
    # a round may only take the one clear prompt
    with pytest.raises(ApplicationError, match="2 asked, 1 train prompts available"):
        rounds.round_start(project=project, num_prompts=2, user=project_admin)
    round_ = rounds.round_start(project=project, num_prompts=1, user=project_admin)
    assert [p.text for p in prompts_for_round(round_=round_)] == ["Tell me about the weather"]


@pytest.mark.django_db
def test_changed_rules_rescan_clear_prompts_but_keep_an_admins_release(project):
    weather = PromptFactory(project=project, text="weather in Paris")
    news = PromptFactory(project=project, text="news of the day")
    project_update(project=project, moderation_rules={"words": ["paris"]})
    weather.refresh_from_db()
    assert weather.moderation == "flagged"
    prompt_release(prompt=weather)
    project_update(project=project, moderation_rules={"words": ["paris", "news"]})
    weather.refresh_from_db()
    news.refresh_from_db()
    assert (weather.moderation, news.moderation) == ("released", "flagged")


@pytest.mark.django_db
def test_rules_are_validated_at_the_api_and_shown(admin_client_api, project):
    url = reverse("api-project-detail", args=[project.slug])
    bad = admin_client_api.patch(url, {"moderation_rules": {"regexes": ["("]}}, format="json")
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("moderation_rules.regexes[0]: ")
    good = admin_client_api.patch(url, {"moderation_rules": {"words": ["x"]}}, format="json")
    assert good.status_code == 200, good.content
    assert good.json()["moderation_rules"] == {"words": ["x"]}


@pytest.mark.django_db
def test_admins_list_release_and_drop_flagged_prompts_over_rest(
    admin_client_api, labeler_client, project, outsider
):
    project_update(project=project, moderation_rules={"words": ["spam"]})
    _import(project, [{"prompt": "spam spam"}, {"prompt": "eggs"}, {"prompt": "more spam"}])
    listed = admin_client_api.get(
        reverse("api-prompt-list", args=[project.slug]), {"moderation": "flagged"}
    )
    assert [p["text"] for p in listed.json()["results"]] == ["spam spam", "more spam"]
    first, second = (p["id"] for p in listed.json()["results"])
    release = reverse("api-prompt-release", args=[project.slug, first])
    drop = reverse("api-prompt-drop", args=[project.slug, second])
    assert labeler_client.post(release).status_code == 403
    assert admin_client_api.post(release).json()["moderation"] == "released"
    assert admin_client_api.post(release).status_code == 409  # nothing to release now
    assert admin_client_api.post(drop).json()["moderation"] == "dropped"
    # another project's admin cannot reach these prompts
    other = ProjectFactory()
    MembershipFactory(project=other, user=outsider, role="admin")
    assert admin_client_api.post(
        reverse("api-prompt-drop", args=[other.slug, first])
    ).status_code in (403, 404)
    usable = Prompt.objects.filter(project=project, moderation__in=Prompt.USABLE_MODERATION)
    assert sorted(usable.values_list("text", flat=True)) == ["eggs", "spam spam"]


def test_near_duplicates_point_at_the_first_of_each_group():
    texts = ["The cat sat.", "the  CAT sat.", "A dog ran far away.", "The cat sat!", ""]
    assert near_duplicates(texts) == [None, 0, None, None, None]
    assert near_duplicates(["", " "]) == [None, 0]
    assert near_duplicates(["x" * 200, "x" * 199 + "y"]) == [None, 0]


def test_near_duplicates_are_resampled_once_then_marked():
    def sample(text, seed):
        return SimpleNamespace(text=text, seed=seed)

    rows = [[sample("same", 10), sample("same", 11), sample("other", 12)]]
    asked = []

    def resample(prompts, seeds):
        asked.append((prompts, seeds))
        return [sample("fresh text", seeds[0])]

    fixed, marks = resample_near_duplicates(rows, resample)
    assert asked == [([0], [11 + 3])]  # a seed outside the task's own seeds
    assert [s.text for s in fixed[0]] == ["same", "fresh text", "other"]
    assert marks == [[None, None, None]]

    stubborn = [[sample("same", 1), sample("same", 2)]]
    _, marks = resample_near_duplicates(stubborn, lambda p, s: [sample("same", s[0])])
    assert marks == [[None, 0]]


@pytest.mark.slow
@pytest.mark.django_db
def test_a_greedy_policy_round_marks_its_identical_responses(settings, tmp_path, on_commit):
    """Temperature 0: every response of a task is the same text; resampling cannot help,
    so responses 2..K point at response 1 and the labeler's screen can say so."""
    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    project = ProjectFactory(base_model="tiny", k=3, max_new_tokens=4, temperature=0.0)
    PromptFactory.create_batch(2, project=project)
    with on_commit():
        round_ = rounds.round_start(project=project, num_prompts=2)
    round_.refresh_from_db()
    assert round_.stage == "labeling", round_.error
    for task in round_.tasks.all():
        first, *rest = task.responses.order_by("position")
        assert first.duplicate_of_id is None
        assert [r.duplicate_of_id for r in rest] == [first.pk, first.pk]
    assert Response.objects.filter(task__round=round_).count() == 6


def _classifier_folder(root, *, labels):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from training.ml.gguf_cache import default_tokenizer_dir
    from training.ml.tokenization import tokenizer_from_folder

    tokenizer = tokenizer_from_folder(default_tokenizer_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.zero_()  # every label equally likely: p = 1 / len(labels)
    folder = root / "classifier"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize(("threshold", "tasks"), [(0.5, 0), (0.6, 2)])
def test_the_classifier_holds_prompts_out_before_sampling(
    settings, tmp_path, on_commit, threshold, tasks
):
    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    settings.RLHF_MODEL_ROOTS = [str(tmp_path / "models")]
    folder = _classifier_folder(tmp_path / "models", labels=["ok", "unsafe"])
    project = ProjectFactory(base_model="tiny", k=2, max_new_tokens=3)
    project_update(
        project=project,
        moderation_rules={"classifier": str(folder), "labels": ["unsafe"], "threshold": threshold},
    )
    PromptFactory.create_batch(2, project=project)
    with on_commit():
        round_ = rounds.round_start(project=project, num_prompts=2)
    round_.refresh_from_db()
    assert round_.tasks.count() == tasks
    flagged = Prompt.objects.filter(project=project, moderation="flagged")
    assert flagged.count() == 2 - tasks
    for prompt in flagged:
        assert prompt.moderation_reasons == ["classifier: unsafe 0.50"]
    assert json.dumps(round_.metrics)  # the round's record stays serialisable


@pytest.mark.django_db
def test_a_classifier_outside_the_model_roots_is_refused(project, settings, tmp_path):
    settings.RLHF_MODEL_ROOTS = [str(tmp_path / "models")]
    with pytest.raises(ApplicationError, match=r"moderation_rules\.classifier: not an allowed"):
        project_update(
            project=project,
            moderation_rules={"classifier": "/etc", "labels": ["unsafe"]},
        )
