"""Placeholder until the psa sub-application lands."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Mount the psa routes on the root app."""
