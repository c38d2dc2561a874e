from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse

from conveyor.contrib.django.tasks import TaskResultStatus, task_backends
from tests.django_project.shop import jobs
from tests.django_project.shop.models import Order
from tests.django_project.shop.tasks import send_confirmation


def place_order(request: HttpRequest, order_id: str) -> JsonResponse:
    """The order, its Django task and a Conveyor job commit together, or none of them."""
    with transaction.atomic():
        Order.objects.create(id=order_id)
        result = send_confirmation.enqueue(order_id)
        jobs.app.enqueue("audit_order", {"order_id": order_id}, connection=connection)
        if request.POST.get("fail"):
            raise RuntimeError("payment declined")
    return JsonResponse({"result_id": result.id, "status": result.status})


def task_result(request: HttpRequest, result_id: str) -> JsonResponse:
    result = task_backends["default"].get_result(result_id)
    return JsonResponse(
        {
            "status": result.status,
            "return_value": result.return_value if result.status == TaskResultStatus.SUCCESSFUL else None,
            "errors": [{"class": e.exception_class_path, "traceback": e.traceback} for e in result.errors],
            "attempts": result.attempts,
        }
    )
