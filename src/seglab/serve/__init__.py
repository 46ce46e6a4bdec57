"""`seglab serve`: an HTTP API and a browser page for one model (FastAPI on uvicorn); see app.py."""

from __future__ import annotations

from .app import create_app, serve

__all__ = ["create_app", "serve"]
