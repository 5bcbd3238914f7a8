"""One embedding model on the engine's owner thread: load it from the library, embed texts.

llama-cpp-python does the work (`Llama(embedding=True)`, `embed(normalize=True)`);
this adds what an app needs around it: the header is checked before llama.cpp
reads the file, a chat model is refused with a sentence (its "embeddings" are
not trained for search), every input is counted in tokens so an over-long one
is either refused or cut *and reported* (llama-cpp-python cuts at n_batch
silently), and inputs are bounded in number and size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.errors import ModelLoadError, PromptTooLongError, UsageError
from app.core.fit import LlamaLogCapture, ModelMeta, read_gguf

#: Architectures llama.cpp runs as encoders; others are embedding models only with a pooling type.
ENCODER_ARCHITECTURES = frozenset({"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3",
                                   "modern-bert", "neo-bert", "t5encoder", "xlm-roberta"})
#: Most inputs one request may embed, and most characters per input.
MAX_INPUTS = 2048
MAX_CHARS = 1_000_000
#: Tokens of the texts embedded in one llama.cpp batch (see `Embedder.embed`).
BATCH_TOKENS = 256
#: The longest context an embedding model is loaded with (its whole input must fit one batch).
MAX_CTX = 8192


def is_embedding_model(meta: ModelMeta) -> bool:
    """Whether the GGUF is a sentence-embedding model (an encoder, or a decoder with a pooling type)."""
    pooling = meta.metadata.get(f"{meta.architecture}.pooling_type")
    if isinstance(pooling, int) and pooling > 0:
        return True
    return meta.architecture in ENCODER_ARCHITECTURES


@dataclass(frozen=True)
class EmbedReport:
    path: str
    n_ctx: int
    dimensions: int
    seconds: float


@dataclass
class Embeddings:
    vectors: list[list[float]]
    #: Tokens of every input together (after any cut).
    tokens: int
    #: Indexes of inputs that were longer than the model's context and were cut to it.
    truncated: list[int]
    seconds: float


class Embedder:
    """An embedding model owned by the thread that loaded it (like the chat Engine)."""

    def __init__(self) -> None:
        self._llm: Any = None
        self._owner: int | None = None
        self.model_path: Path | None = None
        self.report: EmbedReport | None = None

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def _check_owner(self) -> None:
        if self._owner is not None and self._owner != threading.get_ident():
            raise RuntimeError("The embedding model is owned by another thread.")

    def load(self, path: Path | str, *, n_gpu_layers: int = 0, n_threads: int | None = None) -> EmbedReport:
        """Load `path` (unloading any current one). ModelFileError/UsageError/ModelLoadError with a sentence."""
        from app.core.chat.engine import (
            check_gguf,
            default_batch_threads,
            default_threads,
            llama_reason,
        )
        from app.core.machine import llama_cpp_module

        path = Path(path)
        check_gguf(path)
        meta = read_gguf(path)
        if not is_embedding_model(meta):
            raise UsageError(f"{path.name} is a chat model ({meta.architecture}), not an embedding model.",
                             "Name an embedding model, such as all-MiniLM-L6-v2 or Qwen3-Embedding-0.6B.")
        if self._llm is not None:
            self.unload()
        llama_cpp = llama_cpp_module()
        n_ctx = max(64, min(meta.n_ctx_train or 512, MAX_CTX))
        started = time.perf_counter()
        threads = n_threads or default_threads()
        # Embedding is prompt processing: the batch threads Camelid gives prompts (all physical cores,
        # except on 2 cores where one is left for the rest of the machine).
        batch_threads = n_threads or default_batch_threads()
        with LlamaLogCapture() as log:
            try:
                llm = llama_cpp.Llama(str(path), embedding=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                                      n_gpu_layers=n_gpu_layers, n_threads=threads,
                                      n_threads_batch=batch_threads, verbose=False)
            except (ValueError, RuntimeError, OSError) as exc:
                reason = llama_reason(log.text) or str(exc)
                raise ModelLoadError(f"llama.cpp could not load the embedding model {path.name} ({reason}).",
                                     "Download it again, or choose another embedding model.") from exc
        self._llm = llm
        self._owner = threading.get_ident()
        self.model_path = path
        self.report = EmbedReport(path=str(path), n_ctx=int(llm.n_ctx()), dimensions=int(llm.n_embd()),
                                  seconds=time.perf_counter() - started)
        return self.report

    def unload(self) -> None:
        if self._llm is None:
            return
        self._check_owner()
        llm, self._llm = self._llm, None
        close = getattr(llm, "close", None)
        if close is not None:
            close()
        self._owner = None
        self.model_path = None
        self.report = None

    def count_tokens(self, text: str) -> int:
        self._require()
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def _require(self) -> None:
        if self._llm is None:
            raise ModelLoadError("No embedding model is loaded.", "Load an embedding model first.")
        self._check_owner()

    def embed(self, texts: Sequence[str], *, normalize: bool = True, truncate: bool = True) -> Embeddings:
        """One vector per text (unit length when `normalize`).

        A text longer than the model's context is cut to it and listed in `truncated` when
        `truncate`, else PromptTooLongError names it.
        """
        self._require()
        if not texts:
            raise UsageError("There is nothing to embed.", "Send at least one text.")
        if len(texts) > MAX_INPUTS:
            raise UsageError(f"{len(texts):,} inputs are more than one request may embed ({MAX_INPUTS:,}).",
                             "Split them into several requests.")
        started = time.perf_counter()
        n_ctx = int(self._llm.n_ctx())
        total, cut = 0, []
        counts: list[int] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise UsageError(f"Input {i} is not text.", "Send strings to embed.")
            if len(text) > MAX_CHARS:
                raise UsageError(f"Input {i} is {len(text):,} characters, over the {MAX_CHARS:,} allowed.",
                                 "Split it into smaller pieces.")
            n = self.count_tokens(text)
            if n > n_ctx:
                if not truncate:
                    raise PromptTooLongError(
                        f"Input {i} is {n:,} tokens, longer than the embedding model's context of "
                        f"{n_ctx:,}.", "Split it into smaller pieces, or allow truncation.")
                cut.append(i)
                n = n_ctx
            total += n
            counts.append(n)
        # llama-cpp-python evaluates a list as one batch of sequences whose attention spans the whole
        # batch: long texts are faster one by one (measured 1.5x on 256-token passages), short ones
        # (queries) together. Texts are grouped up to BATCH_TOKENS.
        vectors: list[list[float]] = []
        group: list[str] = []
        size = 0
        for text, n in zip(texts, counts, strict=True):
            if group and size + n > BATCH_TOKENS:
                vectors += self._llm.embed(group, normalize=normalize, truncate=True)
                group, size = [], 0
            group.append(text)
            size += n
        if group:
            vectors += self._llm.embed(group, normalize=normalize, truncate=True)
        return Embeddings(vectors=[list(map(float, v)) for v in vectors], tokens=total, truncated=cut,
                          seconds=time.perf_counter() - started)
