"""Camelid: run the best local LLM your machine can hold."""

__version__ = "0.1.0"
