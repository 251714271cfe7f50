"""The Django admin cannot break the lease invariant or the labelers' counters."""

from datetime import timedelta

from labeling.models import Assignment, RankingTask
from labeling.services.leasing import task_lease_next
from labeling.services.rankings import ranking_submit
from tests.factories import RankingTaskFactory


def _submitted_and_active(project, labeler):
    submitted_task = RankingTaskFactory(project=project)
    leased_task = RankingTaskFactory(project=project)
    lease = task_lease_next(project=project, labeler=labeler)
    assert lease is not None and lease.task == submitted_task
    ids = list(submitted_task.responses.values_list("id", flat=True))
    ranking_submit(task=submitted_task, labeler=labeler, order=[ids], flags=None, time_spent_ms=1)
    active = task_lease_next(project=project, labeler=labeler)
    assert active is not None and active.task == leased_task
    return Assignment.objects.get(task=submitted_task), active


def test_assignments_are_read_only_but_leases_can_be_ended(admin_client, project, labeler) -> None:
    submitted, active = _submitted_and_active(project, labeler)
    page = admin_client.get(f"/admin/labeling/assignment/{submitted.pk}/change/")
    assert page.status_code == 200
    form = page.content.decode()
    assert 'name="expires_at_0"' in form  # a lease can be ended by hand
    assert 'name="status"' not in form and 'name="labeler"' not in form
    assert admin_client.get(f"/admin/labeling/assignment/{submitted.pk}/delete/").status_code == 403
    assert admin_client.get(f"/admin/labeling/assignment/{active.pk}/delete/").status_code == 200
    assert admin_client.get("/admin/labeling/assignment/add/").status_code == 403
    bulk = admin_client.post(
        "/admin/labeling/assignment/",
        {"action": "delete_selected", "_selected_action": [submitted.pk], "post": "yes"},
    )
    assert bulk.status_code == 403 and Assignment.objects.filter(pk=submitted.pk).exists()


def test_a_lease_can_be_shortened_not_extended(admin_client, project, labeler) -> None:
    _, active = _submitted_and_active(project, labeler)
    url = f"/admin/labeling/assignment/{active.pk}/change/"

    def post(when):
        return admin_client.post(
            url,
            {"expires_at_0": when.strftime("%Y-%m-%d"), "expires_at_1": when.strftime("%H:%M:%S")},
        )

    later = active.expires_at + timedelta(hours=2)
    response = post(later)
    assert response.status_code == 200 and "not extended" in response.content.decode()
    assert post(active.expires_at - timedelta(minutes=10)).status_code == 302  # saved
    active.refresh_from_db()
    assert active.expires_at < later - timedelta(hours=1)


def test_deleting_a_task_with_rankings_still_cascades(admin_client, project, labeler) -> None:
    submitted, _ = _submitted_and_active(project, labeler)
    task_id = submitted.task_id
    page = admin_client.get(f"/admin/labeling/rankingtask/{task_id}/delete/")
    assert page.status_code == 200 and "permission" not in page.content.decode().lower()
    assert (
        admin_client.post(
            f"/admin/labeling/rankingtask/{task_id}/delete/", {"post": "yes"}
        ).status_code
        == 302
    )
    assert not RankingTask.objects.filter(pk=task_id).exists()
    assert not Assignment.objects.filter(pk=submitted.pk).exists()
