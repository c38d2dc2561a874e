"""The worker runtime: an asyncio process that claims, runs and writes back jobs."""

from conveyor.worker.runtime import Worker

__all__ = ["Worker"]
