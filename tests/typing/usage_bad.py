"""Wrong use of job handles: every line marked with an expected error code must be reported by ``mypy --strict``, nothing else."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import Conveyor

app = Conveyor("sqlite:///typing.db")


class Order(BaseModel):
    order_id: str


class Email(BaseModel):
    to: str


@app.job(queue="payments")
def charge(p: Order) -> None: ...


@app.job(queu="payments")  # E: call-overload, untyped-decorator
def misspelt_declaration(p: Order) -> None: ...


charge.enqueue(Email(to="a@example.com"))  # E: arg-type
charge.enqueue(Order(order_id="o-1"), prority=5)  # E: call-arg
charge.enqueue(Order(order_id="o-1"), colour="red")  # E: call-arg
charge.enqueue(Order(order_id="o-1"), priority="high")  # E: arg-type
charge.options(queue=5)  # E: arg-type
charge.step(Email(to="a@example.com"))  # E: arg-type
charge(Email(to="a@example.com"))  # E: arg-type
