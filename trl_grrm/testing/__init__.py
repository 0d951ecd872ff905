"""Offline stand-ins for what CPU machines cannot download: a tiny model and an OpenAI-compatible judge server."""

from .tiny_models import build_tiny_chat_model

__all__ = ["build_tiny_chat_model"]
