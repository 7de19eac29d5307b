"""Django settings. Every setting comes from an environment variable (see README)."""

from __future__ import annotations

import hashlib
import os

import dj_database_url

from batchexports import datadir


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not '{raw}'.")
    return value


DATA_DIR = datadir.data_dir()
EXPORT_DIR = datadir.export_dir()

# One secret for the service; Django's signing key is derived from it so that rotating
# BATCHEXPORTS_SECRET_KEY is the only knob. Several comma-separated keys may be given to
# rotate: the first encrypts, all decrypt (see exports/encryption.py).
BATCHEXPORTS_SECRET_KEYS = [key.strip() for key in datadir.secret_key().split(",") if key.strip()]
SECRET_KEY = hashlib.sha256(("django:" + BATCHEXPORTS_SECRET_KEYS[0]).encode()).hexdigest()

DEBUG = _env_bool("BATCHEXPORTS_DEBUG")
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("BATCHEXPORTS_ALLOWED_HOSTS", "*").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("BATCHEXPORTS_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "batchexports.accounts",
    "batchexports.exports",
    "batchexports.web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "batchexports.urls"
ASGI_APPLICATION = "batchexports.asgi.application"
APPEND_SLASH = True
# Capture bodies may be large (a /batch/ of many events); capture enforces its own limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("BATCHEXPORTS_CAPTURE_MAX_BODY_BYTES", str(20 * 1024 * 1024))) + 1024

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'metadata.sqlite3'}"),
        conn_max_age=int(os.environ.get("BATCHEXPORTS_DB_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL lets the API read while the worker writes run progress.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# The web page (batchexports.web): its sign-in page, and where signing in and out lead.
LOGIN_URL = "web:login"
LOGIN_REDIRECT_URL = "web:home"
LOGOUT_REDIRECT_URL = "web:login"

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "batchexports.accounts.authentication.PersonalAPIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "batchexports.accounts.permissions.APIScopePermission",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "exceptions_hog.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

EXCEPTIONS_HOG = {
    "EXCEPTION_REPORTING": "batchexports.exports.errors.report_exception",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "batchexports API",
    "DESCRIPTION": "PostHog-compatible batch exports API, served by batchexports.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {},
}


# Backfills a project may have Starting or Running at once; one more is answered 429
# `too_many_concurrent_backfills`, as PostHog answers it.
BATCHEXPORTS_MAX_CONCURRENT_BACKFILLS = _env_positive_int("BATCHEXPORTS_MAX_CONCURRENT_BACKFILLS", 10)
# How long a run whose destination fails retryably keeps retrying (capped backoff, at most 5 min
# between attempts) before it fails: an outage shorter than this heals by itself.
BATCHEXPORTS_RETRY_WINDOW_SECONDS = _env_positive_int("BATCHEXPORTS_RETRY_WINDOW_SECONDS", 24 * 3600)

# Which engine implementation the API calls (see engine/interface.py).
BATCHEXPORTS_ENGINE = os.environ.get("BATCHEXPORTS_ENGINE", "batchexports.engine.temporal_engine.TemporalEngine")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("BATCHEXPORTS_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
