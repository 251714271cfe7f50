"""Template tags of the pages (frontend/templates): what base.html needs beyond the context."""

from django import template
from django.http import HttpRequest

from labeling.models import Project
from labeling.selectors import is_project_admin

register = template.Library()


@register.simple_tag(takes_context=True)
def project_admin(context: template.Context, project: Project) -> bool:
    """Whether the requesting user administers `project` (for admin-only navigation)."""
    request: HttpRequest | None = context.get("request")
    return request is not None and is_project_admin(user=request.user, project=project)
