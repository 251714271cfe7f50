"""ORM filter leaks (Label Studio's CVE class): every list and export takes only its
allow-listed query parameters; a Django lookup, an ordering or another project's id in
the query string is a 400, never a filter that reaches the database."""

import pytest

from tests.factories import PromptFactory

LISTS = [
    "/api/v1/projects/{slug}/prompts/",
    "/api/v1/projects/{slug}/comparisons/",
    "/api/v1/projects/{slug}/rankings/",
]
LOOKUPS = [
    {"project": "1"},
    {"project__slug": "other"},
    {"labeler__password__startswith": "pbkdf2"},
    {"created_by__is_superuser": "true"},
    {"ordering": "-id"},
    {"text__regex": ".*"},
]


@pytest.mark.parametrize("url", LISTS)
@pytest.mark.parametrize("query", LOOKUPS, ids=lambda q: next(iter(q)))
def test_unknown_query_parameters_are_refused(admin_client_api, project, url, query) -> None:
    response = admin_client_api.get(url.format(slug=project.slug), query)
    assert response.status_code == 400, response.content
    assert next(iter(query)) in response.json()["detail"]


def test_a_lookup_cannot_widen_the_prompt_list(admin_client_api, project) -> None:
    mine = PromptFactory(project=project)
    PromptFactory()  # another project's
    response = admin_client_api.get(f"/api/v1/projects/{project.slug}/prompts/")
    assert [row["id"] for row in response.json()["results"]] == [mine.pk]
