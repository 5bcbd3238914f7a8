"""`camelid plan MODEL`: where a model's bytes would go on this (or a simulated) machine.

MODEL is a local .gguf, ``REPO:QUANT`` or ``REPO/path/file.gguf`` on the Hub;
for the Hub only the header is fetched, over HTTP ranges.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path, PurePosixPath

from app.cli.common import (
    add_hardware_flags,
    add_json_flag,
    at_least,
    hardware_from_args,
    human_bytes,
    print_json,
)
from app.core.errors import ModelFileError
from app.core.fit import CACHE_TYPES, MemoryPlan, ModelMeta, plan_memory

_REPO = r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"
_HUB_FILE_RE = re.compile(rf"^({_REPO})/(.+\.gguf)$", re.IGNORECASE)
_HUB_QUANT_RE = re.compile(rf"^({_REPO})(?::(.+))?$")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="show where a model's memory would go, before downloading it",
        description="Plan a GGUF model's memory (weights, KV cache, compute, overhead) per device, the GPU "
                    "layers and the verdict. MODEL is a local .gguf, REPO:QUANT or REPO/path/file.gguf on "
                    "the Hub (only the header is fetched).")
    add_json_flag(parser)
    parser.add_argument("model", metavar="MODEL", help="a .gguf path, REPO:QUANT, or REPO/path/file.gguf")
    parser.add_argument("--ctx", type=int, metavar="N", help="context length (default: the longest that fits, "
                                                                 "up to the trained one and --ctx-cap)")
    parser.add_argument("--ctx-cap", type=at_least(256), metavar="N", default=8192,
                        help="upper bound for the chosen context (default 8192)")
    parser.add_argument("--gpu-layers", type=int, metavar="N",
                        help="layers to offload, counting the output layer (-1: all; default: the most that fit)")
    parser.add_argument("--flash-attn", action=argparse.BooleanOptionalAction, default=None,
                        help="plan with flash attention on (--no-flash-attn: off); default: as chat loads "
                             "the model, from Settings (on unless you turned it off)")
    parser.add_argument("--cache-type", choices=CACHE_TYPES, default=None, metavar="TYPE",
                        help=f"KV cache type for K and V ({', '.join(CACHE_TYPES)}; default: the Settings' "
                             "KV cache type, f16 unless changed); quantized V needs flash attention, which "
                             "is then turned on")
    parser.add_argument("--ubatch", type=int, default=512, metavar="N", help="micro-batch size (default 512)")
    parser.add_argument("--revision", default="main", help="Hub revision (default main)")
    parser.add_argument("--embedder", metavar="MODEL",
                        help="plan it beside this embedding model (documents need both loaded): a .gguf path "
                             "or REPO:QUANT; the embedding model's memory comes off what MODEL may use")
    add_hardware_flags(parser)
    parser.set_defaults(run=run)


def load_meta(model: str, *, revision: str = "main") -> ModelMeta:
    """The header of MODEL: a local file, ``REPO/path/file.gguf`` or ``REPO[:QUANT]`` on the Hub."""
    from app.core.fit import read_gguf, read_gguf_remote

    path = Path(model).expanduser()
    if path.exists():
        return read_gguf(path)
    match = _HUB_FILE_RE.match(model)
    if match:
        return read_gguf_remote(match.group(1), match.group(2), revision=revision)
    match = _HUB_QUANT_RE.match(model)
    if match and not model.lower().endswith(".gguf"):
        from app.core.models import hub

        files = hub.repo_files(match.group(1), revision=revision)
        quant = hub.select_quant(files, match.group(2))
        return read_gguf_remote(quant.repo_id, quant.first_file, revision=quant.revision)
    raise ModelFileError(f"There is no file at {path}.",
                         "Give a .gguf path, REPO:QUANT (e.g. bartowski/Qwen_Qwen3-8B-GGUF:Q4_K_M) or "
                         "REPO/path/file.gguf.")


def run(args: argparse.Namespace) -> int:
    meta = load_meta(args.model, revision=args.revision)
    hardware = hardware_from_args(args)
    # The bill chat will pay: the engine's load settings (Settings), unless a flag says otherwise.
    from app.core.fit import LoadChoices

    choices = LoadChoices.current()
    flash = choices.flash_attention if args.flash_attn is None else bool(args.flash_attn)
    cache = args.cache_type or choices.kv_cache_type
    embed_plan = None
    if args.embedder:
        from dataclasses import replace

        from app.core.fit import plan_embedder
        from app.core.machine import RamInfo

        embed_meta = load_meta(args.embedder, revision=args.revision)
        embed_plan = plan_embedder(embed_meta, hardware)
        # The same rule as plan_beside: the embedding model's memory comes off the chat model's RAM.
        hardware = replace(hardware, ram=RamInfo(
            total_bytes=hardware.ram.total_bytes,
            available_bytes=max(0, hardware.ram.available_bytes - embed_plan.total_bytes)))
    plan = plan_memory(meta, hardware, n_ctx=args.ctx, n_gpu_layers=args.gpu_layers,
                       flash_attn=flash, cache_type_k=cache,
                       cache_type_v=cache, n_ubatch=args.ubatch, ctx_cap=args.ctx_cap,
                       cpu_repack=choices.cpu_repack)
    if args.json:
        print_json(plan.to_dict() | ({"embedding": embed_plan.to_dict()} if embed_plan is not None else {}))
    else:
        print(describe(plan, meta))
        if embed_plan is not None:
            from app.core.units import human_bytes

            name = embed_plan.model.get("name") or Path(args.embedder).name
            print(f"\nBeside it: the embedding model {name} on the CPU, {human_bytes(embed_plan.total_bytes)} "
                  f"(weights {human_bytes(embed_plan.weights_bytes)}, context {embed_plan.n_ctx:,} tokens); "
                  "the RAM budget above is what is left after it.")
    return 0


_VERDICT_WORDS = {"full_gpu": "fits entirely on the GPU", "partial": "fits, partly on the GPU",
                  "cpu": "fits, on the CPU", "no_fit": "DOES NOT FIT"}


def model_words(meta: ModelMeta) -> str:
    """The model as the person named it: its file name (the GGUF's own name, often a training tag such
    as "Smollm2 135M 8k Lc100K Mix1 Ep2", only when there is no file name)."""
    if meta.shards:
        return PurePosixPath(str(meta.shards[0]).replace("\\", "/")).name.split("?", 1)[0]
    return meta.name or meta.architecture


def describe(plan: MemoryPlan, meta: ModelMeta) -> str:
    """The readable bill: each component on each device, the budgets, the verdict and the reasons."""
    lines: list[str] = []
    name = model_words(meta)
    size = f", {human_bytes(meta.file_size)}" if meta.file_size else ""
    lines.append(f"{name} ({meta.architecture}, {meta.quant or 'unknown quant'}{size}, {meta.n_layer} blocks)")
    if meta.bytes_fetched:
        lines.append(f"  header read over HTTP: {human_bytes(meta.bytes_fetched)} fetched")
    lines.append(f"Verdict: {_VERDICT_WORDS[plan.verdict]} — {plan.n_gpu_layers} of {plan.n_layers + 1} "
                 f"layers on the GPU, context {plan.n_ctx:,} tokens"
                 + (" (approximate)" if plan.approximate else ""))
    lines.append(f"Settings: flash attention {'on' if plan.flash_attn else 'off'}, KV cache "
                 f"{plan.cache_type_k}/{plan.cache_type_v}, batch {plan.n_batch}/{plan.n_ubatch}")
    lines.append("")
    columns = [("weights", "weights"), ("repack", "repacked"), ("kv_cache", "KV cache"),
               ("recurrent_state", "state"), ("compute", "compute"), ("overhead", "overhead")]
    # Repacked copies and recurrent state only where the plan has them.
    columns = [(k, h) for k, h in columns
               if k not in ("repack", "recurrent_state") or any(getattr(d, k) for d in plan.devices)]
    lines.append(f"  {'':<28}" + "".join(f"{h:>11}" for _k, h in columns) + f"{'total':>11}{'budget':>11}")
    for d in plan.devices:
        label = d.name if len(d.name) <= 26 else d.name[:25] + "…"
        flag = "  OVER" if d.total > d.budget else ""
        lines.append(f"  {label:<28}" + "".join(f"{human_bytes(getattr(d, k)):>11}" for k, _h in columns)
                     + f"{human_bytes(d.total):>11}{human_bytes(d.budget):>11}{flag}")
    lines.append(f"  {'all devices':<28}"
                 + "".join(f"{human_bytes(sum(getattr(d, k) for d in plan.devices)):>11}" for k, _h in columns)
                 + f"{human_bytes(plan.total_bytes):>11}")
    if plan.recurrent_state_bytes:
        lines.append(f"  The state ({human_bytes(plan.recurrent_state_bytes)}) is fixed: a longer context "
                     f"adds only KV cache ({human_bytes(int(plan.kv_bytes_per_token * 1000))} per 1,000 tokens).")
    lines.append("")
    lines.append("Why:")
    lines += [f"  - {r}" for r in plan.reasons]
    if plan.improvements:
        lines.append("What would change it:")
        lines += [f"  - {i['text']}" for i in plan.improvements]
    return "\n".join(lines)
