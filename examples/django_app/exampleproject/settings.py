"""Settings of the Django example: no database, no sessions, sqreen_mw's middleware first."""

from __future__ import annotations

import os

from exampleproject.monitoring import init_sqreen

DEBUG = os.environ.get("DJANGO_DEBUG", "").lower() in {"1", "true", "yes", "on"}
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me")
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    # First (or right after SecurityMiddleware), so every later middleware and view sees the request context:
    # a middleware of yours that calls sqreen_mw.identify() must come after it.
    "sqreen_mw.django.SqreenMiddleware",
]
ROOT_URLCONF = "exampleproject.urls"
WSGI_APPLICATION = "exampleproject.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
TIME_ZONE = "UTC"  # Django's default, America/Chicago, would also become the process's TZ
USE_TZ = True

init_sqreen()
