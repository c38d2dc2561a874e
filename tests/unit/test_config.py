"""Settings: the PostgreSQL connection and vacuum settings, from the environment."""

from __future__ import annotations

import pytest

from conveyor.config import Settings
from conveyor.errors import ConfigError


def test_connection_settings_come_from_the_environment() -> None:
    env = {
        "CONVEYOR_DB_POOL_SIZE": "4",
        "CONVEYOR_DB_POOLER": "transaction",
        "CONVEYOR_DB_LISTEN_URL": "postgresql://db/direct",
        "CONVEYOR_VACUUM_DEAD_ROWS": "5000",
    }
    s = Settings.load(None, env=env)
    assert (s.db_pool_size, s.db_pooler, s.db_listen_url, s.vacuum_dead_rows) == (4, "transaction", "postgresql://db/direct", 5000)


def test_an_optional_setting_is_switched_off_by_name() -> None:
    assert Settings.load(None, env={"CONVEYOR_VACUUM_DEAD_ROWS": "off"}).vacuum_dead_rows is None
    assert Settings.load(None, env={}).vacuum_dead_rows == 20000


def test_a_bad_pool_size_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="db_pool_size"):
        Settings.load(None, env={"CONVEYOR_DB_POOL_SIZE": "0"})
