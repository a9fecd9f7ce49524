"""Placeholder until the gateway sub-application lands."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Mount the gateway routes on the root app."""
