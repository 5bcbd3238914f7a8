"""One chat turn from end to end: store the user's message, stream the reply into the store.

The CLI and the GUI's engine worker both call `send_message()` on the thread
that owns the engine; the reply row exists from the first token and is saved
at least every `flush_interval` seconds (see `chats.ReplyWriter`).

Callers on another thread take `engine.reserve_reply()` when the user presses
Send and pass it as `ticket`, so a Stop pressed before the job starts is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.core.chat.chats import ChatStore, Message
from app.core.chat.engine import Engine, Reply
from app.core.chat.sampling import SamplingSettings
from app.core.chat.text import clean_text, invalid_text_notice


@dataclass
class Augmented:
    """What the model reads instead of the stored conversation (documents' passages added), and what to
    store with the reply about it (its citations)."""

    messages: list[dict[str, Any]]
    notices: list[str] = field(default_factory=list)
    #: The reply's text -> extra fields for the stored reply's stats (e.g. "citations").
    stats: Callable[[str], dict[str, Any]] = lambda _text: {}


#: Called on the engine's thread with the conversation as stored; returns what the model reads.
Augment = Callable[[list[dict[str, Any]]], Augmented]


def send_message(engine: Engine, store: ChatStore, conversation_id: int, text: str,
                 sampling: SamplingSettings | None = None, *,
                 on_text: Callable[[str], None] | None = None,
                 flush_interval: float = 1.0, ticket: int | None = None,
                 augment: Augment | None = None) -> tuple[Reply, Message]:
    """Append the user's `text` to the conversation and answer it.

    Bytes that are not valid UTF-8 (a lone surrogate from argv or a paste) are
    replaced before the message is stored, and the reply's notices say so.
    """
    text, replaced = clean_text(text)
    store.add_message(conversation_id, "user", text)
    notices = [invalid_text_notice(replaced)] if replaced else []
    return answer(engine, store, conversation_id, sampling, on_text=on_text,
                  flush_interval=flush_interval, ticket=ticket, notices=notices, augment=augment)


def answer(engine: Engine, store: ChatStore, conversation_id: int,
           sampling: SamplingSettings | None = None, *,
           on_text: Callable[[str], None] | None = None,
           flush_interval: float = 1.0, ticket: int | None = None,
           notices: list[str] | None = None, augment: Augment | None = None) -> tuple[Reply, Message]:
    """Answer the conversation as stored (its last message is the user's).

    `augment` rewrites what the model reads (documents: passages beside the question) and adds to
    what is stored with the reply (the passages it cited); the stored conversation stays as typed.

    Returns the engine's reply and the stored assistant message. A reply cut
    by `engine.stop()` is stored with state "stopped"; one that failed with
    state "error" (and the error is raised).
    """
    messages = store.conversation(conversation_id).chat_messages()
    augmented = augment(messages) if augment is not None else None
    if augmented is not None:
        messages = augmented.messages
    writer = store.begin_reply(conversation_id, flush_interval=flush_interval)

    def emit(chunk: str) -> None:
        writer.append(chunk)
        if on_text is not None:
            on_text(chunk)

    try:
        reply = engine.chat(messages, sampling, on_text=emit, ticket=ticket)
    except BaseException:
        writer.finish(state="error")
        raise
    if augmented is not None:
        reply.notices[:0] = augmented.notices
    if notices:
        reply.notices[:0] = notices
    state = "stopped" if reply.stats.stop_reason == "cancelled" else "complete"
    stats = {**reply.stats.to_dict(), "notices": reply.notices}
    if augmented is not None:
        stats.update(augmented.stats(reply.text))
    if engine.model_path is not None:
        stats["model"] = engine.model_path.name
    return reply, writer.finish(state=state, stats=stats)


def regenerate(engine: Engine, store: ChatStore, reply_id: int, sampling: SamplingSettings | None = None,
               **kwargs: Any) -> tuple[Reply, Message]:
    """A new version of the reply `reply_id`; the old one stays as the previous version."""
    store.rewind_to_before(reply_id)
    return answer(engine, store, store.message(reply_id).conversation_id, sampling, **kwargs)


def edit_and_answer(engine: Engine, store: ChatStore, message_id: int, text: str,
                    sampling: SamplingSettings | None = None, **kwargs: Any) -> tuple[Reply, Message]:
    """A new version of the user message `message_id` with `text`, answered; the old turn and its
    replies stay as the previous version."""
    text, _replaced = clean_text(text)
    edited = store.edit_message(message_id, text)
    return answer(engine, store, edited.conversation_id, sampling, **kwargs)
