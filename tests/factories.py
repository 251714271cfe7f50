"""factory_boy factories for every domain row. Tests build data here, never by hand."""

import hashlib

import factory
from django.contrib.auth import get_user_model

from labeling import models as lm
from training import models as tm


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = lm.Project

    slug = factory.Sequence(lambda n: f"project-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())
    k = 4
    overlap = 1
    base_model = "tiny"
    guidelines = "Rank the most **helpful** and harmless response first."


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = lm.Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = lm.Membership.Role.LABELER


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = lm.Prompt

    project = factory.SubFactory(ProjectFactory)
    text = factory.Sequence(lambda n: f"Write a short poem about the number {n}.")
    content_hash = factory.LazyAttribute(lambda o: hashlib.sha256(o.text.encode()).hexdigest())


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = tm.ModelVersion

    project = factory.SubFactory(ProjectFactory)
    kind = tm.ModelVersion.Kind.BASE
    role = tm.ModelVersion.Role.POLICY
    version = factory.Sequence(lambda n: n + 1)
    artifact = "tiny"
    status = tm.ModelVersion.Status.READY


class RoundFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = tm.Round

    project = factory.SubFactory(ProjectFactory)
    number = factory.Sequence(lambda n: n + 1)
    stage = tm.Round.Stage.LABELING


class RankingTaskFactory(factory.django.DjangoModelFactory):
    """A task with `k` responses (pass `responses__k=...` or set project.k)."""

    class Meta:
        model = lm.RankingTask
        skip_postgeneration_save = True

    project = factory.SubFactory(ProjectFactory)
    prompt = factory.SubFactory(PromptFactory, project=factory.SelfAttribute("..project"))
    overlap = factory.LazyAttribute(lambda o: o.project.overlap)
    source = "imported"

    @factory.post_generation
    def responses(self, create: bool, extracted: list[str] | None, **kwargs: object) -> None:
        if not create:
            return
        texts = extracted or [f"Response {i} to task {self.pk}." for i in range(self.project.k)]
        for i, text in enumerate(texts):
            ResponseFactory(task=self, position=i, text=text)


class ResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = lm.Response

    task = factory.SubFactory(RankingTaskFactory)
    position = factory.Sequence(lambda n: n)
    text = factory.Sequence(lambda n: f"Response text {n}.")
    token_count = factory.LazyAttribute(lambda o: len(o.text.split()))
    policy_name = "imported"


class DemonstrationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = lm.Demonstration

    project = factory.SubFactory(ProjectFactory)
    prompt = factory.SubFactory(PromptFactory, project=factory.SelfAttribute("..project"))
    author = factory.SubFactory(UserFactory)
    response = factory.Sequence(lambda n: f"An ideal answer number {n}.")


class TrainingRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = tm.TrainingRun

    project = factory.SubFactory(ProjectFactory)
    kind = tm.TrainingRun.Kind.RM


class RankingFactory(factory.django.DjangoModelFactory):
    """A submitted ranking; pass `tie_groups` (response ids, best first). Defaults to the
    task's responses in position order, no ties."""

    class Meta:
        model = lm.Ranking

    task = factory.SubFactory(RankingTaskFactory)
    labeler = factory.SubFactory(UserFactory)
    tie_groups = factory.LazyAttribute(
        lambda o: [[r.pk] for r in o.task.responses.order_by("position")]
    )
    time_spent_ms = 30_000
    source = "labeler"


class MetricPointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = tm.MetricPoint

    run = factory.SubFactory(TrainingRunFactory)
    step = factory.Sequence(lambda n: n + 1)
    values = factory.LazyAttribute(lambda o: {"rm/loss": 1.0 / o.step, "rm/accuracy": 0.5})


class PlaygroundReplyFactory(factory.django.DjangoModelFactory):
    """A finished playground reply of `user` in `project` (a member's personal chat)."""

    class Meta:
        model = tm.PlaygroundReply

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    prompt = "Say hello."
    status = tm.PlaygroundReply.Status.DONE
    text = "Hello!"
    finished = True
