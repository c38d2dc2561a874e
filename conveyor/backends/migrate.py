"""Numbered schema migrations: ``<backend>/migrations/NNNN_name.sql``, applied in order once."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load(flavour: str) -> list[Migration]:
    """The migrations shipped for ``flavour`` ("sqlite" or "postgres"), oldest first."""
    folder = resources.files(f"conveyor.backends.{flavour}") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)
