"""A minimal Django project for the in-process middleware tests (sync and async views, streaming)."""

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["sqreen_mw.django.SqreenMiddleware"]
ROOT_URLCONF = "tests.django_project.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
TIME_ZONE = "UTC"
