"""Embeddings: a sentence-embedding GGUF loaded through llama.cpp, next to the chat model.

The API server's /v1/embeddings and /api/embed use it, and so will document search.
"""

from app.core.embed.embedder import Embedder, Embeddings, EmbedReport, is_embedding_model

__all__ = ["EmbedReport", "Embedder", "Embeddings", "is_embedding_model"]
