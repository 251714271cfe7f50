"""Laptop defaults: DEBUG on, a throwaway secret, SQLite and the file-system broker."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# Only for local development; production.py refuses to start without DJANGO_SECRET_KEY.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="local-dev-only-not-a-secret")
