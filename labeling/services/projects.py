"""Projects, their members, and API tokens."""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from core.exceptions import ApplicationError
from labeling import seams
from labeling.models import Membership, Project
from labeling.services.moderation import check_moderation_rules, moderation_rescan

# The settings a project admin may change (project_update; the API shows them all).
UPDATABLE_FIELDS = (
    "name",
    "guidelines",
    "k",
    "overlap",
    "flag_vocabulary",
    "base_model",
    "max_new_tokens",
    "temperature",
    "top_p",
    "lease_seconds",
    "training_config",
    "gate_min_rm_accuracy",
    "gate_max_rm_drop",
    "gate_kl_factor",
    "moderation_rules",
)
MAX_FLAG_LENGTH = 40


@transaction.atomic
def project_create(
    *,
    slug: str,
    name: str = "",
    k: int = 4,
    overlap: int = 1,
    guidelines: str = "",
    base_model: str = "default",
    training_config: Any = None,
    created_by: Any = None,
) -> Project:
    """A new project; its creator (if any) becomes an admin member."""
    project = Project(
        slug=slug,
        name=name or slug.replace("-", " ").replace("_", " ").title(),
        k=k,
        overlap=overlap,
        guidelines=guidelines,
        base_model=check_base_model(project=None, base_model=base_model),
        training_config=seams.check_training_config(training_config or {}),
    )
    _full_clean(project)
    project.save()
    if created_by is not None:
        Membership.objects.create(project=project, user=created_by, role=Membership.Role.ADMIN)
    return project


@transaction.atomic
def project_update(*, project: Project, **fields: Any) -> Project:
    """Change the settings in `fields` (see UPDATABLE_FIELDS). Existing tasks keep their
    overlap and responses; new tasks use the new settings."""
    unknown = sorted(set(fields) - set(UPDATABLE_FIELDS))
    if unknown:
        raise ApplicationError(f"{unknown[0]}: this field cannot be changed")
    if "base_model" in fields:
        fields["base_model"] = check_base_model(project=project, base_model=fields["base_model"])
    if "training_config" in fields:
        fields["training_config"] = seams.check_training_config(fields["training_config"])
    if "flag_vocabulary" in fields:
        fields["flag_vocabulary"] = check_flag_vocabulary(fields["flag_vocabulary"])
    rules_changed = "moderation_rules" in fields
    if rules_changed:
        fields["moderation_rules"] = check_moderation_rules(
            project=project, config=fields["moderation_rules"]
        )
    for name, value in fields.items():
        setattr(project, name, value)
    _full_clean(project)
    project.save()
    if rules_changed:
        moderation_rescan(project=project)
    return project


@transaction.atomic
def membership_add(
    *,
    project: Project,
    username: str,
    role: str,
    password: str | None = None,
    may_reset_password: bool = False,
) -> Membership:
    """Make `username` a member with `role`, creating the user if needed.

    A project admin manages memberships, never accounts: an existing user keeps their
    password, e-mail, names and flags. `password` is for the user this call creates (checked
    by Django's password validators; without one the new user cannot log in until a password
    is set). For an existing user it is refused, unless `may_reset_password`, which only
    the operator's CLI (manage.py add_member) passes. An existing member gets the new role.
    """
    if role not in Membership.Role.values:
        raise ApplicationError(f"role: must be one of {', '.join(Membership.Role.values)}")
    user, created = _get_or_create_user(username)
    if password is not None:
        if not created and not may_reset_password:
            raise ApplicationError("password: can only be set for a new user")
        _set_password(user, password)
    membership, new_member = Membership.objects.get_or_create(
        project=project, user=user, defaults={"role": role}
    )
    if not new_member and membership.role != role:
        membership.role = role
        membership.save(update_fields=["role", "updated_at"])
    return membership


@transaction.atomic
def membership_change_role(*, project: Project, username: str, role: str) -> Membership:
    """Give an existing member `role` (membership_add's rules); the project keeps at least
    one admin, so its last admin cannot become a labeler."""
    membership = _membership_locked(project, username)
    if role == Membership.Role.LABELER and membership.role == Membership.Role.ADMIN:
        _refuse_last_admin(project, "demoted")
    return membership_add(project=project, username=username, role=role)


@transaction.atomic
def membership_remove(*, project: Project, username: str) -> None:
    """End a membership (the user account, their rankings and API token stay); the
    project's last admin cannot be removed."""
    membership = _membership_locked(project, username)
    if membership.role == Membership.Role.ADMIN:
        _refuse_last_admin(project, "removed")
    membership.delete()


def _membership_locked(project: Project, username: str) -> Membership:
    membership = (
        Membership.objects.select_for_update()
        .filter(project=project, user__username=username)
        .first()
    )
    if membership is None:
        raise ApplicationError(f"username: {username!r} is not a member of this project")
    return membership


def _refuse_last_admin(project: Project, what: str) -> None:
    admins = Membership.objects.select_for_update().filter(
        project=project, role=Membership.Role.ADMIN
    )
    if len(admins) <= 1:
        raise ApplicationError(f"username: the project's last admin cannot be {what}")


def api_token_create(*, username: str) -> str:
    """The user's API token key, created if they have none (revoke it to get a new one)."""
    token, _ = Token.objects.get_or_create(user=_active_user(username))
    return str(token.key)


def api_token_revoke(*, username: str) -> None:
    """Delete the user's API token: requests with it fail from now on."""
    Token.objects.filter(user=_active_user(username, active_only=False)).delete()


def check_base_model(*, project: Project | None, base_model: Any) -> str:
    """The `base_model` to store: default, tiny, version:N (a policy version of `project`;
    None while it is being created) or a model under the operator's RLHF_MODEL_ROOTS. The
    rules live in the training app (labeling.seams); every refusal is one message that
    shows no path."""
    if not isinstance(base_model, str):
        raise ApplicationError("base_model: must be a string")
    return seams.check_model_spec(project, base_model)


def check_flag_vocabulary(flags: Any) -> list[str]:
    if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
        raise ApplicationError("flag_vocabulary: must be a list of strings")
    clean = [flag.strip() for flag in flags]
    if any(not flag or len(flag) > MAX_FLAG_LENGTH for flag in clean):
        raise ApplicationError(f"flag_vocabulary: flags are 1 to {MAX_FLAG_LENGTH} characters")
    if len(set(clean)) != len(clean):
        raise ApplicationError("flag_vocabulary: a flag appears twice")
    return clean


def _get_or_create_user(username: str) -> tuple[Any, bool]:
    """The user named `username` and False, or a new one (unusable password) and True."""
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    if user is not None:
        return user, False
    user = user_model(username=username)
    try:
        user_model.username_validator(username)
    except ValidationError as error:
        raise ApplicationError(f"username: {error.messages[0]}") from None
    user.set_unusable_password()
    user.save()
    return user, True


def _set_password(user: Any, password: str) -> None:
    try:
        validate_password(password, user)
    except ValidationError as error:
        raise ApplicationError(f"password: {' '.join(error.messages)}") from None
    user.set_password(password)
    user.save(update_fields=["password"])


def _active_user(username: str, *, active_only: bool = True) -> Any:
    user = get_user_model().objects.filter(username=username).first()
    if user is None or (active_only and not user.is_active):
        raise ApplicationError(f"username: no active user {username!r}")
    return user


def _full_clean(project: Project) -> None:
    try:
        project.full_clean()
    except ValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        raise ApplicationError(
            f"{field}: {messages[0]}", extra={"errors": error.message_dict}
        ) from None
