"""Architecture constants and the tensors they imply, for models that are not downloaded.

The recommender plans catalog models from a handful of numbers (layers,
widths, heads, vocabulary). `ArchConstants.tensors()` turns those numbers into
the tensor table llama.cpp's converter writes (names and ggml shapes), and
`quants.assign_types` gives each tensor its type for a file type, so a file
size and a memory plan follow without a header.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Architectures whose memory follows the plain transformer rules this planner
#: implements (per-layer attention with a KV cache, dense or MoE FFN). Anything
#: else is planned with the same rules but marked approximate.
KNOWN_ARCHITECTURES = frozenset({
    "llama", "llama4", "mistral3", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "gemma", "gemma2", "gemma3",
    "phi2", "phi3", "phimoe", "starcoder", "starcoder2", "command-r", "cohere2", "granite", "granitemoe",
    "olmo", "olmo2", "olmoe", "internlm2", "stablelm", "falcon", "gpt2", "gptneox", "bloom", "mpt",
    "exaone", "exaone4", "smollm3", "gpt-oss", "glm4", "glm4moe", "ernie4_5", "ernie4_5-moe", "baichuan",
    "orion", "minicpm", "minicpm3", "deci", "arcee", "dots1", "hunyuan-dense", "hunyuan-moe", "seed_oss",
    "apertus", "codeshell", "xverse", "chatglm", "nemotron", "bitnet",
})

#: Sliding-window layer patterns llama.cpp sets per architecture: a period p
#: means layer i uses the window when i % p < p - 1 (Gemma 2: every other layer;
#: Gemma 3: five of every six).
SWA_PERIODS: dict[str, int] = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gpt-oss": 2, "exaone4": 4}

#: Window length when a GGUF names an SWA architecture but no window (Gemma 2's is 4096).
DEFAULT_WINDOWS: dict[str, int] = {"gemma2": 4096, "gemma3": 1024, "cohere2": 4096, "gpt-oss": 128}


def swa_layers(architecture: str, n_layer: int, window: int) -> list[bool]:
    """Which layers use the sliding window, by llama.cpp's per-architecture pattern."""
    period = SWA_PERIODS.get(architecture, 0)
    if not window or not period:
        return [False] * n_layer
    return [i % period < period - 1 for i in range(n_layer)]


@dataclass
class ArchConstants:
    """The numbers that fix a transformer's tensors, KV cache and compute graph."""

    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    #: KV heads (GQA); an int for all layers or one value per layer.
    n_head_kv: int | list[int]
    n_ff: int
    n_vocab: int
    head_dim_k: int | None = None
    head_dim_v: int | None = None
    tied_embeddings: bool = False
    n_ctx_train: int = 4096
    n_expert: int = 0
    n_expert_used: int = 0
    #: FFN width of one expert (MoE); defaults to n_ff.
    n_ff_exp: int | None = None
    n_expert_shared: int = 0
    #: Sliding window length in tokens (0: none) and which layers use it.
    sliding_window: int = 0
    swa_pattern: list[bool] | None = None
    #: Biases on q/k/v (Qwen2), per-head q/k norms (Qwen3, Gemma 3), norms after attention
    #: and FFN (Gemma 2/3), Llama 3.1's rope_freqs, Phi-3's fused qkv and gate+up.
    qkv_bias: bool | None = None
    qk_norm: bool | None = None
    post_norms: bool | None = None
    rope_freqs: bool = False
    fused_qkv: bool | None = None
    extra_tensors: list[tuple[str, list[int]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        arch = self.architecture
        if self.head_dim_k is None:
            self.head_dim_k = self.n_embd // max(1, self.n_head)
        if self.head_dim_v is None:
            self.head_dim_v = self.head_dim_k
        if self.qkv_bias is None:
            self.qkv_bias = arch in ("qwen2", "qwen2moe", "qwen2vl")
        if self.qk_norm is None:
            self.qk_norm = arch in ("qwen3", "qwen3moe", "gemma3", "olmo2", "olmoe")
        if self.post_norms is None:
            self.post_norms = arch in ("gemma2", "gemma3")
        if self.fused_qkv is None:
            self.fused_qkv = arch == "phi3"
        if arch in ("gemma", "gemma2", "gemma3"):
            self.tied_embeddings = True
        if self.swa_pattern is None:
            window = self.sliding_window or (DEFAULT_WINDOWS.get(arch, 0) if arch in SWA_PERIODS else 0)
            self.sliding_window = window
            self.swa_pattern = swa_layers(arch, self.n_layer, window)

    def kv_heads(self, layer: int) -> int:
        """KV heads of one layer."""
        if isinstance(self.n_head_kv, list):
            return int(self.n_head_kv[layer]) if layer < len(self.n_head_kv) else int(self.n_head_kv[-1])
        return int(self.n_head_kv)

    @property
    def n_head_kv_max(self) -> int:
        return max(self.kv_heads(i) for i in range(self.n_layer)) if self.n_layer else 0

    def tensors(self) -> list[tuple[str, list[int]]]:
        """The tensor table llama.cpp's converter writes: (name, ggml shape) in file order."""
        e, v = self.n_embd, self.n_vocab
        hk, hv = int(self.head_dim_k or 0), int(self.head_dim_v or 0)
        out: list[tuple[str, list[int]]] = [("token_embd.weight", [e, v])]
        if self.rope_freqs:
            out.append(("rope_freqs.weight", [hk // 2]))
        for i in range(self.n_layer):
            p = f"blk.{i}."
            kv = self.kv_heads(i)
            q_dim, k_dim, v_dim = self.n_head * hk, kv * hk, kv * hv
            out.append((p + "attn_norm.weight", [e]))
            if self.fused_qkv:
                out.append((p + "attn_qkv.weight", [e, q_dim + k_dim + v_dim]))
            else:
                out += [(p + "attn_q.weight", [e, q_dim]), (p + "attn_k.weight", [e, k_dim]),
                        (p + "attn_v.weight", [e, v_dim])]
                if self.qkv_bias:
                    out += [(p + "attn_q.bias", [q_dim]), (p + "attn_k.bias", [k_dim]),
                            (p + "attn_v.bias", [v_dim])]
            if self.qk_norm:
                out += [(p + "attn_q_norm.weight", [hk]), (p + "attn_k_norm.weight", [hk])]
            out.append((p + "attn_output.weight", [self.n_head * hv, e]))
            if self.post_norms:
                out.append((p + "post_attention_norm.weight", [e]))
            out.append((p + "ffn_norm.weight", [e]))
            if self.n_expert > 1:
                ff = self.n_ff_exp or self.n_ff
                n = self.n_expert
                out += [(p + "ffn_gate_inp.weight", [e, n]), (p + "ffn_gate_exps.weight", [e, ff, n]),
                        (p + "ffn_up_exps.weight", [e, ff, n]), (p + "ffn_down_exps.weight", [ff, e, n])]
                if self.n_expert_shared:
                    sff = ff * self.n_expert_shared
                    out += [(p + "ffn_gate_shexp.weight", [e, sff]), (p + "ffn_up_shexp.weight", [e, sff]),
                            (p + "ffn_down_shexp.weight", [sff, e])]
            elif self.fused_qkv:
                out += [(p + "ffn_up.weight", [e, 2 * self.n_ff]), (p + "ffn_down.weight", [self.n_ff, e])]
            else:
                out += [(p + "ffn_gate.weight", [e, self.n_ff]), (p + "ffn_up.weight", [e, self.n_ff]),
                        (p + "ffn_down.weight", [self.n_ff, e])]
            if self.post_norms:
                out.append((p + "post_ffw_norm.weight", [e]))
        out.append(("output_norm.weight", [e]))
        if not self.tied_embeddings:
            out.append(("output.weight", [e, v]))
        out += [(name, list(shape)) for name, shape in self.extra_tensors]
        return out
