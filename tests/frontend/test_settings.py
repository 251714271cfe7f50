"""The settings page: admins only; each section saves through the services' validators, and
a refused value saves nothing and shows its error on its field."""

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from labeling.models import Membership, Prompt
from tests.factories import MembershipFactory, PromptFactory, UserFactory

pytestmark = pytest.mark.django_db


def _url(project: Any) -> str:
    return f"/projects/{project.slug}/settings/"


@pytest.fixture
def admin_web(project_admin) -> Client:
    client = Client()
    client.force_login(project_admin)
    return client


def _general(project: Any, **changes: Any) -> dict[str, Any]:
    data = {
        "section": "general",
        "guidelines": project.guidelines,
        "k": project.k,
        "overlap": project.overlap,
        "flag_vocabulary": "\n".join(project.flag_vocabulary),
    }
    return data | changes


def _errors(response: Any, name: str) -> list[str]:
    form = response.context["forms"][response.context["posted"]]
    return list(form.errors.get(name, []))


def test_labelers_get_403_and_strangers_404(client: Client, project, labeler, outsider) -> None:
    client.force_login(labeler)
    assert client.get(_url(project)).status_code == 403
    assert client.post(_url(project), _general(project, k=3)).status_code == 403
    client.force_login(outsider)
    assert client.get(_url(project)).status_code == 404
    project.refresh_from_db()
    assert project.k == 4


def test_nav_links_settings_for_admins_only(
    client: Client, project, project_admin, labeler
) -> None:
    client.force_login(project_admin)
    assert _url(project) in client.get(f"/projects/{project.slug}/label/").content.decode()
    client.force_login(labeler)
    assert _url(project) not in client.get(f"/projects/{project.slug}/label/").content.decode()


def test_page_shows_current_settings_and_schema_fields(admin_web: Client, project) -> None:
    project.training_config = {"rm": {"lr": 0.0002}, "ppo": {"rules": ["length:<=200:-1.0"]}}
    project.save()
    body = admin_web.get(_url(project)).content.decode()
    assert 'name="rm.lr"' in body and 'value="0.0002"' in body
    assert 'name="ppo.kl_target"' in body or 'name="ppo.init_kl_coef"' in body
    assert "length:&lt;=200:-1.0" in body
    assert 'name="gate_min_rm_accuracy"' in body
    assert "Peak AdamW learning rate" in body  # help text from the config dataclasses


def test_general_saves_through_project_update(admin_web: Client, project) -> None:
    response = admin_web.post(
        _url(project), _general(project, k=3, overlap=2, flag_vocabulary="rude\n typo \n")
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.k, project.overlap, project.flag_vocabulary) == (3, 2, ["rude", "typo"])


def test_general_refuses_out_of_range_k_and_saves_nothing(admin_web: Client, project) -> None:
    response = admin_web.post(_url(project), _general(project, k=99, overlap=2))
    assert response.status_code == 200
    assert _errors(response, "k")
    project.refresh_from_db()
    assert (project.k, project.overlap) == (4, 1)


def test_duplicate_flag_refused_by_flag_check(admin_web: Client, project) -> None:
    response = admin_web.post(_url(project), _general(project, flag_vocabulary="a\na"))
    assert any("twice" in e for e in _errors(response, "flag_vocabulary"))


def test_guidelines_preview_is_sanitised_and_saves_nothing(admin_web: Client, project) -> None:
    text = "**bold** <script>alert(1)</script> [x](javascript:alert(1))"
    response = admin_web.post(_url(project), _general(project, guidelines=text, preview="1"))
    body = response.content.decode()
    preview = body.split('id="guidelines-preview">', 1)[1].split("</div>", 1)[0]
    assert "<strong>bold</strong>" in preview
    assert "<script" not in preview and "javascript:" not in preview
    project.refresh_from_db()
    assert project.guidelines != text


def test_generation_and_gate_save(admin_web: Client, project) -> None:
    data = {"section": "generation", "max_new_tokens": 64, "temperature": 0.7, "top_p": 0.9}
    assert admin_web.post(_url(project), data).status_code == 302
    gate = {
        "section": "gate",
        "gate_min_rm_accuracy": 0.7,
        "gate_max_rm_drop": 0.02,
        "gate_kl_factor": 3,
    }
    assert admin_web.post(_url(project), gate).status_code == 302
    project.refresh_from_db()
    assert (project.max_new_tokens, project.temperature, project.top_p) == (64, 0.7, 0.9)
    assert (project.gate_min_rm_accuracy, project.gate_kl_factor) == (0.7, 3.0)


def test_gate_out_of_range_refused(admin_web: Client, project) -> None:
    gate = {
        "section": "gate",
        "gate_min_rm_accuracy": 1.5,
        "gate_max_rm_drop": 0.02,
        "gate_kl_factor": 3,
    }
    response = admin_web.post(_url(project), gate)
    assert response.status_code == 200 and _errors(response, "gate_min_rm_accuracy")
    project.refresh_from_db()
    assert project.gate_min_rm_accuracy == 0.6 and project.gate_kl_factor == 2.0


def test_training_form_saves_typed_values_and_blank_means_default(
    admin_web: Client, project
) -> None:
    data = {
        "section": "training",
        "prompts_per_round": "8",
        "rm.lr": "2e-5",
        "ppo.init_from": "policy",
        "ppo.continue_kl_controller": "true",
        "ppo.rules": "length:<=200:-1.0\n",
        "sft.epochs": "",
    }
    assert admin_web.post(_url(project), data).status_code == 302
    project.refresh_from_db()
    assert project.training_config == {
        "prompts_per_round": 8,
        "rm": {"lr": 2e-5},
        "ppo": {
            "init_from": "policy",
            "continue_kl_controller": True,
            "rules": ["length:<=200:-1.0"],
        },
    }


def test_invalid_training_setting_shows_field_errors_and_saves_nothing(
    admin_web: Client, project
) -> None:
    project.training_config = {"rm": {"lr": 1e-5}}
    project.save()
    data = {"section": "training", "rm.lr": "5", "rm.batch_size": "0", "prompts_per_round": "8"}
    response = admin_web.post(_url(project), data)
    assert response.status_code == 200
    assert any("<=" in e for e in _errors(response, "rm.lr"))  # the schema's range message
    assert _errors(response, "rm.batch_size")
    body = response.content.decode()
    assert 'data-field="rm.lr"' in body and "field__error" in body
    project.refresh_from_db()
    assert project.training_config == {"rm": {"lr": 1e-5}}


def test_training_bad_rule_refused_on_its_field(admin_web: Client, project) -> None:
    response = admin_web.post(_url(project), {"section": "training", "ppo.rules": "nonsense:rule"})
    assert response.status_code == 200 and _errors(response, "ppo.rules")
    project.refresh_from_db()
    assert project.training_config == {}


def test_training_text_in_number_field_is_a_field_error(admin_web: Client, project) -> None:
    response = admin_web.post(_url(project), {"section": "training", "rm.lr": "fast"})
    assert response.status_code == 200 and _errors(response, "rm.lr")


def test_member_add_existing_and_new_user(admin_web: Client, project) -> None:
    existing = UserFactory(username="carol")
    response = admin_web.post(
        _url(project), {"section": "member_add", "username": "carol", "role": "labeler"}
    )
    assert response.status_code == 302
    assert Membership.objects.get(project=project, user=existing).role == "labeler"
    admin_web.post(
        _url(project),
        {
            "section": "member_add",
            "username": "dave",
            "role": "admin",
            "password": "a-long-pass-phrase",
        },
    )
    dave = get_user_model().objects.get(username="dave")
    assert dave.check_password("a-long-pass-phrase")
    assert Membership.objects.get(project=project, user=dave).role == "admin"


def test_member_add_cannot_reset_an_existing_users_password(admin_web: Client, project) -> None:
    victim = UserFactory(username="erin")
    response = admin_web.post(
        _url(project),
        {
            "section": "member_add",
            "username": "erin",
            "role": "labeler",
            "password": "owned-pw-123",
        },
    )
    assert response.status_code == 200 and _errors(response, "password")
    victim.refresh_from_db()
    assert victim.check_password("pw-for-tests")
    assert not Membership.objects.filter(project=project, user=victim).exists()


def test_member_role_change_and_remove(admin_web: Client, project, labeler) -> None:
    name = labeler.username
    admin_web.post(_url(project), {"section": "member_role", "username": name, "role": "admin"})
    assert Membership.objects.get(project=project, user=labeler).role == "admin"
    admin_web.post(_url(project), {"section": "member_remove", "username": name})
    assert not Membership.objects.filter(project=project, user=labeler).exists()
    assert get_user_model().objects.filter(username=name).exists()


def test_last_admin_can_neither_be_demoted_nor_removed(
    admin_web: Client, project, project_admin
) -> None:
    name = project_admin.username
    response = admin_web.post(
        _url(project), {"section": "member_role", "username": name, "role": "labeler"}, follow=True
    )
    assert "last admin" in response.content.decode()
    admin_web.post(_url(project), {"section": "member_remove", "username": name})
    assert Membership.objects.get(project=project, user=project_admin).role == "admin"


def test_member_of_another_project_cannot_be_removed_here(admin_web: Client, project) -> None:
    other = MembershipFactory(role="labeler")
    admin_web.post(_url(project), {"section": "member_remove", "username": other.user.username})
    assert Membership.objects.filter(pk=other.pk).exists()


def test_moderation_rules_save_and_rescan(admin_web: Client, project) -> None:
    bad = PromptFactory(project=project, text="Tell me about forbidden things")
    good = PromptFactory(project=project, text="A poem about spring")
    data = {
        "section": "moderation",
        "words": "forbidden\n",
        "regexes": "sp[a-z]+g\\d",
        "threshold": "",
    }
    assert admin_web.post(_url(project), data).status_code == 302
    project.refresh_from_db()
    assert project.moderation_rules == {"words": ["forbidden"], "regexes": ["sp[a-z]+g\\d"]}
    bad.refresh_from_db(), good.refresh_from_db()
    assert bad.moderation == Prompt.Moderation.FLAGGED and good.moderation == "clear"


def test_moderation_bad_regex_is_a_field_error(admin_web: Client, project) -> None:
    response = admin_web.post(_url(project), {"section": "moderation", "regexes": "ok\n(unclosed"})
    assert response.status_code == 200 and _errors(response, "regexes")
    project.refresh_from_db()
    assert project.moderation_rules == {}


def test_flagged_prompts_listed_escaped_then_released_and_dropped(
    admin_web: Client, project
) -> None:
    first = PromptFactory(
        project=project,
        text="<img src=x onerror=alert(1)> hi",
        moderation=Prompt.Moderation.FLAGGED,
        moderation_reasons=["word: hi"],
    )
    second = PromptFactory(project=project, moderation=Prompt.Moderation.FLAGGED)
    body = admin_web.get(_url(project)).content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt; hi" in body and "<img src=x" not in body
    assert "word: hi" in body
    admin_web.post(
        _url(project), {"section": "prompt", "prompt_id": first.pk, "decision": "release"}
    )
    admin_web.post(_url(project), {"section": "prompt", "prompt_id": second.pk, "decision": "drop"})
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.moderation, second.moderation) == ("released", "dropped")


def test_prompt_of_another_project_cannot_be_decided(admin_web: Client, project) -> None:
    other = PromptFactory(moderation=Prompt.Moderation.FLAGGED)
    admin_web.post(_url(project), {"section": "prompt", "prompt_id": other.pk, "decision": "drop"})
    other.refresh_from_db()
    assert other.moderation == Prompt.Moderation.FLAGGED
