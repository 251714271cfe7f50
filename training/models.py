"""The training domain: model versions (the registry), rounds of the loop, and runs.

A TrainingRun row is the record of a piece of GPU work; Celery only carries its id.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.models import TimeStampedModel


class ModelVersion(TimeStampedModel):
    class Kind(models.TextChoices):
        BASE = "base"  # the project's base model (e.g. SmolLM2), used as SFT when none exists
        SFT = "sft"
        RM = "rm"
        PPO = "ppo"
        # The policy stage's other recipes (Round.Recipe): each names the policy it trained.
        DPO = "dpo"
        BEST_OF_N = "best_of_n"
        RLOO = "rloo"

    class Role(models.TextChoices):
        POLICY = "policy"
        REWARD = "reward"

    class Status(models.TextChoices):
        PENDING = "pending"  # artifact being written
        READY = "ready"  # artifact complete and verified
        FAILED = "failed"

    project = models.ForeignKey(
        "labeling.Project", on_delete=models.CASCADE, related_name="model_versions"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    role = models.CharField(max_length=8, choices=Role.choices)
    version = models.PositiveIntegerField(help_text="1, 2, ... per project.")
    parent = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children"
    )
    # A save_pretrained folder (safetensors), or a spec the ML core resolves ("default", "tiny").
    artifact = models.CharField(max_length=1000)
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    is_current = models.BooleanField(default=False)

    class Meta:
        ordering = ["project_id", "version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="unique_model_version"),
            # One current policy and one current RM per project, enforced by the database.
            models.UniqueConstraint(
                fields=["project", "role"],
                condition=Q(is_current=True),
                name="one_current_per_role",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.kind}-v{self.version}"

    @property
    def label(self) -> str:
        return f"{self.kind}-v{self.version}"


class Round(TimeStampedModel):
    class Stage(models.TextChoices):
        GENERATING = "generating"
        LABELING = "labeling"
        BUILDING_PAIRS = "building_pairs"
        TRAINING_RM = "training_rm"
        TRAINING_PPO = "training_ppo"
        # Stopped by the promotion gate (after the RM or the policy stage): an admin approves
        # (the round goes on, or its policy is promoted) or rejects (the current models stay).
        NEEDS_REVIEW = "needs_review"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Recipe(models.TextChoices):
        """How the policy stage trains (PRODUCT.md: ppo, dpo, best_of_n, rloo)."""

        PPO = "ppo"
        DPO = "dpo"
        BEST_OF_N = "best_of_n"
        RLOO = "rloo"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    recipe = models.CharField(max_length=16, choices=Recipe.choices, default=Recipe.PPO)
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.GENERATING)
    num_prompts = models.PositiveIntegerField(default=0)
    sampling_policy = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reward_model = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    policy = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    failed_stage = models.CharField(max_length=16, blank=True)
    # The promotion gate: which stage's gate stopped the round (training_rm or training_ppo),
    # its checks (new vs current metrics), and the admin's decision.
    review_stage = models.CharField(max_length=16, blank=True)
    gate = models.JSONField(default=dict, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_decision = models.CharField(max_length=8, blank=True)  # approved | rejected
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["project_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="unique_round_number")
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} round {self.number} ({self.stage})"


class TrainingRun(TimeStampedModel):
    class Kind(models.TextChoices):
        GENERATE = "generate"
        SFT = "sft"
        RM = "rm"
        PPO = "ppo"
        DPO = "dpo"
        BEST_OF_N = "best_of_n"
        RLOO = "rloo"
        EVAL = "eval"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    project = models.ForeignKey(
        "labeling.Project", on_delete=models.CASCADE, related_name="training_runs"
    )
    round = models.ForeignKey(
        Round, on_delete=models.CASCADE, null=True, blank=True, related_name="runs"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    # Finer progress than done/total: the phase, its sub-steps, tokens, and when it began
    # (the dashboard's elapsed time and ETA read it).
    progress_detail = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Final or latest metrics.")
    config = models.JSONField(default=dict, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    logs = models.TextField(blank=True)
    error = models.TextField(blank=True)
    output = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} ({self.status})"


class MetricPoint(models.Model):
    """One step of a run's metric series (append-only; the dashboard plots these)."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="points")
    step = models.PositiveIntegerField()
    values = models.JSONField()

    class Meta:
        ordering = ["run_id", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="unique_metric_step")]

    def __str__(self) -> str:
        return f"run {self.run_id} step {self.step}"


class PlaygroundReply(TimeStampedModel):
    """One reply of the current policy to a playground prompt: queued, running (a worker is
    sampling it), then done or failed.

    The row is the record (the Celery message carries only its id); thumbs on the reply
    are stored as a labeling Feedback, linked here so a second click changes the rating
    instead of adding a row.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running", "generating"  # a worker took it and is sampling
        DONE = "done"
        FAILED = "failed"

    project = models.ForeignKey(
        "labeling.Project", on_delete=models.CASCADE, related_name="playground_replies"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="playground_replies"
    )
    prompt = models.JSONField(help_text="A string or a chat list ending with a user turn.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    text = models.TextField(blank=True)
    finished = models.BooleanField(null=True, help_text="EOS reached within the length limit.")
    policy_version = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error = models.TextField(blank=True)
    feedback = models.OneToOneField(
        "labeling.Feedback", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    started_at = models.DateTimeField(
        null=True, blank=True, help_text="When a worker began sampling the reply."
    )

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"playground reply {self.pk} ({self.status})"
