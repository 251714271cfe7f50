"""Schemathesis fuzzes every operation of `/api/schema/` in-process, against the WSGI app.

Every operation runs with a project admin's token and with a labeler's token on seeded
projects: `fuzz` is mid-round (prompts, a labeling round with tasks and responses, a
ranking and its comparisons, a model version, a run with metrics, a demonstration,
playground replies), `fuzz-idle` has the same members and can start a round, and
`fuzz-other` is another team's. Path parameters are drawn from the real slugs and ids of all
three as well as at random. Each example runs in a savepoint that is rolled back (and the
throttle cache is cleared), so every request meets the same seeded state; what the services
queue on commit runs eagerly inside it, on the `tiny` model with a few tokens.

Checks: no 5xx, a documented status code and content type, a body that conforms to the
documented schema, and no 2xx for an object of `fuzz-other` (IDOR). Generation is
derandomized, so CI reruns the same examples.

Budget: RLHF_FUZZ_EXAMPLES examples per operation and token (default 10: one to two
minutes on two cores); `RLHF_FUZZ_EXAMPLES=500 pytest tests/security/test_fuzz_api.py`
fuzzes longer.
"""

import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import TestPhase
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from labeling.services.projects import api_token_create
from labeling.services.rankings import comparisons_from_ranking
from tests.factories import (
    DemonstrationFactory,
    MembershipFactory,
    MetricPointFactory,
    ModelVersionFactory,
    PlaygroundReplyFactory,
    ProjectFactory,
    PromptFactory,
    RankingFactory,
    RankingTaskFactory,
    RoundFactory,
    TrainingRunFactory,
    UserFactory,
)

FUZZ_EXAMPLES = int(os.environ.get("RLHF_FUZZ_EXAMPLES", "10"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Enough to run a round's real stages on the `tiny` model in well under a second each.
TINY_TRAINING = {
    "prompts_per_round": 2,
    "generate": {"batch_size": 2, "prompts_per_batch": 2},
    "sft": {"batch_size": 2, "epochs": 1},
    "rm": {"batch_size": 2, "max_length": 32, "epochs": 1},
    "ppo": {
        "steps": 1, "batch_size": 2, "mini_batch_size": 2, "ppo_epochs": 1,
        "max_new_tokens": 2, "forward_batch_size": 2, "checkpoint_every": 0,
    },
}  # fmt: skip


@dataclass(frozen=True)
class FuzzWorld:
    tokens: dict[str, str]  # role -> API token key
    ids: dict[str, list[str | int]]  # path parameter -> the real values, seeded ones first
    foreign: dict[str, set[str | int]]  # path parameter -> values of the users' non-project


def _seed_project(
    slug: str, members: dict[str, object], *, mid_round: bool = True
) -> dict[str, list[str | int]]:
    """A project in the middle of its first round (or with none yet): the ids its URLs take."""
    project = ProjectFactory(
        slug=slug, k=2, overlap=2, max_new_tokens=2, training_config=TINY_TRAINING
    )
    users = [MembershipFactory(project=project, user=u, role=r).user for r, u in members.items()]
    users = users or [MembershipFactory(project=project, role="admin").user]
    policy = ModelVersionFactory(project=project, is_current=True)
    prompts = PromptFactory.create_batch(3, project=project)
    DemonstrationFactory(project=project, prompt=prompts[2], author=users[0])
    replies = [PlaygroundReplyFactory(project=project, user=user) for user in users]
    ids: dict[str, list[str | int]] = {
        "slug": [slug],
        "reply_id": [r.pk for r in replies],
        "prompt_id": [p.pk for p in prompts],
    }
    if mid_round:
        round_ = RoundFactory(project=project, number=1, sampling_policy=policy, num_prompts=2)
        tasks = [RankingTaskFactory(project=project, prompt=p, round=round_) for p in prompts[:2]]
        ranking = RankingFactory(task=tasks[0], labeler=users[-1])
        comparisons_from_ranking(ranking=ranking)
        run = TrainingRunFactory(project=project, round=round_, kind="generate", status="succeeded")
        MetricPointFactory.create_batch(2, run=run)
        ids |= {
            "task_id": [t.pk for t in tasks],
            "round_id": [round_.pk],
            "run_id": [run.pk],
            "ranking_id": [ranking.pk],
        }
    return ids


@pytest.fixture
def fuzz_world(db, settings, tmp_path: Path) -> FuzzWorld:
    """`fuzz` is mid-round, `fuzz-idle` (same members) can start one, `fuzz-other` is
    another team's: its objects must stay out of reach."""
    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    admin = UserFactory(username="fuzz-admin", is_staff=True)
    labeler = UserFactory(username="fuzz-labeler")
    members = {"admin": admin, "labeler": labeler}
    ids = _seed_project("fuzz", members)
    idle = _seed_project("fuzz-idle", members, mid_round=False)
    other = _seed_project("fuzz-other", {})
    for name in ids:
        ids[name] += idle.get(name, []) + other[name]
    tokens = {role: api_token_create(username=user.username) for role, user in members.items()}
    return FuzzWorld(
        tokens=tokens, ids=ids, foreign={name: set(values) for name, values in other.items()}
    )


@pytest.fixture
def server_errors() -> Iterator[list[str]]:
    """Tracebacks of the exceptions the app turned into 500s, newest last."""
    errors: list[str] = []

    def record(sender: object, **kwargs: object) -> None:
        errors.append(traceback.format_exc())

    got_request_exception.connect(record)
    yield errors
    got_request_exception.disconnect(record)


@pytest.fixture
def wsgi_app() -> Iterator[WSGIHandler]:
    """Django's WSGI handler, minus the connection recycling at request boundaries (as
    Django's own test client does): it would close the test's open transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(params=["admin", "labeler"])
def role(request: pytest.FixtureRequest) -> str:
    """Whose token the requests carry."""
    return str(request.param)


@pytest.fixture
def api_schema(fuzz_world: FuzzWorld, wsgi_app: WSGIHandler, role: str):
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Token {fuzz_world.tokens[role]}"},
            "dictionaries": {name: {"values": values} for name, values in fuzz_world.ids.items()},
            "parameters": {
                f"path.{name}": {"dictionary": name, "probability": 0.5} for name in fuzz_world.ids
            },
        }
    )
    return schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


def _aim_at_seeded_objects(case: schemathesis.Case, world: FuzzWorld) -> None:
    """The coverage phase varies one part of a request at a time around fixed values;
    unless the part it varies is the path, send it to the seeded objects, so that body and
    query variations reach the views' logic instead of a 404."""
    meta = case.meta
    if meta is None or meta.phase.name != TestPhase.COVERAGE:
        return
    if meta.phase.data.parameter_location == ParameterLocation.PATH:
        return
    for name in case.path_parameters or {}:
        case.path_parameters[name] = world.ids[name][0]


def _no_foreign_objects(world: FuzzWorld) -> CheckFunction:
    def no_foreign_objects(
        ctx: object, response: schemathesis.Response, case: schemathesis.Case
    ) -> None:
        """Neither user belongs to `fuzz-other`: its objects answer 403 or 404, never 2xx."""
        foreign = [
            name
            for name, value in (case.path_parameters or {}).items()
            if value in world.foreign.get(name, set())
        ]
        if foreign and response.status_code < 300:
            raise AssertionError(f"{response.status_code} for another project's {foreign[0]}")

    return no_foreign_objects


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_answers_every_request_as_documented(
    case, fuzz_world, server_errors, django_capture_on_commit_callbacks
):
    _aim_at_seeded_objects(case, fuzz_world)
    server_errors.clear()
    with transaction.atomic():
        with django_capture_on_commit_callbacks(execute=True):
            response = case.call()
        transaction.set_rollback(True)
    cache.clear()
    try:
        case.validate_response(response, checks=[*CHECKS, _no_foreign_objects(fuzz_world)])
    except Exception as failure:
        for error in server_errors:
            failure.add_note(f"The server raised:\n{error}")
        raise
