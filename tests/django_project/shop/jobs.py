"""Conveyor's own @app.job in the Django project, next to its Django tasks (same database)."""

from pydantic import BaseModel

from conveyor import Conveyor
from tests.django_project import settings

app = Conveyor(settings.DATABASE_URL)


class Audit(BaseModel):
    order_id: str


@app.job(queue="audit")
def audit_order(p: Audit) -> None:
    from tests.django_project.shop.models import AuditEntry

    AuditEntry.objects.create(order_id=p.order_id)
