"""Test settings: fast hashing, tasks run in-process unless a test starts a real worker."""

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = "test-only-not-a-secret"  # noqa: S105
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
RLHF_DEVICE = env.str("RLHF_DEVICE", default="cpu")
RLHF_DTYPE = env.str("RLHF_DTYPE", default="float32")
RLHF_DEFAULT_BASE_MODEL = "tiny"
