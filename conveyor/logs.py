"""How a Conveyor process logs when the application has not set logging up: one format for every worker.

Two forms: plain text for people, or one JSON object per line for log aggregators
(``--log-format json``, ``CONVEYOR_LOG_FORMAT=json``). A JSON line carries the record's time
(ISO 8601, UTC), level, logger and message, and every field the record was given as ``extra``:
the worker's per-run line has ``job_id``, ``job_type``, ``queue``, ``attempt``, ``outcome`` and
``duration_ms``; ``ctx.log`` lines in a handler carry the job's id, type, attempt and workflow.
A traceback goes in ``traceback``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
FORMS = ("text", "json")
STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["traceback"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(level: str | int = "INFO", *, only_if_unset: bool = False, form: str = "text") -> None:
    """Log to stderr in Conveyor's format (``conveyor worker`` and ``app.run_worker()`` alike).

    ``only_if_unset``: leave an application that configured logging itself alone (its root
    logger has handlers); otherwise a worker run from plain Python would log nothing, its
    start-up line and every failed run's traceback lost. ``form``: ``text`` or ``json``.
    """
    if form not in FORMS:
        raise ValueError(f"log format must be 'text' or 'json', not {form!r}")
    if only_if_unset and logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if form == "json" else logging.Formatter(FORMAT))
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler])
