"""docs/configuration.md stays true to Settings: every setting is documented with its default."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

from conveyor.config import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented_with_its_default() -> None:
    rows = {line.split("|")[1].strip(" `"): line.split("|")[2].strip() for line in DOC.read_text().splitlines() if line.startswith("| `")}
    for field in fields(Settings):
        assert field.name in rows, f"{field.name} is missing from docs/configuration.md"
        default = field.default
        if isinstance(default, int | float) and not isinstance(default, bool) and default is not MISSING:
            assert rows[field.name] == f"{default:g}", f"{field.name}: documented {rows[field.name]!r}, default {default!r}"
    assert set(rows) == {f.name for f in fields(Settings)}
