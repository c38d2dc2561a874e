"""The shop's HTTP API (FastAPI): products, orders with their jobs, webhook endpoints, demo mail.

Serve it with ``uvicorn examples.shop.api:create_api --factory``; settings come from the
environment (see ShopConfig). Handlers are plain ``def``: FastAPI runs them on its thread
pool, where the blocking database and payment calls belong.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from conveyor import Job, JobState
from conveyor.errors import BackendError
from conveyor.web import create_app as create_admin
from conveyor.web.auth import Role, Tokens
from conveyor.web.limits import SizeLimit
from conveyor.webhooks import WebhookURLRefused, check_url, new_secret
from examples.shop import mailbox
from examples.shop.config import ShopConfig
from examples.shop.db import Endpoint, Order, Product, TooManyEndpoints
from examples.shop.jobs import Shop, create_shop
from examples.shop.money import decimal
from examples.shop.orders import Checkout, OrderRefused, OrderRequest, check_key, storable
from examples.shop.payment import PaymentGateway
from examples.shop.staff import staff


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000)


def product_view(p: Product) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "price_cents": p.price_cents, "price": decimal(p.price_cents), "stock": p.stock,
            "available": max(0, p.available)}


def order_view(order: Order, jobs: list[Job] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": order.id,
        "status": order.status,
        "user_id": order.user_id,
        "email": order.email,
        "total_cents": order.total_cents,
        "total": decimal(order.total_cents),
        "currency": "USD",
        "items": [
            {"product_id": i.product_id, "name": i.name, "quantity": i.quantity, "unit_price_cents": i.unit_price_cents,
             "unit_price": decimal(i.unit_price_cents), "total_cents": i.total_cents}
            for i in order.items
        ],
        "workflow_id": order.workflow_id,
        "created_at": order.created_at.isoformat(),
        "invoice": f"/orders/{order.id}/invoice.pdf" if order.invoice_path else None,
        "fulfilled_at": order.fulfilled_at.isoformat() if order.fulfilled_at else None,
    }
    if jobs is not None:
        view["jobs"] = [job_view(j) for j in sorted(jobs, key=lambda j: j.id)]
    return view


def job_view(job: Job) -> dict[str, Any]:
    last = job.last_error
    return {"id": job.id, "type": job.type, "queue": job.queue, "state": job.state.value, "attempt": job.attempt,
            "max_attempts": job.max_attempts, "run_at": job.run_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "last_error": last.error if last else None}


def endpoint_view(e: Endpoint, secret: bool = False) -> dict[str, Any]:
    view = {"id": e.id, "url": e.url, "created_at": e.created_at.isoformat(), "failures": e.failures,
            "disabled_at": e.disabled_at.isoformat() if e.disabled_at else None}
    return {**view, "secret": e.secret} if secret else view


def create_api(config: ShopConfig | None = None, shop: Shop | None = None) -> FastAPI:
    """The shop as an ASGI app; the admin dashboard is mounted at ``/admin`` when Conveyor has one."""
    shop = shop or create_shop(config or ShopConfig.from_env())
    cfg = shop.config
    db = shop.db
    checkout = Checkout(db, PaymentGateway(cfg.payment_latency, cfg.payment_failure_rate), shop.pipeline)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        db.migrate()
        yield
        shop.app.close()

    # No /docs or /redoc: FastAPI's pages load Swagger UI from a CDN, and nothing in the demo may need
    # the internet. The OpenAPI document itself is served at /openapi.json.
    api = FastAPI(title="Conveyor Shop", version="1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    api.state.checkout = checkout
    tokens = Tokens.from_settings(shop.app.settings)
    reader, writer = Depends(staff(tokens, Role.READ)), Depends(staff(tokens, Role.WRITE))

    @api.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body", "message": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid request", "errors": errors}, status_code=422)

    @api.exception_handler(BackendError)
    async def database_down(_: Request, exc: BackendError) -> JSONResponse:
        # raised only where nothing was saved: an order whose COMMIT went unanswered is settled first
        # (Checkout.settle); input no database could store is refused by validation before (422)
        body = {"error": "database unavailable", "detail": "the shop cannot reach its database right now; nothing was saved, try again shortly"}
        return JSONResponse(body, status_code=503, headers={"retry-after": "2"})

    @api.exception_handler(OrderRefused)
    async def refused(_: Request, exc: OrderRefused) -> JSONResponse:
        return JSONResponse(exc.detail, status_code=exc.status, headers={"retry-after": "2"} if exc.status == 503 else None)

    @api.get("/health")
    def health() -> dict[str, Any]:
        counts = {s.value: shop.app.admin.jobs.count(state=s) for s in (JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING, JobState.DEAD)}
        return {"status": "ok", "queue": {**counts, "workers": len(shop.app.admin.workers.list())}}

    @api.get("/products")
    def products() -> list[dict[str, Any]]:
        return [product_view(p) for p in db.products().values()]

    @api.post("/orders", status_code=201)
    def place_order(body: OrderRequest, idempotency_key: Annotated[str | None, Header()] = None) -> JSONResponse:
        """Place an order. Send an ``Idempotency-Key`` header to retry safely: the same key returns the same order."""
        order, replayed = checkout.place(body, check_key(idempotency_key))
        return JSONResponse(order_view(order), status_code=201, headers={"idempotent-replayed": "true"} if replayed else None)

    @api.get("/orders", dependencies=[reader])
    def recent_orders(limit: int = 50) -> list[dict[str, Any]]:
        return [order_view(o) for o in db.orders(min(max(limit, 1), 500))]

    def find_order(order_id: str) -> Order | None:
        try:
            storable(order_id)
        except ValueError:
            return None  # no order has such an id (PostgreSQL could not even compare it)
        return db.order(order_id)

    @api.get("/orders/{order_id}")
    def get_order(order_id: str) -> dict[str, Any]:
        order = find_order(order_id)
        if order is None:
            raise HTTPException(404, f"no order {order_id}")
        jobs = shop.app.admin.jobs.list(workflow_id=order.workflow_id, limit=100) if order.workflow_id else []
        return order_view(order, jobs)

    @api.get("/orders/{order_id}/invoice.pdf")
    def get_invoice(order_id: str) -> FileResponse:
        order = find_order(order_id)
        if order is None or not order.invoice_path or not Path(order.invoice_path).is_file():
            raise HTTPException(404, f"no invoice for order {order_id} yet")
        return FileResponse(order.invoice_path, media_type="application/pdf", filename=f"{order.id}.pdf")

    @api.post("/webhooks", status_code=201, dependencies=[writer])
    def add_webhook(body: WebhookRequest) -> Any:
        """Register an endpoint for order.completed (staff only); the same URL again returns its endpoint, enabled again."""
        try:
            url = check_url(body.url, allow_private=cfg.webhook_allow_private)
        except WebhookURLRefused as exc:
            error = {"field": "url", "message": exc.reason, "type": "url_refused"}
            return JSONResponse({"error": "invalid request", "errors": [error]}, status_code=422)
        try:
            endpoint, created = db.add_endpoint(Endpoint("we_" + secrets.token_hex(6), url, new_secret(), datetime.now(UTC)),
                                                cfg.webhook_max_endpoints)
        except TooManyEndpoints as exc:
            return JSONResponse({"error": str(exc), "limit": exc.limit}, status_code=409)
        return JSONResponse(endpoint_view(endpoint, secret=True), status_code=201 if created else 200)

    @api.get("/webhooks", dependencies=[reader])
    def list_webhooks() -> list[dict[str, Any]]:
        return [endpoint_view(e) for e in db.endpoints()]

    @api.delete("/webhooks/{endpoint_id}", status_code=204, dependencies=[writer])
    def remove_webhook(endpoint_id: str) -> None:
        if not db.remove_endpoint(endpoint_id):
            raise HTTPException(404, f"no webhook endpoint {endpoint_id}")

    @api.get("/demo/mail")
    def demo_mail() -> list[dict[str, Any]]:
        if cfg.mailbox is None:
            raise HTTPException(404, "demo mailbox not enabled (set SHOP_MAILBOX)")
        return mailbox.read(cfg.mailbox)

    mount_dashboard(api, shop)
    api.add_middleware(SizeLimit, max_body_bytes=64 * 1024)  # an order is a few hundred bytes
    return api


def mount_dashboard(api: FastAPI, shop: Shop) -> None:
    """Conveyor's admin API and dashboard at ``/admin``; its token is ``CONVEYOR_ADMIN_TOKEN``."""
    api.mount("/admin", create_admin(shop.app, title="Conveyor Shop"))
