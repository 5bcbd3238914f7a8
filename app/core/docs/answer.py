"""Answering from documents: the whole text when it fits the context, the best passages when not; citations.

The rule is LM Studio's, with the numbers said out loud: when every passage of
the documents fits the context the loaded model has here (leaving room for
the question and the reply), the model reads them whole; otherwise the index
is searched and the best passages that fit are given. Either way the prompt
numbers each passage ([1], [2] ...) and asks the model to cite them; the
answer's citations are the numbers it used, each with its file, page, heading
and character offsets. When retrieval was needed, a notice says what reading
the documents whole would cost in memory, from the fit engine's plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.docs.store import Collection, DocIndex, Passage
from app.core.units import human_bytes

#: Passages at most in a retrieval prompt.
TOP_PASSAGES = 8
#: Tokens kept for the reply when the request sets no limit.
REPLY_TOKENS = 1024
#: Tokens of the instructions and passage labels, over the passages themselves.
OVERHEAD_TOKENS = 160

SYSTEM = ("You answer questions using the numbered passages from the user's documents. Use only what the "
          "passages say. After each sentence that uses a passage, cite it by its number in square brackets, "
          "like [2]. If the passages do not contain the answer, say that the documents do not say.")

_CITE = re.compile(r"[\[【]\s*(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\s*[\]】]")


@dataclass
class Citation:
    n: int
    source: str
    page: int | None
    page_end: int | None
    heading: str | None
    text: str
    start: int
    end: int
    chunk_id: int | None = None
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "source": self.source, "page": self.page, "page_end": self.page_end,
                "heading": self.heading, "text": self.text, "start": self.start, "end": self.end}

    @property
    def label(self) -> str:
        where = Path(self.source).name
        if self.page is not None:
            where += f", page {self.page}" if self.page_end in (None, self.page) else \
                f", pages {self.page}-{self.page_end}"
        if self.heading:
            where += f" — {self.heading}"
        return where


@dataclass
class Context:
    """What the model will read: whole documents or retrieved passages, numbered."""

    mode: str  # whole | retrieval | empty
    passages: list[Citation]
    notices: list[str] = field(default_factory=list)
    #: Tokens of every passage of the documents together (the chat model's tokens).
    whole_tokens: int = 0


def whole_passages(index: DocIndex, collection: Collection) -> list[Passage]:
    """Every passage of every document, in order, with the overlap between neighbours cut away."""
    out: list[Passage] = []
    for doc in index.documents(collection):
        end = -1
        for p in index.chunks_of(collection, doc.path):
            if p.start < end:  # the head of this passage repeats the tail of the previous one
                cut = end - p.start
                if cut >= len(p.text):
                    continue
                p.text, p.start = p.text[cut:], end
            end = p.end
            out.append(p)
    return out


def gather(index: DocIndex, collections: Sequence[Collection], question: str, *,
           count_tokens: Callable[[str], int], budget: int, query_vector: Any = None,
           top: int = TOP_PASSAGES, whole: bool = True, longer_context: Callable[[int], str | None] | None = None,
           ) -> Context:
    """The passages for `question` within `budget` tokens (the chat model's), whole documents first."""
    notices: list[str] = []
    # Stored token counts (the embedding model's, or an estimate) say cheaply whether whole is worth
    # counting exactly with the chat model: a 100k-passage collection is never read through.
    total = sum(d.tokens for c in collections for d in index.documents(c))
    if whole and total <= budget * 2:
        everything = [p for c in collections for p in whole_passages(index, c)]
        counts = [count_tokens(p.text) + 12 for p in everything]
        total = sum(counts)
        if everything and total <= budget:
            return Context("whole", _numbered(everything), whole_tokens=total)
    hits: list[Passage] = []
    for c in collections:
        hits += index.search(c, question, vector=query_vector if c.embedder else None, top=top)
    hits.sort(key=lambda p: -p.score)
    chosen: list[Passage] = []
    used = 0
    for p in hits[:top]:
        n = count_tokens(p.text) + 12
        if used + n > budget:
            continue
        chosen.append(p)
        used += n
    if not chosen:
        return Context("empty", [], ["Nothing in the documents matched the question."], whole_tokens=total)
    if total:
        notices.append(f"The documents are about {total:,} tokens, more than fit beside the question in this "
                       f"model's context, so Camelid searched them and gave the model the {len(chosen)} "
                       "best passages.")
        extra = longer_context(total) if longer_context is not None else None
        if extra:
            notices.append(extra)
    if any(not c.embedder for c in collections):
        notices.append("Searched by words only: no embedding model was used for these documents.")
    return Context("retrieval", _numbered(chosen), notices, whole_tokens=total)


def _numbered(passages: Sequence[Passage]) -> list[Citation]:
    return [Citation(n=i, source=p.source, page=p.page, page_end=p.page_end, heading=p.heading, text=p.text,
                     start=p.start, end=p.end, chunk_id=p.chunk_id, score=p.score or None)
            for i, p in enumerate(passages, start=1)]


def prompt_messages(question: str, context: Context, *, history: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The conversation for the model: instructions, earlier turns, then the passages with the question."""
    blocks = "\n\n".join(f"[{c.n}] ({c.label})\n{c.text}" for c in context.passages)
    user = f"Passages:\n\n{blocks}\n\nQuestion: {question}" if context.passages else question
    return [{"role": "system", "content": SYSTEM}, *[dict(m) for m in history],
            {"role": "user", "content": user}]


def cited(answer: str, context: Context) -> list[Citation]:
    """The passages the answer cites, in the order it first cites them."""
    by_n = {c.n: c for c in context.passages}
    out: list[Citation] = []
    for m in _CITE.finditer(answer):
        for part in re.split(r"\s*[,，、]\s*", m.group(1)):
            n = int(part)
            if n in by_n and by_n[n] not in out:
                out.append(by_n[n])
    return out


def longer_context_note(engine: Any) -> Callable[[int], str | None]:
    """What a context long enough for `tokens` would cost with the loaded model, from the fit engine."""

    def note(tokens: int) -> str | None:
        report = getattr(engine, "report", None)
        plan = getattr(report, "plan", None)
        path = getattr(engine, "model_path", None)
        if plan is None or path is None:
            return None
        from app.core.fit import LoadChoices, plan_with_choices, read_gguf

        needed = tokens + OVERHEAD_TOKENS + REPLY_TOKENS
        trained = int(plan.model.get("n_ctx_train") or 0)
        if trained and needed > trained:
            return (f"Reading them whole would take a {needed:,}-token context, longer than the {trained:,} "
                    "this model was trained for.")
        bigger = plan_with_choices(read_gguf(path), None, LoadChoices(n_ctx=needed), improvements=False)
        more = max(0, bigger.total_bytes - plan.total_bytes)
        verdict = "which fits on this machine: load the model with that context to read them whole" \
            if bigger.fits else "which does not fit on this machine"
        return (f"Reading them whole would take a {needed:,}-token context: about {human_bytes(more)} more "
                f"memory than now ({human_bytes(bigger.total_bytes)} in all), {verdict}.")

    return note


class DocumentChat:
    """A conversation that draws on collections: each reply gets the passages for its question.

    Called on the engine's owner thread (the chat model counts the tokens; the embedding model, when
    there is one, must have been loaded on that thread too). Collections are looked up on each turn,
    so files attached mid-conversation count from the next question.
    """

    def __init__(self, index: DocIndex, collections: Sequence[str], engine: Any, *, embedding: Any = None,
                 reply_tokens: int = REPLY_TOKENS) -> None:
        self.index = index
        self.names = list(collections)
        self.engine = engine
        self.embedding = embedding
        self.reply_tokens = reply_tokens
        self.last: Context | None = None

    def __call__(self, messages: list[dict[str, Any]]) -> Any:
        from app.core.chat.conversation import Augmented

        collections = []
        for name in self.names:
            try:
                collections.append(self.index.collection(name))
            except Exception:  # an attachments collection not made yet
                continue
        if not collections or not messages or messages[-1].get("role") != "user":
            return Augmented(messages=messages)
        question = str(messages[-1]["content"])
        system = [m for m in messages if m.get("role") == "system"]
        history = [m for m in messages[:-1] if m.get("role") != "system"]
        count = self.engine.count_text
        used = sum(count(str(m.get("content") or "")) + 8 for m in history + system)
        budget = self.engine.n_ctx - self.reply_tokens - OVERHEAD_TOKENS - count(question) - used
        vector = self.embedding.embed_query(question) if self.embedding is not None else None
        context = gather(self.index, collections, question, count_tokens=count, budget=max(0, budget),
                         query_vector=vector, longer_context=longer_context_note(self.engine))
        self.last = context
        out = prompt_messages(question, context, history=history)
        if system and system[0].get("content"):
            out[0]["content"] = f"{out[0]['content']}\n\n{system[0]['content']}"

        def stats(text: str) -> dict[str, Any]:
            return {"docs_mode": context.mode, "citations": [c.to_dict() for c in cited(text, context)],
                    "passages": [c.to_dict() for c in context.passages]}

        return Augmented(messages=out, notices=list(context.notices), stats=stats)
