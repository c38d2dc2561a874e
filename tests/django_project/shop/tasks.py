"""Django tasks (django.tasks API) that Conveyor runs."""

from typing import Any

from conveyor.contrib.django.tasks import TaskContext
from tests.django_project.shop.models import Order

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


@task(priority=10, queue_name="email")
def send_confirmation(order_id: str) -> str:
    Order.objects.filter(id=order_id).update(confirmed=True)
    return f"confirmed {order_id}"


@task()
def explode(reason: str) -> None:
    raise ValueError(reason)


@task(takes_context=True)
def report_attempt(context: TaskContext, n: int) -> dict[str, Any]:
    return {"attempt": context.attempt, "n": n, "id": context.task_result.id}


@task()
async def double(n: int) -> int:
    return n * 2
