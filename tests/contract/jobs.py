"""Job declarations shared by the contract tests."""

from __future__ import annotations

from pydantic import BaseModel, Field

from conveyor import Conveyor


class Item(BaseModel):
    product_id: str
    quantity: int = Field(gt=0)


class Order(BaseModel):
    order_id: str
    email: str
    items: list[Item] = []


def declare(app: Conveyor) -> None:
    """The job types the contract tests enqueue: one with a model, one with plain dicts."""

    @app.job(queue="orders", max_attempts=3, backoff="fixed")
    def process_order(p: Order) -> None:
        return None

    @app.job(max_attempts=2)
    def plain(p: dict) -> None:  # type: ignore[type-arg]
        return None

    @app.job(queue="email", priority=5)
    def send_email(p: dict) -> None:  # type: ignore[type-arg]
        return None
