"""Settings shared by every environment, read from the environment (django-environ).

Nothing here needs a server: with no variables set, the app runs on SQLite and a Celery
broker on the local file system (see local.py). Production sets DATABASE_URL,
CELERY_BROKER_URL and DJANGO_SECRET_KEY (see production.py and docs/operations.md).
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

VAR_DIR = Path(env.str("RLHF_STUDIO_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "core",
    "labeling",
    "training",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DJANGO_CONN_MAX_AGE", default=0))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/projects/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static"]

# Uploads are parsed in memory and never stored as files served by the web server.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", default=20 * 2**20)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
RLHF_IMPORT_MAX_BYTES = env.int("RLHF_IMPORT_MAX_BYTES", default=50 * 2**20)

# --- Security headers -----------------------------------------------------------------
# An enforcing Content-Security-Policy on every page: scripts and styles only from our own
# origin, no inline script; data reaches scripts through json_script (a non-executable
# <script type="application/json">).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its `WWW-Authenticate: Token` header makes a missing or revoked token a
    # 401 (with session first DRF answers 403). Browsers without a token use the session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.api_exception_handler",
    # `?format=jsonl` selects an export format (PRODUCT.md section 3), not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "RLHF Studio API",
    "DESCRIPTION": "Labeling, comparisons export, rounds and models of RLHF Studio.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Celery ---------------------------------------------------------------------------
# The run rows in the database are the record; the broker is only transport.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("out", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
# Longest run we allow (seconds); the Redis visibility timeout must exceed it, or Redis
# would hand a still-running task to a second worker.
RLHF_TASK_HARD_TIME_LIMIT = env.int("RLHF_TASK_HARD_TIME_LIMIT", default=6 * 3600)
RLHF_TASK_SOFT_TIME_LIMIT = env.int("RLHF_TASK_SOFT_TIME_LIMIT", default=6 * 3600 - 300)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": RLHF_TASK_HARD_TIME_LIMIT + 3600}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# --- Models and devices ---------------------------------------------------------------
RLHF_DEVICE = env.str("RLHF_DEVICE", default="auto")
RLHF_DTYPE = env.str("RLHF_DTYPE", default="auto")
RLHF_ARTIFACT_DIR = Path(env.str("RLHF_ARTIFACT_DIR", default=str(VAR_DIR / "models")))
RLHF_DEFAULT_BASE_MODEL = env.str("RLHF_DEFAULT_BASE_MODEL", default="default")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
}

# Runs write progress at most every RLHF_PROGRESS_INTERVAL seconds; a running run whose
# heartbeat is older than RLHF_HEARTBEAT_TIMEOUT is considered abandoned (worker killed).
RLHF_PROGRESS_INTERVAL = env.float("RLHF_PROGRESS_INTERVAL", default=1.0)
RLHF_HEARTBEAT_TIMEOUT = env.int("RLHF_HEARTBEAT_TIMEOUT", default=300)
# Celery beat fails abandoned runs (and their rounds) every RLHF_REAP_INTERVAL seconds. Run
# one beat per deployment: `celery -A config beat` (compose's `beat` service), or `-B` on
# the only worker (`make demo`, `make worker`).
RLHF_REAP_INTERVAL = env.int("RLHF_REAP_INTERVAL", default=60)
CELERY_BEAT_SCHEDULE = {
    "reap-stale-runs": {
        "task": "training.tasks.reap_stale_runs",
        "schedule": float(RLHF_REAP_INTERVAL),
        "options": {"expires": float(RLHF_REAP_INTERVAL)},  # a late copy is useless
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
