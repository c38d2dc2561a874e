"""Hostile input: oversized requests, injection strings everywhere a name or filter goes in, webhooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Conveyor, JobState, Selection
from conveyor.errors import PayloadError, UnknownJobType, WebhookVerificationError
from conveyor.payload import MAX_PAYLOAD_BYTES
from conveyor.testing import running_worker, wait_until
from conveyor.web import create_app
from conveyor.webhooks import ReplayGuard, sign_headers, verify
from examples.shop.api import create_api
from examples.shop.config import ShopConfig
from examples.shop.jobs import create_shop
from tests.web.conftest import WRITE, serve

ROOT = Path(__file__).resolve().parents[2]

INJECTIONS = [
    "x' OR '1'='1",
    "default'); DROP TABLE conveyor_jobs; --",
    '"; DELETE FROM conveyor_jobs WHERE ""="',
    "%s %s %(x)s ? :name $1",
    "\\'; SELECT pg_sleep(5); --",
    "ü→🚀 ' ",
]


@pytest.fixture
def admin(database_url: str) -> Iterator[tuple[Conveyor, str]]:
    app = Conveyor(database_url, admin_token=WRITE, poll_interval=0.05, finish_delay=0.002)
    app.backend.migrate()
    try:
        with serve(create_app(app)) as url:
            yield app, url
    finally:
        app.close()


@pytest.fixture
def shop_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    shop = create_shop(ShopConfig(database_url=database_url, data_dir=tmp_path / "data", payment_latency=0.0))
    shop.db.migrate()
    try:
        with serve(create_api(shop=shop)) as url:
            yield url
    finally:
        shop.app.close()


# -- size limits -------------------------------------------------------------------------


def test_enqueue_refuses_an_oversized_payload_and_stores_nothing(app: Conveyor) -> None:
    @app.job()
    def big(p: dict[str, Any]) -> None:
        return None

    with pytest.raises(PayloadError) as refused:
        app.enqueue("big", {"blob": "x" * MAX_PAYLOAD_BYTES})
    assert refused.value.errors[0]["type"] == "too_large"
    assert app.admin.jobs.count() == 0


def assert_size_limits(url: str, path: str, headers: dict[str, str], limit: int) -> None:
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        big = client.post(path, content=b"{" + b" " * limit + b"}", headers={"content-type": "application/json"})
        assert big.status_code == 413 and "limit" in big.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
            for _ in range(limit // 65536 + 2):
                yield b" " * 65536

        streamed = client.post(path, content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        fat = client.get(path, headers={f"x-padding-{i}": "y" * 1000 for i in range(20)})
        assert fat.status_code == 431
        broken = client.post(path, content=b'{"not": json', headers={"content-type": "application/json"})
        assert broken.status_code == 422


def test_shop_refuses_oversized_bodies_and_headers(shop_url: str) -> None:
    assert_size_limits(shop_url, "/orders", {}, 64 * 1024)
    with httpx.Client(base_url=shop_url) as client:
        assert client.get("/products").status_code == 200  # and still serves


def test_admin_api_refuses_oversized_bodies_and_headers(admin: tuple[Conveyor, str]) -> None:
    _, url = admin
    assert_size_limits(url, "/api/jobs/retry", {"authorization": f"Bearer {WRITE}"}, 1_048_576)


# -- injection strings as names and filters ------------------------------------------------


def test_injection_strings_are_names_like_any_other(app: Conveyor) -> None:
    """Declared as job type and queue, enqueued, run and filtered: stored and matched as data."""
    for n, text in enumerate(INJECTIONS):
        app.job(name=f"{text}-{n}", queue=f"{text}-q{n}")(lambda p: None)
    ids = [app.enqueue(f"{text}-{n}", {"note": text}) for n, text in enumerate(INJECTIONS)]
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.count(state=JobState.COMPLETED) == len(ids), message="every hostile-named job to run")
    for n, text in enumerate(INJECTIONS):
        [job] = app.admin.jobs.list(type=f"{text}-{n}", queue=[f"{text}-q{n}"])
        assert job.payload == {"note": text}
        assert app.admin.jobs.list(type=text) == [] and app.admin.jobs.count(queue=[text]) == 0
        with pytest.raises(UnknownJobType):
            app.enqueue(text, {})
        assert app.admin.dead_letters.retry(Selection.matching(type=[text], state=[JobState.DEAD]), actor="test") == 0
    assert app.admin.jobs.count() == len(ids)


def test_injection_strings_through_the_cli(database_url: str, app: Conveyor) -> None:
    @app.job()
    def plain(p: dict[str, Any]) -> None:
        return None

    app.enqueue("plain", {})
    env = {**os.environ, "CONVEYOR_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    for text in INJECTIONS[:5]:
        for argv in (["jobs", "--type", text, "--queue", text, "--json"], ["dlq", "list", "--type", text, "--queue", text]):
            done = subprocess.run([sys.executable, "-m", "conveyor", *argv], env=env, capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            if "--json" in argv:
                assert json.loads(done.stdout) == []
    assert app.admin.jobs.count() == 1


def test_injection_strings_through_the_admin_api(admin: tuple[Conveyor, str]) -> None:
    app, url = admin

    @app.job()
    def plain(p: dict[str, Any]) -> None:
        return None

    app.enqueue("plain", {})
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {WRITE}"}, timeout=30) as client:
        for text in INJECTIONS:
            page = client.get("/api/jobs", params={"type": text, "queue": text})
            assert page.status_code in (200, 422), page.text
            if page.status_code == 200:
                assert page.json()["jobs"] == []
            for action in ("retry", "cancel", "purge"):
                answer = client.post(f"/api/jobs/{action}", json={"filter": {"type": [text], "queue": [text]}})
                assert answer.status_code in (200, 422) and (answer.status_code == 422 or answer.json()["count"] == 0), answer.text
            assert client.get(f"/api/workflows/{text}").status_code in (404, 422)
        assert client.get("/api/jobs").json()["jobs"][0]["type"] == "plain"
    assert app.admin.jobs.count() == 1


def test_injection_strings_through_the_shop_api(shop_url: str) -> None:
    with httpx.Client(base_url=shop_url, timeout=30) as client:
        for text in INJECTIONS:
            assert client.get(f"/orders/{text}").status_code in (404, 422)
            order = {"user_id": text[:64], "email": "a@example.com", "items": [{"product_id": text[:64], "quantity": 1}],
                     "payment_token": "tok_visa"}
            assert client.post("/orders", json=order).status_code in (409, 422)
        assert len(client.get("/products").json()) == 3


def test_a_nul_byte_in_a_name_or_payload_is_refused_alike_on_both_backends(app: Conveyor) -> None:
    from conveyor.errors import OptionError, PayloadError

    with pytest.raises(OptionError):
        app.job(name="nul\x00type")(lambda p: None)

    @app.job()
    def fine(p: dict) -> None:  # type: ignore[type-arg]
        return None

    with pytest.raises(OptionError):
        app.enqueue("fine", {}, queue="q\x00")
    with pytest.raises(PayloadError, match="NUL"):
        app.enqueue("fine", {"note": "a\x00b"})
    assert app.admin.jobs.count() == 0


# -- webhooks: what tests/unit/test_webhooks.py does not cover yet --------------------------


def test_webhook_verification_refuses_a_moved_timestamp_and_a_swapped_id() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"type": "order.completed"}'
    headers = sign_headers(secret, "msg_a", body)
    moved = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 10)}
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(secret, moved, body)
    swapped = {**headers, "webhook-id": "msg_b"}
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(secret, swapped, body)
    guard = ReplayGuard()
    verify(secret, headers, body, guard=guard)
    guard.remember("msg_a", int(headers["webhook-timestamp"]))
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify(secret, headers, body, guard=guard)


def test_shop_refuses_loopback_webhook_endpoints_unless_allowed(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_ADMIN_TOKEN", "staff-token-hostile")
    for allowed in (False, True):
        shop = create_shop(ShopConfig(database_url=database_url, data_dir=tmp_path / "data", webhook_allow_private=allowed))
        shop.db.migrate()
        try:
            with serve(create_api(shop=shop)) as url:
                answer = httpx.post(f"{url}/webhooks", json={"url": "http://127.0.0.1:9/hook"}, timeout=30,
                                    headers={"authorization": "Bearer staff-token-hostile"})
                assert answer.status_code == (201 if allowed else 422), answer.text
        finally:
            shop.app.close()
