"""Placeholder until the kubo_rpc sub-application lands."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Mount the kubo_rpc routes on the root app."""
