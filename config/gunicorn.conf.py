"""gunicorn's settings for the web process, shared by the Docker image, compose and
`bench.labeling_load` (which measures this configuration): `gunicorn -c
config/gunicorn.conf.py config.wsgi`. Command-line flags override these.

Sync workers, one request at a time each, `2 x cores + 1` of them (gunicorn's own
advice), at most 9 unless GUNICORN_WORKERS says otherwise: the ranking screen's requests
are short and CPU-bound, so threads in one process would only queue behind its GIL, and
on a many-core host each worker's memory would add up with no gain for the labelers.
Streamed exports hold a worker while they run; raise GUNICORN_WORKERS where many run at
once.
"""

import os

# The cores this process may run on (a container's CPU set), not the host's count.
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", min(2 * cores + 1, 9)))
worker_class = "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None


def post_worker_init(worker: object) -> None:
    """Build Django's URL resolver (which imports every view module) before the worker
    takes its first request, which would otherwise pay for it: in-process, with the
    production settings, a first `tasks/next` took 181 ms without this and 25 ms with it
    (2026-12-01)."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (a cached property: reading it builds it)
