"""Conveyor for Django: a Django Tasks backend, its worker command, and Conveyor's tables in Django's database.

>>> # settings.py
>>> INSTALLED_APPS = [..., "conveyor.contrib.django"]
>>> TASKS = {"default": {"BACKEND": "conveyor.contrib.django.ConveyorBackend", "QUEUES": ["default", "email"]}}

``task.enqueue(...)`` then stores the job in Django's own database, inside the open
``transaction.atomic()`` block, and ``python manage.py conveyor_worker`` runs it. See docs/django.md.
"""

from conveyor.contrib.django.backend import ConveyorBackend

__all__ = ["ConveyorBackend"]
