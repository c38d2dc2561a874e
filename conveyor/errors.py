"""The exception tree: every error Conveyor raises on purpose.

    ConveyorError
    ├── ConfigError            a setting is missing or malformed (names the key)
    ├── DeclarationError       @app.job / app.cron given something it cannot use
    ├── UnknownJobType         enqueue of a type no handler was declared for
    ├── PayloadError           payload refused by its model (``errors`` lists each field)
    ├── OptionError            an enqueue option is out of range or of the wrong type
    ├── JobNotFound            no job with that id (``job_id``)
    ├── InvalidTransition      the job is not in a state that allows the action
    ├── WorkflowError          a dependency graph has a cycle or names unknown jobs
    ├── ScheduleNotFound       no cron schedule with that name (``name``)
    ├── ResultError            a handler's result or a ctx.once value cannot be stored (type or size)
    ├── ScheduleConflict       a run-time schedule change clashes with an existing or code-declared one
    ├── JobFailed              a waited-for job ended dead, cancelled or expired (``job``, ``error``)
    │   └── WorkflowFailed     a waited-for workflow ended failed or cancelled (``status``)
    ├── ResultTimeout          the wait for a job or workflow ran out (also a ``TimeoutError``)
    ├── BackendError           the database failed; the driver's error is ``__cause__``
    │   └── BackendUnavailable the database cannot be reached (or, SQLite, stays locked past the busy timeout)
    └── WebhookError           a webhook could not be signed, sent or trusted
        ├── WebhookURLRefused  the URL is not http(s) or points at a private/loopback address
        │   └── WebhookHostUnresolved  its host name does not resolve now (retried at delivery)
        ├── WebhookVerificationError  a received webhook's signature or timestamp is not valid
        └── WebhookDeliveryError      the receiver did not answer 2xx (``status_code``, ``retry_after``)
"""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Something went wrong in Conveyor."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())


class ConfigError(ConveyorError):
    """A configuration value is missing or malformed."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"{key}: {problem}")


class DeclarationError(ConveyorError):
    """A job or schedule declaration is invalid."""


class UnknownJobType(ConveyorError):
    """No handler is declared for this job type."""

    def __init__(self, job_type: str) -> None:
        self.job_type = job_type
        super().__init__(f"unknown job type {job_type!r}: declare it with @app.job first")


class PayloadError(ConveyorError):
    """The payload does not match the job's model."""

    def __init__(self, job_type: str, errors: list[dict[str, Any]]) -> None:
        self.job_type = job_type
        self.errors = errors
        fields = "; ".join(f"{e['field'] or '<payload>'}: {e['message']}" for e in errors)
        super().__init__(f"invalid payload for {job_type!r}: {fields}")


class OptionError(ConveyorError):
    """A job option is out of range or of the wrong type."""

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        super().__init__(f"option {option!r}: {problem}")


class JobNotFound(ConveyorError):
    """No job has this id."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id}")


class InvalidTransition(ConveyorError):
    """The job's state does not allow this action."""

    def __init__(self, job_id: int, state: str, action: str) -> None:
        self.job_id = job_id
        self.state = state
        self.action = action
        super().__init__(f"cannot {action} job {job_id}: it is {state}")


class WorkflowError(ConveyorError):
    """The workflow graph is invalid (a cycle, or an unknown dependency)."""


class ScheduleNotFound(ConveyorError):
    """No cron schedule has this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no schedule named {name!r}")


class ResultError(ConveyorError):
    """A handler's result or a ``ctx.once`` value cannot be stored: its type has no JSON form, or it is too large."""
class ScheduleConflict(ConveyorError):
    """This schedule change clashes with an existing schedule."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        super().__init__(f"schedule {name!r}: {problem}")


class JobFailed(ConveyorError):
    """The job did not complete."""

    def __init__(self, job: Any, message: str | None = None) -> None:
        self.job = job  # the conveyor.job.Job as it ended
        self.job_id: int = job.id
        self.state: str = str(job.state)
        last = job.last_error
        self.error: str | None = last.error if last is not None else None
        super().__init__(message or f"job {job.id} ({job.type}) ended {job.state}" + (f": {self.error}" if self.error else ""))


class WorkflowFailed(JobFailed):
    """The workflow did not complete."""

    def __init__(self, status: Any, job: Any) -> None:
        self.status = status  # the conveyor.workflow.WorkflowStatus as it ended
        last = job.last_error
        super().__init__(job, f"workflow {status.id} ended {status.state}: job {job.id} ({job.type}) ended {job.state}"
                         + (f": {last.error}" if last is not None else ""))


class ResultTimeout(ConveyorError, TimeoutError):
    """The wait for a result ran out."""

    def __init__(self, what: str, timeout: float, state: str) -> None:
        self.state = state
        super().__init__(f"{what} not finished after {timeout:g} s (it is {state})")


class BackendError(ConveyorError):
    """The database failed."""


class BackendUnavailable(BackendError):
    """The database cannot be reached."""


# -- webhooks (conveyor/webhooks.py) ----------------------------------------------------


class WebhookError(ConveyorError):
    """A webhook could not be signed, sent or trusted."""


class WebhookURLRefused(WebhookError):
    """This webhook URL is refused."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"webhook URL {url!r} refused: {reason}")


class WebhookHostUnresolved(WebhookURLRefused):
    """The URL's host name does not resolve now: refused at registration, retried at delivery."""


class WebhookVerificationError(WebhookError):
    """The webhook's signature or timestamp is not valid."""


class WebhookDeliveryError(WebhookError):
    """The webhook receiver did not accept the delivery."""

    def __init__(self, url: str, problem: str, status_code: int | None = None, retry_after: float | None = None) -> None:
        self.url = url
        self.status_code = status_code
        self.retry_after = retry_after
        super().__init__(f"webhook delivery to {url} failed: {problem}")
