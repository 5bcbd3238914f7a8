"""Chat: the engine (one llama model on its owner thread), the conversation store, the context window.

The door: the rest of Camelid imports chat facts and jobs from here.
"""

from app.core.chat.chats import ChatStore, Conversation, Message
from app.core.chat.conversation import answer, edit_and_answer, regenerate, send_message
from app.core.chat.engine import Engine, EngineThread, LoadParams, LoadReport, Reply, plan_params
from app.core.chat.sampling import PRESETS, SamplingSettings, preset

__all__ = [
    "PRESETS", "ChatStore", "Conversation", "Engine", "EngineThread", "LoadParams", "LoadReport",
    "Message", "Reply", "SamplingSettings", "answer", "edit_and_answer", "plan_params", "preset", "regenerate",
    "send_message",
]
