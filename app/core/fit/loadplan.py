"""The user's load settings applied to the fit engine: one plan for what will really be loaded.

The chat engine loads with these choices, so everything that judges a model
before it is loaded (the library's verdicts, the fit of a file on the Hub,
the load itself) plans with them too, and the verdict a person sees is the
verdict of the load they will get.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.fit.gguf_meta import ModelMeta
from app.core.fit.memory import DEFAULT_CTX_CAP, MemoryPlan, context_notes, plan_memory
from app.core.fit.repack import DEFAULT_MODE
from app.core.machine import HardwareProfile
from app.core.units import human_bytes


@dataclass(frozen=True)
class LoadChoices:
    """What the user asked for (Settings, CLI flags); None means "as the plan decides"."""

    #: The longest context to plan for; the plan takes less when memory is short.
    context_length: int = DEFAULT_CTX_CAP
    #: An exact context (`camelid chat --ctx`), overriding `context_length`.
    n_ctx: int | None = None
    gpu_layers: int | None = None
    flash_attention: bool = True
    kv_cache_type: str = "f16"
    #: 0: the engine's default (chat/engine.py `default_threads`, `default_batch_threads`).
    threads: int = 0
    #: How CPU layers hold their weights (fit/repack.py MODES): repacked without mmap,
    #: repacked with mmap, or not repacked.
    cpu_repack: str = DEFAULT_MODE
    #: Mixture of experts: blocks whose experts stay in RAM (--n-cpu-moe); None lets the plan choose
    #: (when the layer count is also the plan's choice), 0 keeps experts with their block.
    cpu_moe: int | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, n_ctx: int | None = None) -> LoadChoices:
        """The choices in a `Settings` (or any mapping with the same keys)."""
        return cls(context_length=settings["context_length"] or DEFAULT_CTX_CAP, n_ctx=n_ctx,
                   gpu_layers=settings["gpu_layers"], flash_attention=bool(settings["flash_attention"]),
                   kv_cache_type=settings["kv_cache_type"], threads=settings["threads"] or 0,
                   cpu_repack=settings["cpu_repack"] or DEFAULT_MODE)

    @classmethod
    def current(cls) -> LoadChoices:
        """The choices in this user's saved settings."""
        from app.core.settings import Settings

        return cls.from_settings(Settings())


def plan_with_choices(meta: ModelMeta, hardware: HardwareProfile | None, choices: LoadChoices | None = None,
                      *, improvements: bool = True) -> MemoryPlan:
    """Plan `meta` on `hardware` (this machine when None) the way the engine will load it."""
    choices = choices or LoadChoices()
    # llama.cpp quantizes the V cache only with flash attention; without it V stays f16.
    cache_v = choices.kv_cache_type if choices.flash_attention else "f16"
    return plan_memory(meta, hardware, n_ctx=choices.n_ctx, n_gpu_layers=choices.gpu_layers,
                       flash_attn=choices.flash_attention, cache_type_k=choices.kv_cache_type,
                       cache_type_v=cache_v, ctx_cap=max(choices.context_length, 256),
                       cpu_repack=choices.cpu_repack, improvements=improvements, cpu_moe=choices.cpu_moe)


#: The longest context an embedding model is planned and loaded with (app.core.embed.embedder.MAX_CTX).
EMBED_MAX_CTX = 8192


def plan_embedder(meta: ModelMeta, hardware: HardwareProfile | None) -> MemoryPlan:
    """An embedding model as the Embedder loads it: on the CPU, its trained context up to 8192 tokens."""
    n_ctx = max(64, min(meta.n_ctx_train or 512, EMBED_MAX_CTX))
    return plan_memory(meta, hardware, n_ctx=n_ctx, n_gpu_layers=0, flash_attn=False, n_batch=n_ctx,
                       n_ubatch=n_ctx, improvements=False)


def plan_beside(meta: ModelMeta, embedder: ModelMeta, hardware: HardwareProfile | None,
                choices: LoadChoices | None = None, *, improvements: bool = True) -> tuple[MemoryPlan, MemoryPlan]:
    """The chat model planned with the embedding model loaded beside it (documents need both).

    The embedding model's whole plan comes off the RAM the chat model may use, so a "fits" verdict
    means both fit together. Returns (chat plan, embedding plan).
    """
    from dataclasses import replace

    from app.core.machine import RamInfo

    if hardware is None:
        from app import paths
        from app.core.machine import detect

        hardware = detect(models_dir=paths.models_dir())
    embed_plan = plan_embedder(embedder, hardware)
    left = RamInfo(total_bytes=hardware.ram.total_bytes,
                   available_bytes=max(0, hardware.ram.available_bytes - embed_plan.total_bytes))
    chat_plan = plan_with_choices(meta, replace(hardware, ram=left), choices, improvements=improvements)
    return chat_plan, embed_plan


def load_notices(plan: MemoryPlan, choices: LoadChoices) -> list[str]:
    """What a person should be told when this plan is loaded (the rest of `plan.reasons` is detail)."""
    notices: list[str] = []
    if plan.verdict == "partial" and plan.reasons:
        notices.append(plan.reasons[0])
    elif plan.verdict == "no_fit":
        notices.append(f"This model needs about {human_bytes(plan.total_bytes)} at {plan.n_ctx:,} tokens of "
                       "context, more than this machine has free for models; it may load slowly or fail. "
                       "A smaller quantization or a shorter context would fit better.")
    trained = plan.model.get("n_ctx_train") or None
    wanted = min(choices.context_length, trained or choices.context_length)
    if choices.n_ctx is None and plan.n_ctx < wanted:
        notices.append(f"The context is {plan.n_ctx:,} tokens, the longest that fits in memory here "
                       f"(Settings asks for up to {choices.context_length:,}).")
    elif choices.n_ctx is None and trained and plan.n_ctx == trained < choices.context_length:
        # Settings asked for more than the model knows: say so rather than cap it silently.
        notices += context_notes(trained, n_ctx=None, ctx_cap=choices.context_length)
    elif choices.n_ctx is not None:
        notices += context_notes(trained, n_ctx=choices.n_ctx, ctx_cap=choices.context_length)
    return notices
