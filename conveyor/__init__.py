"""Conveyor: background jobs kept in the database your application already has."""

from typing import TYPE_CHECKING

from conveyor.admin import Admin, Selection
from conveyor.app import Conveyor
from conveyor.backends.base import JobFilter, Schedule, WorkerInfo
from conveyor.batch import BatchContext, BatchError, ItemFailed
from conveyor.config import Settings
from conveyor.context import JobContext
from conveyor.deprecation import renamed
from conveyor.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    ConveyorError,
    DeclarationError,
    InvalidTransition,
    JobFailed,
    JobNotFound,
    OptionError,
    PayloadError,
    ResultError,
    ResultTimeout,
    ScheduleConflict,
    ScheduleNotFound,
    UnknownJobType,
    WorkflowError,
    WorkflowFailed,
)
from conveyor.events import JobEvent
from conveyor.handle import JobHandle
from conveyor.job import FailedAttempt, Job, JobState, Priority
from conveyor.middleware import Middleware, RunInfo
from conveyor.outcome import Cancel, Snooze
from conveyor.ratelimit import RateLimit, Throttled
from conveyor.retry import Exponential, Fixed
from conveyor.workflow import After, PendingJob, WorkflowStatus, chain, group, step

__all__ = [
    "Admin",
    "After",
    "BackendError",
    "BackendUnavailable",
    "BatchContext",
    "BatchError",
    "Cancel",
    "ConfigError",
    "Conveyor",
    "ConveyorError",
    "DeclarationError",
    "Exponential",
    "FailedAttempt",
    "Fixed",
    "InvalidTransition",
    "ItemFailed",
    "Job",
    "JobContext",
    "JobEvent",
    "JobFailed",
    "JobFilter",
    "JobHandle",
    "JobNotFound",
    "JobState",
    "Middleware",
    "OptionError",
    "PayloadError",
    "PendingJob",
    "Priority",
    "RateLimit",
    "ResultError",
    "ResultTimeout",
    "RunInfo",
    "Schedule",
    "ScheduleConflict",
    "ScheduleNotFound",
    "Selection",
    "Settings",
    "Snooze",
    "Throttled",
    "UnknownJobType",
    "WorkerInfo",
    "WorkflowError",
    "WorkflowFailed",
    "WorkflowStatus",
    "chain",
    "group",
    "step",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    JobError = FailedAttempt  # deprecated names, one release (see conveyor/deprecation.py)
    RetryAfter = Throttled
else:
    __getattr__ = renamed(__name__, {"JobError": ("conveyor.FailedAttempt", lambda: FailedAttempt), "RetryAfter": ("conveyor.Throttled", lambda: Throttled)})
