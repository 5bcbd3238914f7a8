"""Plan vs llama.cpp per device on a CUDA machine: full and partial offload (run by bench/gpu_check.sh).

For each model (the real SmolLM2 when present, else a header-only file with its
exact tensor table; Llama-3-8B's real block widths with a 4k vocabulary; the
hybrid and MLA fixtures of tests/fixtures/arch_gguf.py when that module is there)
and each placement (everything on the GPU, half the layers), plan with the
machine's own measured profile, load with llama.cpp, read its buffer log and
write planned and measured MiB per device and component to a JSON file.

Run: python bench/gpu_check.py OUT.json [--quick] [--synthetic]   (no network; a CPU-only build
checks the CPU side only and says so)
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
SMOLLM2 = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def models(folder: Path, quick: bool, synthetic: bool = False) -> list[tuple[str, Path]]:
    from app.core.fit import quants
    from app.core.fit.architectures import ArchConstants
    from tests.fixtures.synthetic_gguf import LLAMA_8B, LLAMA_KV, write_gguf

    out: list[tuple[str, Path]] = []

    def tokenizer(n: int) -> dict[str, Any]:
        # A SentencePiece-style vocabulary llama.cpp accepts without merges.
        return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": [f"<t{i}>" for i in range(n)],
                "tokenizer.ggml.scores": [0.0] * n, "tokenizer.ggml.token_type": [1] * n}
    if SMOLLM2.is_file() and not synthetic:
        out.append(("SmolLM2-135M Q4_1 (real file)", SMOLLM2))
    else:
        smol = ArchConstants("llama", 30, 576, 9, 3, 1536, 49152, tied_embeddings=True, n_ctx_train=8192)
        path = folder / "smollm2-shape.gguf"
        tensors = [(t.name, t.shape, t.ggml_type) for t in quants.predict_tensors(smol, "Q4_1")]
        write_gguf(path, "llama", tensors, extra_kv=tokenizer(49152), file_type=quants.F.MOSTLY_Q4_1,
                   kv={"block_count": 30, "embedding_length": 576, "attention.head_count": 9,
                       "attention.head_count_kv": 3, "feed_forward_length": 1536, "context_length": 8192,
                       "rope.dimension_count": 64, "attention.layer_norm_rms_epsilon": 1e-5})
        out.append(("SmolLM2-135M Q4_1 shape (header-only, zero weights)", path))
    if not quick:
        wide = folder / "llama3-8b-widths-4k-vocab.gguf"
        tensors = [(t.name, t.shape, t.ggml_type)
                   for t in quants.predict_tensors(replace(LLAMA_8B, n_vocab=4096), "Q4_K_M")]
        write_gguf(wide, "llama", tensors, kv={**LLAMA_KV, "attention.layer_norm_rms_epsilon": 1e-5},
                   extra_kv=tokenizer(4096), file_type=quants.F.MOSTLY_Q4_K_M)
        out.append(("Llama-3-8B block widths, 4k vocabulary, Q4_K_M", wide))
        # The fit tests' own wide and per-architecture fixtures, when this checkout has them.
        try:
            from tests.fixtures import wide_gguf
            for name, w in wide_gguf.WIDE.items():
                out.append((f"{name} block widths (tests/fixtures/wide_gguf.py)",
                            wide_gguf.wide_model(folder / f"wide-{name}.gguf", w)))
        except (ImportError, AttributeError):
            pass
        try:
            from tests.fixtures import arch_gguf
            out.extend(arch_gguf.all_models(folder))
        except (ImportError, AttributeError):
            pass
    return out


def compare(plan: Any, sizes: Any) -> list[dict[str, Any]]:
    """Planned and measured MiB per device and component."""
    rows = []
    gpu_names = sorted({*sizes.model, *sizes.kv, *sizes.compute} - {"CPU", "CPU_Mapped", "CPU_REPACK"})
    gpu_names = [n for n in gpu_names if not n.endswith("_Host")]
    planned_gpus = [d for d in plan.devices if d.kind != "ram"]
    for i, device in enumerate(planned_gpus):
        name = gpu_names[i] if i < len(gpu_names) else f"GPU{i}"
        rows.append({"device": name, "planned": _mib(device.weights, device.kv_cache, device.compute),
                     "measured": {"weights": sizes.model.get(name, 0.0), "kv_cache": sizes.kv.get(name, 0.0),
                                  "compute": sizes.compute.get(name, 0.0)}})
    ram = plan.devices[-1]
    host = {k: v for k, v in sizes.compute.items() if k == "CPU" or k.endswith("_Host")}
    rows.append({"device": "RAM", "planned": _mib(ram.weights + ram.repack, ram.kv_cache, ram.compute),
                 "measured": {"weights": sum(v for k, v in sizes.model.items()
                                             if k.startswith("CPU")),
                              "kv_cache": sizes.kv.get("CPU", 0.0), "compute": sum(host.values())}})
    for row in rows:
        row["error"] = {k: (round(row["planned"][k] - v, 2)) for k, v in row["measured"].items()}
    return rows


def _mib(weights: int, kv: int, compute: int) -> dict[str, float]:
    return {"weights": round(weights / MIB, 2), "kv_cache": round(kv / MIB, 2), "compute": round(compute / MIB, 2)}


def main(argv: list[str]) -> int:
    out_path = Path(argv[0]) if argv else Path("gpu_check.json")
    quick = "--quick" in argv
    from app.core.fit import LlamaLogCapture, parse_buffer_sizes, plan_memory, read_gguf
    from app.core.machine import detect, llama_cpp_module

    llama_cpp = llama_cpp_module()
    hardware = detect()
    result: dict[str, Any] = {
        "machine": {"gpus": [g.name for g in hardware.gpus], "backends": hardware.backend.compiled,
                    "cpu_variant": hardware.backend.cpu_variant, "python": platform.python_version(),
                    "llama_cpp_python": hardware.backend.llama_cpp_version},
        "runs": [],
    }
    if not hardware.backend.gpu_offload:
        result["note"] = "this llama.cpp build has no GPU device: only the CPU side is checked"
    with tempfile.TemporaryDirectory(prefix="camelid-gpu-check-") as tmp:
        for label, path in models(Path(tmp), quick, "--synthetic" in argv):
            meta = read_gguf(path)
            full = meta.n_layer + 1
            placements = [full, meta.n_layer // 2] if hardware.backend.gpu_offload else [0]
            for n_gpu_layers in placements:
                for flash_attn in (False, True):
                    plan = plan_memory(meta, hardware, n_ctx=4096, n_gpu_layers=n_gpu_layers,
                                       flash_attn=flash_attn, improvements=False)
                    started = time.perf_counter()
                    with LlamaLogCapture() as log:
                        try:
                            llm = llama_cpp.Llama(model_path=str(path), verbose=False, n_threads=4,
                                                  **plan.llama_kwargs())
                        except ValueError:
                            llm = None
                    seconds = time.perf_counter() - started
                    if llm is None:
                        errors = [line for line in log.lines if "error" in line.lower()]
                        result["runs"].append({"model": label, "n_gpu_layers": n_gpu_layers,
                                               "flash_attn": flash_attn, "error": errors[-3:]})
                        print(f"{label}: llama.cpp refused it: {errors[-1:]}", flush=True)
                        continue
                    sizes = parse_buffer_sizes(log.text)
                    llm.close()
                    result["runs"].append({
                        "model": label, "n_gpu_layers": n_gpu_layers, "flash_attn": flash_attn,
                        "n_ctx": plan.n_ctx, "verdict": plan.verdict, "load_s": round(seconds, 2),
                        "layers_offloaded": sizes.layers_offloaded, "devices": compare(plan, sizes),
                    })
                    print(f"{label}: {n_gpu_layers} GPU layers, flash {flash_attn}: "
                          + "; ".join(f"{r['device']} error MiB {r['error']}" for r in result["runs"][-1]["devices"]),
                          flush=True)
    out_path.write_text(json.dumps(result, indent=1))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
