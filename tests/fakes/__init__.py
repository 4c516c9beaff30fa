"""Fake upstreams for tests (no fixtures here: conftest.py wires them to `aiohttp_server`)."""

from tests.fakes.anthropic import FakeAnthropic, Recorded, Reply

__all__ = ("FakeAnthropic", "Recorded", "Reply")
