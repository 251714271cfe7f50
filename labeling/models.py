"""The labeling domain: projects, prompts, ranking tasks with K responses, leases, rankings
and the pairwise comparisons derived from them.

Data flows one way: Prompt -> RankingTask (+ K Responses) -> Assignment (lease) -> Ranking
-> Comparison. Submitted rankings are never changed; comparisons are derived from them.
"""

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from core.models import TimeStampedModel

MIN_K, MAX_K = 2, 9
DEFAULT_FLAGS = ["harmful", "untruthful", "off-topic", "low-quality", "contains-pii"]


def default_flags() -> list[str]:
    return list(DEFAULT_FLAGS)


def validate_guidelines_size(text: str) -> None:
    """At most RLHF_GUIDELINES_MAX_BYTES of UTF-8: every labeling page renders them. The
    API's serializers, the admin's form and the services' full_clean all call this."""
    limit = settings.RLHF_GUIDELINES_MAX_BYTES
    size = len(text.encode())
    if size > limit:
        raise ValidationError(
            f"at most {limit} bytes of UTF-8 (this text has {size})", code="max_bytes"
        )


class Project(TimeStampedModel):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    guidelines = models.TextField(
        blank=True, validators=[validate_guidelines_size], help_text="Markdown shown to labelers."
    )
    k = models.PositiveSmallIntegerField(
        default=4,
        validators=[MinValueValidator(MIN_K), MaxValueValidator(MAX_K)],
        help_text="Responses sampled per prompt and ranked together.",
    )
    overlap = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="Rankings wanted per task, each from a different labeler.",
    )
    flag_vocabulary = models.JSONField(default=default_flags, blank=True)
    base_model = models.CharField(
        max_length=500, default="default", help_text="default, tiny, or a model folder."
    )
    # Generation settings for the policy's samples.
    max_new_tokens = models.PositiveIntegerField(default=128)
    temperature = models.FloatField(default=1.0, validators=[MinValueValidator(0.0)])
    top_p = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    lease_seconds = models.PositiveIntegerField(
        default=15 * 60, help_text="How long a labeler holds a task before it is offered again."
    )
    training_config = models.JSONField(
        default=dict,
        blank=True,
        help_text="Overrides for RM/PPO hyper-parameters and reward rules.",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )
    # The promotion gate (a round stops in needs_review when a check fails).
    gate_min_rm_accuracy = models.FloatField(
        default=0.6,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="The new RM's held-out accuracy must reach this.",
    )
    gate_max_rm_drop = models.FloatField(
        default=0.01,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="How far below the current RM's held-out accuracy the new one may score.",
    )
    gate_kl_factor = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(0.0)],
        help_text="The new policy's KL to the reference may be at most this times the KL target.",
    )
    # Moderation of prompts: {"words": [...], "regexes": [...], "classifier": "<model spec>"}.
    moderation_rules = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(TimeStampedModel):
    class Role(models.TextChoices):
        LABELER = "labeler"
        ADMIN = "admin"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.LABELER)
    # A stable pseudonym used in exports instead of the username.
    pseudonym = models.CharField(max_length=32, unique=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="unique_membership")
        ]

    def save(self, *args: object, **kwargs: object) -> None:
        if not self.pseudonym:
            self.pseudonym = f"labeler-{secrets.token_hex(6)}"
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class Prompt(TimeStampedModel):
    class Split(models.TextChoices):
        TRAIN = "train"
        EVAL = "eval"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    # `text` is the last user turn (or the whole prompt); `chat` the full conversation.
    text = models.TextField()
    chat = models.JSONField(null=True, blank=True)
    content_hash = models.CharField(max_length=64, editable=False)
    source = models.CharField(max_length=200, blank=True)
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.TRAIN)
    metadata = models.JSONField(default=dict, blank=True)

    class Moderation(models.TextChoices):
        CLEAR = "clear"
        FLAGGED = "flagged"  # held out of rounds until an admin releases or drops it
        RELEASED = "released"
        DROPPED = "dropped"

    # The moderation states whose prompts rounds may sample.
    USABLE_MODERATION = (Moderation.CLEAR, Moderation.RELEASED)

    moderation = models.CharField(
        max_length=8, choices=Moderation.choices, default=Moderation.CLEAR, db_index=True
    )
    moderation_reasons = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="unique_prompt")
        ]

    def __str__(self) -> str:
        return self.text[:60]

    @property
    def as_input(self) -> str | list[dict[str, str]]:
        """The prompt as the ML core takes it: a chat list or a plain string."""
        return self.chat if self.chat else self.text


class Demonstration(TimeStampedModel):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="demonstrations")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="demonstrations")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    response = models.TextField()
    source = models.CharField(max_length=32, default="labeler")

    class Meta:
        ordering = ["id"]


class RankingTask(TimeStampedModel):
    class Status(models.TextChoices):
        OPEN = "open"  # offered to labelers until it has `overlap` rankings
        COMPLETE = "complete"  # has its rankings
        CLOSED = "closed"  # no more labeling (imported preferences, cancelled round)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="tasks")
    round = models.ForeignKey(
        "training.Round", on_delete=models.SET_NULL, null=True, blank=True, related_name="tasks"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    overlap = models.PositiveSmallIntegerField(default=1)
    # Denormalised count of submitted rankings, updated under the task's row lock.
    rankings_count = models.PositiveSmallIntegerField(default=0)
    source = models.CharField(max_length=32, default="policy")  # policy | imported | preferences
    is_gold = models.BooleanField(default=False)
    gold_order = models.JSONField(null=True, blank=True, help_text="Known tie groups (ids).")

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "status", "id"]),
            models.Index(fields=["round", "status"]),
        ]
        constraints = [
            # One task per prompt per round: a retried generation step cannot duplicate tasks.
            models.UniqueConstraint(
                fields=["round", "prompt"],
                condition=Q(round__isnull=False),
                name="one_task_per_round_prompt",
            )
        ]

    def __str__(self) -> str:
        return f"task {self.pk} ({self.project})"


class Response(TimeStampedModel):
    """One of the K sampled responses of a task, with its provenance."""

    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="responses")
    position = models.PositiveSmallIntegerField()
    text = models.TextField()
    token_count = models.PositiveIntegerField(null=True, blank=True)
    finished = models.BooleanField(null=True, help_text="EOS reached within the length limit.")
    policy_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    policy_name = models.CharField(max_length=200, blank=True)
    generation = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    # Set at generation when this text nearly repeats an earlier response of the task.
    duplicate_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["task_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["task", "position"], name="unique_response_position")
        ]


class Assignment(TimeStampedModel):
    """A lease of a task to one labeler. One row per (task, labeler), ever."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUBMITTED = "submitted"
        SKIPPED = "skipped"

    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="assignments")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "labeler"], name="one_assignment_per_labeler")
        ]
        indexes = [models.Index(fields=["labeler", "status"])]


class Ranking(TimeStampedModel):
    """A labeler's ordering of a task's responses: tie groups best first, by response id."""

    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="rankings")
    assignment = models.OneToOneField(
        Assignment, on_delete=models.SET_NULL, null=True, blank=True, related_name="ranking"
    )
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="rankings"
    )
    tie_groups = models.JSONField()
    flags = models.JSONField(default=dict, blank=True)
    all_unacceptable = models.BooleanField(default=False)
    time_spent_ms = models.PositiveIntegerField(default=0)
    source = models.CharField(max_length=32, default="labeler")  # labeler | imported | simulated
    # The labeler named in an imported preference file (its `labeler` key), if any.
    imported_labeler = models.CharField(max_length=200, blank=True)
    # A revision supersedes this row (kept, never overwritten): superseded_at is set first,
    # then superseded_by once the revision exists.
    superseded_at = models.DateTimeField(null=True, blank=True)
    superseded_by = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Review(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        REJECTED = "rejected"  # yields no pairs

    review = models.CharField(max_length=8, choices=Review.choices, default=Review.PENDING)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["task", "labeler"],
                condition=Q(labeler__isnull=False, superseded_at__isnull=True),
                name="one_ranking_per_labeler",
            )
        ]


class Comparison(TimeStampedModel):
    """A pair derived from a ranking: `chosen` was placed in a better tie group than `rejected`."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="comparisons")
    ranking = models.ForeignKey(Ranking, on_delete=models.CASCADE, related_name="comparisons")
    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="+")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    chosen = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    rejected = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    margin = models.PositiveSmallIntegerField(help_text="Distance between the two tie groups.")
    round = models.ForeignKey(
        "training.Round", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["ranking", "chosen", "rejected"], name="unique_comparison"
            )
        ]


class Feedback(TimeStampedModel):
    """Thumbs up/down on a single response (the playground, or a task's response)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    prompt = models.JSONField(help_text="A string or a chat list.")
    response = models.TextField()
    rating = models.SmallIntegerField(choices=[(1, "up"), (-1, "down")])
    policy_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["id"]
