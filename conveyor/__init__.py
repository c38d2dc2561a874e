"""Conveyor: background jobs kept in the database your application already has."""

from conveyor.app import Conveyor
from conveyor.backends.base import JobFilter, WorkerInfo
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
    UnknownJobType,
    WorkflowError,
)
from conveyor.events import JobEvent
from conveyor.job import Job, JobError, JobState, Priority
from conveyor.outcome import Cancel, Snooze
from conveyor.workflow import After, PendingJob, WorkflowStatus, chain, group, step
from conveyor.retry import Exponential, Fixed

__all__ = [
    "After",
    "PendingJob",
    "WorkflowStatus",
    "chain",
    "group",
    "step",
    "BackendError",
    "BackendUnavailable",
    "Cancel",
    "ConfigError",
    "Conveyor",
    "ConveyorError",
    "DeclarationError",
    "Exponential",
    "Fixed",
    "InvalidTransition",
    "Job",
    "JobContext",
    "JobError",
    "JobEvent",
    "JobFilter",
    "JobNotFound",
    "JobState",
    "OptionError",
    "PayloadError",
    "Priority",
    "Settings",
    "Snooze",
    "UnknownJobType",
    "WorkerInfo",
    "WorkflowError",
]
__version__ = "0.1.0"
