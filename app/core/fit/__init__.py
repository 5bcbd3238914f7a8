"""The fit engine: from a GGUF header alone, where every byte of a model goes on a machine.

Header reader (local, HTTP ranges, shards), quant sizes, architecture shapes, the memory
plan, load settings, the speed model and llama.cpp's own buffer report. The door: the rest
of Camelid imports fit facts from here.
"""

from app.core.fit import header_limits, quants
from app.core.fit.architectures import ArchConstants
from app.core.fit.gguf_meta import ModelMeta, read_gguf, read_gguf_remote
from app.core.fit.llama_log import BufferSizes, LlamaLogCapture, parse_buffer_sizes
from app.core.fit.loadplan import (
    LoadChoices,
    load_notices,
    plan_beside,
    plan_embedder,
    plan_with_choices,
)
from app.core.fit.memory import CACHE_TYPES, MemoryPlan, plan_memory
from app.core.fit.quants import predict_file_size
from app.core.fit.speed import (
    Bandwidth,
    SpeedEstimate,
    apple_bandwidth,
    cpu_bandwidth,
    estimate_speed,
    gpu_bandwidth,
    token_cost,
)

__all__ = [
    "CACHE_TYPES", "ArchConstants", "Bandwidth", "BufferSizes", "LlamaLogCapture", "LoadChoices",
    "MemoryPlan", "ModelMeta", "SpeedEstimate", "apple_bandwidth", "cpu_bandwidth", "estimate_speed",
    "gpu_bandwidth", "header_limits", "load_notices", "parse_buffer_sizes", "plan_beside", "plan_embedder",
    "plan_memory", "plan_with_choices",
    "predict_file_size", "quants", "read_gguf", "read_gguf_remote", "token_cost",
]
