"""Fixtures of the dashboard tests: the exported tiny ISSTAD bundle (from tests/line)."""

from __future__ import annotations

from tests.line.conftest import isstad_bundle  # noqa: F401 - a fixture, used by name
