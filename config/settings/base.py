"""Settings shared by every environment, read from the environment (django-environ).

Nothing here needs a server: with no variables set, the app runs on SQLite and a Celery
broker on the local file system (see local.py). Production sets DATABASE_URL,
CELERY_BROKER_URL and DJANGO_SECRET_KEY (see production.py and docs/operations.md).
"""

from datetime import timedelta
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
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here (no CDN)
    "axes",
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
    # Last, as django-axes asks: turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
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
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/projects/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- Login lockout (django-axes) ---------------------------------------------------------
# The login form and the admin's login: RLHF_LOGIN_FAILURE_LIMIT failures for one username
# from one address lock that pair out for RLHF_LOGIN_COOLOFF_MINUTES (429). The backend
# needs `request` in authenticate(); Django's login views pass it (in tests use
# force_login, or client.login(request=HttpRequest(), ...)). `manage.py axes_reset`
# lifts lockouts.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("RLHF_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("RLHF_LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False  # no "AXES: BEGIN ..." banner on every manage.py command
AXES_CLIENT_IP_CALLABLE = "core.throttling.client_address"

# Password reset mails a link: its pages exist only when a mail server is configured
# (config/urls.py); without one, an admin sets passwords (manage.py changepassword).
EMAIL_HOST = env.str("DJANGO_EMAIL_HOST", default="")
EMAIL_PORT = env.int("DJANGO_EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("DJANGO_EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("DJANGO_EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("DJANGO_EMAIL_USE_TLS", default=True)
DEFAULT_FROM_EMAIL = env.str("DJANGO_DEFAULT_FROM_EMAIL", default="webmaster@localhost")

# Throttle counters (API rates) live here; set REDIS_URL when several web processes
# serve the site, so that they count together.
CACHES = {"default": env.cache("REDIS_URL", default="locmemcache://")}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static"]

# One size limit (docs/api.md "Limits"): an import file, and any request body, is at most
# RLHF_IMPORT_MAX_BYTES. The API's parsers answer a larger body with a JSON 413 before
# reading it; Django's own check is set to the same number (the API handler turns it into
# the same 413). Uploads are parsed in memory, never stored as files the web server serves.
RLHF_IMPORT_MAX_BYTES = env.int("RLHF_IMPORT_MAX_BYTES", default=50 * 2**20)
DATA_UPLOAD_MAX_MEMORY_SIZE = RLHF_IMPORT_MAX_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = RLHF_IMPORT_MAX_BYTES
# Project guidelines (Markdown, rendered on every labeling page), in UTF-8 bytes.
RLHF_GUIDELINES_MAX_BYTES = env.int("RLHF_GUIDELINES_MAX_BYTES", default=64 * 2**10)

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
        "core.authentication.ThrottledTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # 429 with Retry-After. `token_failure`: bad tokens per client address (counted by
    # core.authentication). The others: per user, POSTs to views with that throttle_scope
    # (core.throttling.WriteScopedRateThrottle). Rates are "N/s|min|hour|day".
    "DEFAULT_THROTTLE_CLASSES": ["core.throttling.WriteScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "token_failure": env.str("RLHF_TOKEN_FAILURE_RATE", default="20/min"),
        "playground": env.str("RLHF_PLAYGROUND_RATE", default="60/min"),
        "training_start": env.str("RLHF_TRAINING_START_RATE", default="30/hour"),
        "import": env.str("RLHF_IMPORT_RATE", default="60/hour"),
    },
    # Proxies in front of Django that append to X-Forwarded-For (compose's nginx: 1); 0
    # trusts only REMOTE_ADDR. Logins (django-axes) use the same address.
    "NUM_PROXIES": env.int("RLHF_NUM_PROXIES", default=0),
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON only, under formats.json_safety's rules; the prompt import also takes multipart.
    "DEFAULT_PARSER_CLASSES": ["core.parsers.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "core.openapi.ApiSchema",
    "EXCEPTION_HANDLER": "core.exceptions.api_exception_handler",
    # `?format=jsonl` selects an export format (PRODUCT.md section 3), not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "RLHF Studio API",
    "DESCRIPTION": "Labeling, comparisons export, rounds and models of RLHF Studio.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
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
# Devices (processes) one RM or SFT run trains on: above 1, the worker runs it through
# `accelerate launch --num_processes N` as a child process (training.services.launcher),
# with RLHF_ACCELERATE_CONFIG as its --config_file when set (else DDP on this node).
RLHF_GPUS_PER_RUN = env.int("RLHF_GPUS_PER_RUN", default=1)
RLHF_ACCELERATE_CONFIG = env.str("RLHF_ACCELERATE_CONFIG", default="")
RLHF_ARTIFACT_DIR = Path(env.str("RLHF_ARTIFACT_DIR", default=str(VAR_DIR / "models")))
RLHF_DEFAULT_BASE_MODEL = env.str("RLHF_DEFAULT_BASE_MODEL", default="default")
# Folders whose models (save_pretrained folders, .gguf files) projects may name as their
# base model; empty: only default, tiny and the project's own versions (see
# training.services.model_specs).
RLHF_MODEL_ROOTS = env.list("RLHF_MODEL_ROOTS", default=[])

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
