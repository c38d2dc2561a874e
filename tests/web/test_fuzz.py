"""Fuzz the admin API from its own OpenAPI document (schemathesis): whatever arrives, never a 500."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from conveyor import Conveyor
from conveyor.web import create_app
from tests.web.conftest import WRITE, serve

NOT_IMPLEMENTED = 501  # cron routes answer this, on purpose, until cron schedules exist


def test_admin_api_never_answers_500(database_url: str) -> None:
    app = Conveyor(database_url, admin_token=WRITE)
    try:
        app.backend.migrate()
        with serve(create_app(app)) as url:
            schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
            failures: list[str] = []
            for result in schema.get_all_operations():
                operation = result.ok()

                @given(operation.as_strategy())
                @settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
                def check(case: schemathesis.Case) -> None:
                    response = case.call(base_url=url, headers={"Authorization": f"Bearer {WRITE}"})
                    if response.status_code >= 500 and response.status_code != NOT_IMPLEMENTED:
                        failures.append(f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}: {response.text[:200]}")

                check()
            assert not failures, "\n".join(failures[:10])
    finally:
        app.close()
