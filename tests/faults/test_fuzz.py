"""Fuzz: random JSON against payload models (PayloadError or success, nothing else), and
schemathesis over the shop's OpenAPI document (never a 500)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from conveyor.errors import PayloadError
from conveyor.payload import decode, encode
from examples.shop.api import create_api
from examples.shop.config import ShopConfig
from examples.shop.jobs import create_shop
from examples.shop.orders import OrderRequest
from tests.web.conftest import serve


class Item(BaseModel):
    sku: str = Field(max_length=20)
    quantity: int = Field(ge=1)


class Order(BaseModel):
    order_id: str
    items: list[Item]
    note: str | None = None


MODELS: list[type[BaseModel] | None] = [None, Order, Item, OrderRequest]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
shaped = st.fixed_dictionaries({"order_id": st.text(max_size=5), "items": st.lists(st.fixed_dictionaries(
    {"sku": st.text(max_size=25), "quantity": st.integers(-2, 3)}), max_size=3)})


@given(model=st.sampled_from(MODELS), data=json_values | shaped)
@settings(max_examples=400, deadline=None)
def test_payload_validation_refuses_or_accepts_never_crashes(model: type[BaseModel] | None, data: Any) -> None:
    try:
        text = encode("fuzzed", model, data, max_bytes=4096)
    except PayloadError as exc:
        assert exc.errors and all({"field", "message", "type"} <= set(e) for e in exc.errors)
        return
    import json

    stored = json.loads(text)
    try:
        decode("fuzzed", model, stored)  # what was accepted at enqueue is accepted at claim
    except PayloadError as exc:  # pragma: no cover - a mismatch is the bug this test looks for
        pytest.fail(f"accepted at enqueue, refused at claim: {exc}")


@pytest.fixture
def shop_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    shop = create_shop(ShopConfig(database_url=database_url, data_dir=tmp_path / "data", payment_latency=0.0))
    shop.db.migrate()
    try:
        with serve(create_api(shop=shop)) as url:
            yield url
    finally:
        shop.app.close()


def test_shop_api_never_answers_500(shop_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{shop_url}/openapi.json")
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(operation.as_strategy())
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=shop_url)
            if response.status_code >= 500 and response.status_code != 503:
                failures.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200} -> {response.status_code}: {response.text[:200]}")

        check()
    assert not failures, "\n".join(failures[:10])
