"""Integrations with frameworks and tools (each an optional extra): ``conveyor.contrib.django``, ``.otel``."""
