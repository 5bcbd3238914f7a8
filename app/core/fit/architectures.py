"""Architecture constants and the tensors they imply, for models that are not downloaded.

The recommender plans catalog models from a handful of numbers (layers,
widths, heads, vocabulary). `ArchConstants.tensors()` turns those numbers into
the tensor table llama.cpp's converter writes (names and ggml shapes), and
`quants.assign_types` gives each tensor its type for a file type, so a file
size and a memory plan follow without a header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.fit.header_limits import quote

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
    # MLA (K-only cache when key_length_mla/value_length_mla are present, full K and V otherwise).
    "deepseek2",
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


# -- layer kinds: attention, recurrent state, both ---------------------------------------------

#: What a layer keeps between tokens: a KV cache ("attention"), a recurrent state
#: ("recurrent": conv + SSM / delta-net / short-conv rows, f32, one per sequence), both
#: (Falcon-H1's parallel attention + Mamba-2), or neither ("ffn": Nemotron-H's MLP-only layers,
#: multi-token-prediction layers the main context never attends).
ATTENTION, RECURRENT, BOTH, NO_CACHE = "attention", "recurrent", "both", "ffn"

#: llama.cpp's llm_arch_is_recurrent: every layer holds a recurrent state and none a KV cache.
RECURRENT_ARCHITECTURES = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})
#: Hybrids whose layer kinds follow from `full_attention_interval` / `attention.recurrent_layers`.
INTERVAL_HYBRIDS = frozenset({"qwen3next", "qwen35", "qwen35moe"})
#: Hybrids where a layer is recurrent iff its `attention.head_count_kv` entry is 0.
KV_ZERO_HYBRIDS = frozenset({"granitehybrid", "lfm2", "lfm2moe", "jamba", "kimi-linear"})
#: Nemotron-H: recurrent iff head_count_kv and feed_forward_length are both 0; attention iff only n_ff is 0.
NEMOTRON_HYBRIDS = frozenset({"nemotron_h", "nemotron_h_moe"})
#: Hybrids llama.cpp 0.3.36 runs whose state or cache rules Camelid does not implement.
UNPRICED_HYBRIDS = frozenset({"plamo2", "bailingmoe3", "kimi-k3", "glm5-next", "qwen4exp", "deepseek4",
                              "minimax-01", "glm-dsa", "deepseek32"})
#: Everything above that Camelid prices exactly (KV cache per layer + recurrent state).
STATEFUL_ARCHITECTURES = RECURRENT_ARCHITECTURES | INTERVAL_HYBRIDS | KV_ZERO_HYBRIDS | NEMOTRON_HYBRIDS | {
    "falcon-h1"}

#: No real model comes near these; a header that claims more is damaged (header_limits bounds each key).
_MAX_SSM = 1 << 20
_MAX_STATE_ELEMENTS = 1 << 31


@dataclass
class LayerRules:
    """Per-layer memory kinds of one model, read from its header the way llama.cpp reads them."""

    kinds: list[str]
    #: Recurrent state elements of one recurrent layer per sequence (llama.cpp's n_embd_r, n_embd_s).
    state_r: int = 0
    state_s: int = 0
    #: MLA (DeepSeek-V2/V3, GLM-4.7-Flash, Kimi-Linear): the cache holds K (latent + RoPE key) only, no V.
    mla: bool = False
    #: Layers whose cache or state Camelid cannot price (with the reason, for the plan's warning).
    unpriced: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class LayerMetaError(ValueError):
    """The header's layer metadata contradicts itself (message, fix)."""

    def __init__(self, message: str, fix: str = "The GGUF metadata is damaged or was written by a broken "
                 "converter; download the file again or choose another quantization.") -> None:
        super().__init__(message)
        self.fix = fix


def _int(get: Any, key: str, default: int = 0) -> int:
    value = get(key, None)
    if value is None:
        return default
    if isinstance(value, list | bool) or not isinstance(value, int | float):
        raise LayerMetaError(f"its {key} is {quote(value)}, not a number")
    return int(value)


def _per_layer(raw: Any, n_layer: int, key: str) -> list[int] | None:
    """A per-layer array (length-checked as llama.cpp's get_key_or_arr does), a scalar broadcast, or None."""
    if raw is None:
        return None
    if isinstance(raw, list):
        if len(raw) != n_layer:
            raise LayerMetaError(f"its {key} array has {len(raw)} entries for {n_layer} layers "
                                 "(llama.cpp refuses it: wrong array length)")
        if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in raw):
            raise LayerMetaError(f"its {key} array holds values that are not layer counts: {quote(raw)}")
        return [int(x) for x in raw]
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise LayerMetaError(f"its {key} is {quote(raw)}")
    return [int(raw)] * n_layer


def layer_rules(arch: str, get: Any, n_layer: int, n_embd: int) -> LayerRules:
    """Which layers hold a KV cache, a recurrent state or both, and how large one state is.

    `get(key, default)` reads `<arch>.<key>` from the header. Raises LayerMetaError where
    the metadata contradicts itself (llama.cpp would refuse the file, or crash on it).
    """
    nextn = _int(get, "nextn_predict_layers")
    if nextn < 0 or nextn > n_layer:
        raise LayerMetaError(f"its nextn_predict_layers ({nextn}) is not between 0 and its {n_layer} layers")
    n_main = n_layer - nextn
    heads_kv = _per_layer(get("attention.head_count_kv", None), n_layer, "attention.head_count_kv")
    heads = _per_layer(get("attention.head_count", None), n_layer, "attention.head_count") or [0] * n_layer
    if heads_kv is None:
        heads_kv = list(heads)
    n_ff = _per_layer(get("feed_forward_length", None), n_layer, "feed_forward_length") or [0] * n_layer
    # Multi-token-prediction layers: the main context never attends them (llama.cpp filters them out).
    kinds = [ATTENTION if il < n_main else NO_CACHE for il in range(n_layer)]
    rules = LayerRules(kinds=kinds)

    if arch in RECURRENT_ARCHITECTURES:
        rules.kinds = [RECURRENT] * n_layer
    elif arch in INTERVAL_HYBRIDS:
        recr = get("attention.recurrent_layers", None)
        if recr is not None:
            flags = _per_layer(recr, n_layer, "attention.recurrent_layers")
            assert flags is not None
            if any(f not in (0, 1) for f in flags):
                raise LayerMetaError("its attention.recurrent_layers holds values other than 0 and 1: "
                                     f"{quote(flags)}")
            recurrent = [bool(f) for f in flags]
        else:
            interval = _int(get, "full_attention_interval", 4)
            if interval <= 0:
                raise LayerMetaError(f"its full_attention_interval is {interval} (llama.cpp divides by it)")
            if interval > n_main:
                raise LayerMetaError(f"its full_attention_interval ({interval}) is larger than its {n_main} "
                                     "layers, so no layer would have attention")
            recurrent = [il < n_main and (il + 1) % interval != 0 for il in range(n_layer)]
        for il in range(n_main):
            rules.kinds[il] = RECURRENT if recurrent[il] else ATTENTION
    elif arch in KV_ZERO_HYBRIDS:
        for il in range(n_main):
            rules.kinds[il] = RECURRENT if heads_kv[il] == 0 else ATTENTION
    elif arch in NEMOTRON_HYBRIDS:
        for il in range(n_main):
            if heads_kv[il] == 0 and n_ff[il] == 0:
                rules.kinds[il] = RECURRENT
            elif heads_kv[il] > 0 and n_ff[il] == 0:
                rules.kinds[il] = ATTENTION
            else:
                rules.kinds[il] = NO_CACHE
    elif arch == "falcon-h1":
        rules.kinds = [BOTH] * n_layer
    elif arch in UNPRICED_HYBRIDS:
        rules.unpriced = list(range(n_layer))
        rules.warnings.append(
            f"Camelid has no rules for the recurrent state and sparse caches of '{arch}' (a hybrid llama.cpp "
            f"runs): layers 0-{n_layer - 1} are priced as plain attention, so the plan is approximate.")
    elif any(get(k, None) is not None for k in ("ssm.state_size", "ssm.conv_kernel", "shortconv.l_cache",
                                                   "wkv.head_size", "kda.head_dim")):
        rules.unpriced = list(range(n_layer))
        rules.warnings.append(
            f"The '{arch}' header describes a recurrent state (ssm/shortconv/wkv keys) that Camelid has no rule "
            f"for: layers 0-{n_layer - 1} are priced as plain attention and their state is not counted.")

    # An attention layer with no KV heads would hold an empty cache: llama.cpp's own hybrids
    # use exactly that to mark recurrent layers, anything else has contradictory metadata.
    for il, kind in enumerate(rules.kinds):
        if kind in (ATTENTION, BOTH) and heads_kv[il] == 0 and arch in STATEFUL_ARCHITECTURES:
            raise LayerMetaError(f"its layer {il} is an attention layer with 0 KV heads")
        if heads[il] and heads_kv[il] > heads[il]:
            # Grouped-query attention shares each KV head among query heads; ggml cannot broadcast the other way.
            raise LayerMetaError(f"its layer {il} has {heads_kv[il]} KV heads for {heads[il]} query heads")
    if arch not in STATEFUL_ARCHITECTURES and any(heads) and not any(heads_kv[:n_main]):
        # A transformer whose every layer has query heads and no KV heads: no real model, and llama.cpp
        # cannot build its attention (per-layer zeros, as in Nemotron-51B's skipped layers, are fine).
        raise LayerMetaError("it has attention heads but 0 KV heads in every layer")

    if any(k in (RECURRENT, BOTH) for k in rules.kinds):
        rules.state_r, rules.state_s = _state_elements(arch, get, n_embd, heads[0])
    # llama.cpp's is_mla(): both MLA head sizes present. Older DeepSeek GGUFs (kv_lora_rank only) keep full K and V.
    rules.mla = _int(get, "attention.key_length_mla") > 0 and _int(get, "attention.value_length_mla") > 0
    return rules


def _state_elements(arch: str, get: Any, n_embd: int, n_head0: int) -> tuple[int, int]:
    """llama.cpp's n_embd_r() and n_embd_s(): f32 elements of one layer's conv and SSM state rows."""
    def size(key: str, required: bool = False) -> int:
        value = _int(get, key, -1)
        if value == -1:
            if required:
                raise LayerMetaError(f"it lacks {arch}.{key}, which llama.cpp requires for its recurrent layers")
            return 0
        if value < 0 or value > _MAX_SSM:
            raise LayerMetaError(f"its {key} is {value}, outside any real model's range (0 to {_MAX_SSM:,})")
        return value

    wkv = size("wkv.head_size")
    if wkv:
        shift = size("token_shift_count") or 2
        return shift * n_embd, n_embd * wkv
    l_cache = size("shortconv.l_cache", required=arch in ("lfm2", "lfm2moe"))
    kda = size("kda.head_dim", required=arch == "kimi-linear")
    conv = size("ssm.conv_kernel", required=not l_cache)
    if l_cache:
        if l_cache < 1:
            raise LayerMetaError(f"its shortconv.l_cache is {l_cache}; a short convolution needs at least 1")
        return n_embd * (l_cache - 1), size("ssm.state_size") * size("ssm.inner_size")
    if kda:
        inner = n_head0 * kda
        return 3 * (conv - 1 if conv > 0 else 3) * inner, kda * kda * n_head0
    inner = size("ssm.inner_size", required=True)
    state = size("ssm.state_size", required=True)
    size("ssm.time_step_rank", required=True)
    groups = size("ssm.group_count", required=arch not in ("mamba", "jamba"))
    r = (conv - 1 if conv > 0 else 0) * (inner + 2 * groups * state)
    s = state * inner
    if r + s > _MAX_STATE_ELEMENTS:
        raise LayerMetaError(f"its ssm sizes give a state of {r + s:,} floats per layer, beyond any real model")
    return r, s
