"""Conveyor: background jobs kept in the database your application already has."""

from conveyor.admin import Admin, Selection
from conveyor.app import Conveyor
from conveyor.backends.base import JobFilter, Schedule, WorkerInfo
from conveyor.batch import BatchContext, BatchError, ItemFailed
from conveyor.config import Settings
from conveyor.context import JobContext
from conveyor.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    ConveyorError,
    DeclarationError,
    InvalidTransition,
    JobNotFound,
    OptionError,
    PayloadError,
    ScheduleNotFound,
    UnknownJobType,
    WorkflowError,
)
from conveyor.events import JobEvent
from conveyor.job import Job, JobError, JobState, Priority
from conveyor.outcome import Cancel, Snooze
from conveyor.ratelimit import RateLimit, RetryAfter
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
    "Fixed",
    "InvalidTransition",
    "ItemFailed",
    "Job",
    "JobContext",
    "JobError",
    "JobEvent",
    "JobFilter",
    "JobNotFound",
    "JobState",
    "OptionError",
    "PayloadError",
    "PendingJob",
    "Priority",
    "RateLimit",
    "RetryAfter",
    "Schedule",
    "ScheduleNotFound",
    "Selection",
    "Settings",
    "Snooze",
    "UnknownJobType",
    "WorkerInfo",
    "WorkflowError",
    "WorkflowStatus",
    "chain",
    "group",
    "step",
]
__version__ = "0.1.0"
