"""The local API server: OpenAI-, Anthropic- and Ollama-compatible routes on one port (`camelid serve`).

It answers with the engine the rest of Camelid uses (one model, one owner
thread), loads models by library name only when the fit engine says they fit,
and binds loopback unless told otherwise (then an API key is required).
"""

from app.core.server.runner import (
           DEFAULT_HOST,
           DEFAULT_PORT,
           ServerConfig,
           ServerHandle,
           is_loopback,
)
from app.core.server.service import ModelService, RequestRecord, ThreadRunner

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ModelService", "RequestRecord", "ServerConfig", "ServerHandle",
           "ThreadRunner", "is_loopback"]
