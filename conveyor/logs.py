"""How a Conveyor process logs when the application has not set logging up: one format for every worker."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(level: str | int = "INFO", *, only_if_unset: bool = False) -> None:
    """Log to stderr in Conveyor's format (``conveyor worker`` and ``app.run_worker()`` alike).

    ``only_if_unset``: leave an application that configured logging itself alone (its root
    logger has handlers); otherwise a worker run from plain Python would log nothing, its
    start-up line and every failed run's traceback lost.
    """
    if only_if_unset and logging.getLogger().handlers:
        return
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, format=FORMAT)
