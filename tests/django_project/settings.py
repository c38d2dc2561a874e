"""A small Django project that queues its tasks in Conveyor (the database comes from CONVEYOR_DJANGO_DATABASE_URL)."""

import os
import tempfile

from tests.django_project.databases import database_settings

DATABASE_URL = os.environ.get("CONVEYOR_DJANGO_DATABASE_URL") or f"sqlite:///{tempfile.gettempdir()}/conveyor-django.db"

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
ROOT_URLCONF = "tests.django_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["conveyor.contrib.django", "tests.django_project.shop"]
try:  # Django 5.2 (Python 3.11): the backport of django.tasks is an app of its own
    import django_tasks  # noqa: F401

    INSTALLED_APPS.insert(0, "django_tasks")
except ImportError:
    pass
DATABASES = {"default": database_settings(DATABASE_URL)}
TASKS = {
    "default": {
        "BACKEND": "conveyor.contrib.django.ConveyorBackend",
        "QUEUES": ["default", "email"],
        "OPTIONS": {"APP": "tests.django_project.shop.jobs:app", "MAX_ATTEMPTS": 1},
    }
}
