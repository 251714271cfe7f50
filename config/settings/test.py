"""Test settings: fast hashing, tasks run in-process unless a test starts a real worker."""

from .base import *  # noqa: F403
from .base import REST_FRAMEWORK, env

SECRET_KEY = "test-only-not-a-secret"  # noqa: S105
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
RLHF_DEVICE = env.str("RLHF_DEVICE", default="cpu")
RLHF_DTYPE = env.str("RLHF_DTYPE", default="float32")
RLHF_DEFAULT_BASE_MODEL = "tiny"
# The suite sends many requests from one address and, on SQLite, reuses user ids from test
# to test: rates no test reaches. tests/security sets low ones to test the throttles.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {
        scope: "100000/min" for scope in REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    },
}
