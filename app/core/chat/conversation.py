"""One chat turn from end to end: store the user's message, stream the reply into the store.

The CLI and the GUI's engine worker both call `send_message()` on the thread
that owns the engine; the reply row exists from the first token and is saved
at least every `flush_interval` seconds (see `chats.ReplyWriter`).
"""

from __future__ import annotations

from collections.abc import Callable

from app.core.chat.chats import ChatStore, Message
from app.core.chat.engine import Engine, Reply
from app.core.chat.sampling import SamplingSettings


def send_message(engine: Engine, store: ChatStore, conversation_id: int, text: str,
                 sampling: SamplingSettings | None = None, *,
                 on_text: Callable[[str], None] | None = None,
                 flush_interval: float = 1.0) -> tuple[Reply, Message]:
    """Append the user's `text` to the conversation and answer it."""
    store.add_message(conversation_id, "user", text)
    return answer(engine, store, conversation_id, sampling, on_text=on_text,
                  flush_interval=flush_interval)


def answer(engine: Engine, store: ChatStore, conversation_id: int,
           sampling: SamplingSettings | None = None, *,
           on_text: Callable[[str], None] | None = None,
           flush_interval: float = 1.0) -> tuple[Reply, Message]:
    """Answer the conversation as stored (its last message is the user's).

    Returns the engine's reply and the stored assistant message. A reply cut
    by `engine.stop()` is stored with state "stopped"; one that failed with
    state "error" (and the error is raised).
    """
    messages = store.conversation(conversation_id).chat_messages()
    writer = store.begin_reply(conversation_id, flush_interval=flush_interval)

    def emit(chunk: str) -> None:
        writer.append(chunk)
        if on_text is not None:
            on_text(chunk)

    try:
        reply = engine.chat(messages, sampling, on_text=emit)
    except BaseException:
        writer.finish(state="error")
        raise
    state = "stopped" if reply.stats.stop_reason == "cancelled" else "complete"
    stats = {**reply.stats.to_dict(), "notices": reply.notices}
    if engine.model_path is not None:
        stats["model"] = engine.model_path.name
    return reply, writer.finish(state=state, stats=stats)
