"""The Django admin cannot break the lease invariant or the labelers' counters."""

from labeling.models import Assignment
from labeling.services.rankings import ranking_submit
from labeling.services.tasks import task_lease_next
from tests.factories import RankingTaskFactory


def test_assignments_are_read_only_but_leases_can_be_ended(admin_client, project, labeler) -> None:  # type: ignore[no-untyped-def]
    submitted_task, leased_task = (
        RankingTaskFactory(project=project),
        RankingTaskFactory(project=project),
    )
    lease = task_lease_next(project=project, labeler=labeler)
    assert lease is not None and lease.task == submitted_task
    ids = list(submitted_task.responses.values_list("id", flat=True))
    ranking_submit(task=submitted_task, labeler=labeler, order=[ids], flags=None, time_spent_ms=1)
    active = task_lease_next(project=project, labeler=labeler)
    assert active is not None and active.task == leased_task
    submitted = Assignment.objects.get(task=submitted_task)

    page = admin_client.get(f"/admin/labeling/assignment/{submitted.pk}/change/")
    assert page.status_code == 200
    form = page.content.decode()
    assert 'name="expires_at_0"' in form  # a lease can be ended by hand
    assert 'name="status"' not in form and 'name="labeler"' not in form
    assert admin_client.get(f"/admin/labeling/assignment/{submitted.pk}/delete/").status_code == 403
    assert admin_client.get(f"/admin/labeling/assignment/{active.pk}/delete/").status_code == 200
    assert admin_client.get("/admin/labeling/assignment/add/").status_code == 403
