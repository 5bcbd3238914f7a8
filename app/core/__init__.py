"""Camelid's domain logic. Never imports Qt (a test enforces it)."""
