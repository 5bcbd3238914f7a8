"""A GGUF model's metadata and tensor table, from a local file or over HTTP ranges.

Only the header is ever read: the key/value metadata and the tensor infos
(name, shape, type, offset). Tensor data is never touched, so a 40 GB model on
the Hub costs a few megabytes to plan.

One incremental parser serves local files and remote ones. It pulls bytes on
demand from a source, so a remote header is fetched in growing Range chunks
(as @huggingface/gguf does) and parsing stops where the header ends. The
`gguf` package's GGUFReader is not used for this because it memory-maps a whole
file and cannot parse a truncated buffer; tests cross-check this parser
against GGUFReader on real files.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from app.core.errors import (
    CamelidError,
    GatedRepoError,
    ModelFileError,
    NotFoundError,
    NotGGUFError,
    RangeNotSupportedError,
    RemoteError,
    TruncatedGGUFError,
)
from app.core.fit import header_limits, quants
from app.core.fit.architectures import (
    ATTENTION,
    BOTH,
    KNOWN_ARCHITECTURES,
    RECURRENT,
    RECURRENT_ARCHITECTURES,
    STATEFUL_ARCHITECTURES,
    SWA_PERIODS,
    ArchConstants,
    LayerMetaError,
    layer_rules,
    swa_layers,
)

GGUF_MAGIC = b"GGUF"
#: First Range request; each further one doubles, up to MAX_CHUNK.
FIRST_CHUNK = 1024 * 1024
MAX_CHUNK = 16 * 1024 * 1024
#: No real header is this large (the biggest tokenizers are ~20 MB); a file that
#: claims more is damaged, and we refuse rather than download gigabytes.
MAX_HEADER_BYTES = 256 * 1024 * 1024

_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")

# GGUF value types (gguf.GGUFValueType): fixed-size ones by struct format.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
            12: "<d"}
_STRING, _ARRAY = 8, 9
#: Metadata arrays longer than this are skipped, only their length kept
#: (tokenizer tokens, merges, scores: megabytes the planner never needs).
_KEEP_ARRAY_MAX = 4096


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the table: name, ggml shape (shape[0] is the row length), type, bytes."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    n_bytes: int
    #: Data offset relative to the shard's data section, and which shard holds it.
    offset: int = 0
    shard: int = 0

    @property
    def type_name(self) -> str:
        return quants.type_name(self.ggml_type)

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def layer(self) -> int | None:
        """The block index of a `blk.N.` tensor, else None."""
        return _layer_of(self.name)


@functools.lru_cache(maxsize=1 << 16)
def _layer_of(name: str) -> int | None:
    # The planner asks this of every tensor of every plan; names repeat across quants and models.
    if not name.startswith("blk."):
        return None
    end = name.find(".", 4)
    digits = name[4:end] if end > 4 else ""
    return int(digits) if digits.isdigit() else None


@dataclass
class ModelMeta:
    """What the planner needs from a GGUF header."""

    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    #: KV heads (GQA); a list when the model gives one per layer.
    n_head_kv: int | list[int]
    head_dim_k: int
    head_dim_v: int
    n_vocab: int
    n_ctx_train: int
    n_ff: int | list[int] = 0
    sliding_window: int = 0
    #: One flag per layer: whether that layer uses the sliding window.
    swa_pattern: list[bool] = field(default_factory=list)
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    tied_embeddings: bool = False
    chat_template: str | None = None
    file_type: int | None = None
    name: str | None = None
    size_label: str | None = None
    tensors: list[TensorInfo] = field(default_factory=list)
    #: Where the header came from: a path or URL per shard, first shard first.
    shards: list[str] = field(default_factory=list)
    #: Sum of the shards' sizes (None when unknown, e.g. a synthetic meta).
    file_size: int | None = None
    #: Header bytes of the first shard (where its tensor data begins).
    header_bytes: int = 0
    #: Bytes downloaded to read the header(s) (0 for local files).
    bytes_fetched: int = 0
    gguf_version: int = 3
    #: What each layer keeps between tokens (architectures.ATTENTION, RECURRENT, BOTH, NO_CACHE);
    #: empty means every layer is attention (synthetic metas of plain transformers).
    layer_kinds: list[str] = field(default_factory=list)
    #: f32 elements of one recurrent layer's state per sequence: conv rows (r) and SSM rows (s).
    state_r: int = 0
    state_s: int = 0
    #: MLA: the KV cache holds K only (the compressed latent and the RoPE key), no V.
    mla: bool = False
    #: Layers the planner has no rule for (their memory is a guess; the plan is approximate).
    unpriced_layers: list[int] = field(default_factory=list)
    #: True when the planner only knows generic rules for this architecture or some of its layers.
    approximate: bool = False
    warnings: list[str] = field(default_factory=list)
    #: Scalar metadata (and short arrays) as read; long arrays are left out.
    metadata: dict[str, Any] = field(default_factory=dict)

    # -- derived ----------------------------------------------------------------
    @functools.cached_property
    def memo(self) -> dict[Any, Any]:
        """Values derived from this header, computed once (the planner keeps per-layer costs here).

        Not a field: `dataclasses.replace` gives a changed header a fresh memo.
        """
        return {}

    @property
    def tensor_bytes(self) -> int:
        """Bytes of all tensors (the weights llama.cpp will allocate)."""
        return sum(t.n_bytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def quant(self) -> str | None:
        """The file type as people write it (``Q4_K_M``), or None when the header does not say."""
        return quants.file_type_name(self.file_type) if self.file_type is not None else None

    @property
    def n_head_kv_max(self) -> int:
        return max((self.kv_heads(i) for i in range(self.n_layer)), default=0)

    def kv_heads(self, layer: int) -> int:
        """KV heads of one layer (0 for a layer without attention)."""
        if isinstance(self.n_head_kv, list):
            if not self.n_head_kv:
                return 0
            return int(self.n_head_kv[min(layer, len(self.n_head_kv) - 1)])
        return int(self.n_head_kv)

    def layer_kind(self, layer: int) -> str:
        return self.layer_kinds[layer] if layer < len(self.layer_kinds) else ATTENTION

    def has_kv(self, layer: int) -> bool:
        """Whether llama.cpp gives this layer a KV cache (recurrent-only and MLP-only layers have none)."""
        return self.layer_kind(layer) in (ATTENTION, BOTH)

    def has_state(self, layer: int) -> bool:
        """Whether llama.cpp gives this layer a recurrent state (its RS buffer)."""
        return self.layer_kind(layer) in (RECURRENT, BOTH)

    def is_swa(self, layer: int) -> bool:
        return bool(self.swa_pattern[layer]) if layer < len(self.swa_pattern) else False

    def to_dict(self) -> dict[str, Any]:
        """A JSON summary (no tensor table, no chat template text)."""
        return {
            "architecture": self.architecture, "name": self.name, "size_label": self.size_label,
            "n_params": self.n_params, "n_layers": self.n_layer, "n_embd": self.n_embd,
            "n_head": self.n_head, "n_head_kv": self.n_head_kv, "head_dim_k": self.head_dim_k,
            "head_dim_v": self.head_dim_v, "n_vocab": self.n_vocab, "n_ctx_train": self.n_ctx_train,
            "sliding_window": self.sliding_window, "n_swa_layers": sum(self.swa_pattern),
            "n_expert": self.n_expert, "n_expert_used": self.n_expert_used,
            "tied_embeddings": self.tied_embeddings, "file_type": self.file_type, "quant": self.quant,
            "tensor_bytes": self.tensor_bytes, "n_tensors": len(self.tensors), "file_size": self.file_size,
            "shards": list(self.shards), "chat_template": self.chat_template,
            "layer_kinds": {k: self.layer_kinds.count(k) for k in dict.fromkeys(self.layer_kinds)},
            "mla": self.mla, "state_bytes_per_layer": 4 * (self.state_r + self.state_s),
            "unpriced_layers": list(self.unpriced_layers),
            "approximate": self.approximate, "warnings": list(self.warnings),
        }

    # -- synthetic ------------------------------------------------------------------
    @classmethod
    def from_architecture(cls, arch: ArchConstants, ftype: int | str, *, name: str | None = None) -> ModelMeta:
        """A meta for a model that is not downloaded: its tensors predicted from constants and file type."""
        predicted = quants.predict_tensors(arch, ftype)
        ft = quants.parse_file_type(ftype) if isinstance(ftype, str) else int(ftype)
        meta = cls(
            architecture=arch.architecture, n_layer=arch.n_layer, n_embd=arch.n_embd, n_head=arch.n_head,
            n_head_kv=arch.n_head_kv, head_dim_k=int(arch.head_dim_k or 0), head_dim_v=int(arch.head_dim_v or 0),
            n_vocab=arch.n_vocab, n_ctx_train=arch.n_ctx_train, n_ff=arch.n_ff,
            sliding_window=arch.sliding_window, swa_pattern=list(arch.swa_pattern or []),
            n_expert=arch.n_expert, n_expert_used=arch.n_expert_used, n_ff_exp=arch.n_ff_exp or 0,
            tied_embeddings=arch.tied_embeddings, file_type=int(ft) if ft is not None else None, name=name,
            tensors=[TensorInfo(t.name, t.shape, int(t.ggml_type), t.n_bytes) for t in predicted],
            file_size=quants.predict_file_size(arch, ftype, tensors=predicted),
        )
        _mark_unknown(meta)
        return meta

    def with_file_type(self, ftype: int | str) -> ModelMeta:
        """This model re-quantized as `ftype` (same tensors, types per llama.cpp's mix rules)."""
        ft = quants.parse_file_type(ftype) if isinstance(ftype, str) else quants.F(int(ftype))
        if ft is None:
            raise ValueError(f"unknown file type {ftype!r}")
        table = [(t.name, list(t.shape)) for t in self.tensors]
        ctx = quants.MixContext(architecture=self.architecture, n_layer=self.n_layer, n_head=self.n_head,
                                n_head_kv=self.n_head_kv_max, n_expert=self.n_expert,
                                has_output=any(t.name == "output.weight" for t in self.tensors),
                                is_70b=self.n_layer == 80)
        types = quants.assign_types(table, ft, ctx)
        tensors = [TensorInfo(t.name, t.shape, int(ty), quants.tensor_nbytes(ty, t.shape))
                   for t, ty in zip(self.tensors, types, strict=True)]
        header = self.header_bytes or 0
        return _replace(self, tensors=tensors, file_type=int(ft),
                        file_size=header + sum(-(-t.n_bytes // 32) * 32 for t in tensors),
                        shards=[], bytes_fetched=0)


    def to_record(self) -> dict[str, Any]:
        """The header as plain JSON: architecture metadata and the tensor table (no tokenizer, no
        template), what the catalog stores for a model it has not downloaded. `from_record` reads it."""
        metadata = {k: v for k, v in self.metadata.items()
                    if not k.startswith("tokenizer.") and isinstance(v, (int, float, str, bool, list))}
        metadata.setdefault(f"{self.architecture}.vocab_size", self.n_vocab)
        return {"metadata": metadata, "tensors": [[t.name, list(t.shape), t.ggml_type] for t in self.tensors],
                "header_bytes": self.header_bytes, "file_size": self.file_size}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, where: str = "the catalog") -> ModelMeta:
        """A header from `to_record`'s JSON, derived exactly as `read_gguf` derives one from a file."""
        try:
            kv = dict(record["metadata"])
            raw = [(str(n), tuple(int(d) for d in shape), int(ty)) for n, shape, ty in record["tensors"]]
            header_bytes = int(record.get("header_bytes") or 0)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ModelFileError(f"The model header stored in {header_limits.name(where)} is malformed "
                                 f"({header_limits.name(str(exc), 120)}).",
                                 "Refresh the catalog, or reinstall Camelid.") from exc
        if len(raw) > header_limits.MAX_TENSOR_COUNT:
            raise header_limits.implausible(where, "tensor count", len(raw),
                                            f"no real model has more than {header_limits.MAX_TENSOR_COUNT:,}")
        offsets, offset = [], 0
        for _name, shape, ty in raw:
            offsets.append(offset)
            try:
                offset += -(-quants.tensor_nbytes(ty, shape) // 32) * 32
            except (ValueError, KeyError) as exc:
                raise ModelFileError(f"The model header stored in {header_limits.name(where)} names an unknown "
                                     f"tensor type {ty}.",
                                     "Refresh the catalog, or update Camelid.") from exc
        header = _Header(version=3, kv=kv, array_lengths={},
                         tensors=[(n, sh, ty, off) for (n, sh, ty), off in zip(raw, offsets, strict=True)],
                         data_offset=header_bytes, label=header_limits.name(where))
        meta = _meta_from_headers([header], _tensor_infos(header, 0, offset), where)
        size = record.get("file_size")
        meta.file_size = int(size) if isinstance(size, int) else header_bytes + offset
        return meta


def _replace(meta: ModelMeta, **changes: Any) -> ModelMeta:
    from dataclasses import replace

    return replace(meta, **changes)


# -- the parser -------------------------------------------------------------------------


class _NeedMore(Exception):
    """The source has no more bytes: the header is cut short."""


class _Reader:
    """Sequential little-endian reads over a growing buffer, pulling bytes on demand."""

    def __init__(self, pull: Callable[[int], bytes]) -> None:
        self._pull = pull
        self.buf = bytearray()
        self.pos = 0

    def _ensure(self, n: int) -> None:
        while len(self.buf) - self.pos < n:
            if self.pos + n > MAX_HEADER_BYTES:
                raise _NeedMore("header larger than any real GGUF header")
            more = self._pull(self.pos + n - len(self.buf))
            if not more:
                raise _NeedMore
            self.buf += more

    def take(self, n: int) -> bytes:
        self._ensure(n)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self._ensure(size)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def string(self, limit: int = header_limits.MAX_STRING_BYTES, what: str = "a string") -> str:
        n = self.unpack("<Q")
        if n > limit:
            raise ValueError(f"{what} claims {n:,} bytes, more than the {limit:,} any real header has")
        return self.take(n).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        for _ in range(count):
            n = self.unpack("<Q")
            if n > header_limits.MAX_STRING_BYTES:
                raise ValueError(f"a string claims {n:,} bytes, more than the "
                                 f"{header_limits.MAX_STRING_BYTES:,} any real header has")
            self._ensure(n)
            self.pos += n


@dataclass
class _Header:
    version: int
    kv: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: list[tuple[str, tuple[int, ...], int, int]]  # name, shape, type, offset
    data_offset: int
    alignment: int = quants.GGUF_ALIGNMENT
    #: The file's name, for messages.
    label: str = "The model file"


def _parse_header(reader: _Reader) -> _Header:
    if reader.take(4) != GGUF_MAGIC:
        raise NotGGUFError("not a GGUF")
    version = reader.unpack("<I")
    if version not in (2, 3):
        raise NotGGUFError(f"GGUF version {version}")
    n_tensors = reader.unpack("<Q")
    n_kv = reader.unpack("<Q")
    if n_tensors > header_limits.MAX_TENSOR_COUNT:
        raise ValueError(f"it claims {n_tensors:,} tensors; no real model has more than "
                         f"{header_limits.MAX_TENSOR_COUNT:,}")
    if n_kv > header_limits.MAX_KV_COUNT:
        raise ValueError(f"it claims {n_kv:,} metadata keys; no real header has more than "
                         f"{header_limits.MAX_KV_COUNT:,}")
    kv: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    seen: set[str] = set()
    for _ in range(n_kv):
        key = reader.string(header_limits.MAX_KEY_BYTES, "a key")
        if key in seen:
            # gguf.cpp refuses the file; taking the last value would plan a model llama.cpp never loads.
            raise ValueError(f"the key {header_limits.quote(key)} appears twice, which llama.cpp refuses")
        seen.add(key)
        vtype = reader.unpack("<I")
        if vtype == _ARRAY:
            itype = reader.unpack("<I")
            count = reader.unpack("<Q")
            if count > header_limits.MAX_ARRAY_LENGTH:
                raise ValueError(f"the array {header_limits.quote(key)} claims {count:,} entries; no real "
                                 f"header has more than {header_limits.MAX_ARRAY_LENGTH:,}")
            lengths[key] = count
            if itype == _STRING:
                if count <= _KEEP_ARRAY_MAX:
                    kv[key] = [reader.string() for _ in range(count)]
                else:
                    reader.skip_strings(count)
            elif itype in _SCALARS:
                fmt = _SCALARS[itype]
                size = struct.calcsize(fmt)
                raw = reader.take(size * count)
                if count <= _KEEP_ARRAY_MAX:
                    kv[key] = [v[0] for v in struct.iter_unpack(fmt, raw)]
            else:
                raise ValueError(f"unsupported array item type {itype} for {header_limits.quote(key)}")
        elif vtype == _STRING:
            kv[key] = reader.string()
        elif vtype in _SCALARS:
            kv[key] = reader.unpack(_SCALARS[vtype])
        else:
            raise ValueError(f"unknown value type {vtype} for {header_limits.quote(key)}")
    tensors = []
    names: set[str] = set()
    for _ in range(n_tensors):
        name = reader.string(header_limits.MAX_TENSOR_NAME_BYTES, "a tensor name")
        if name in names:
            raise ValueError(f"the tensor {header_limits.quote(name)} appears twice, which llama.cpp refuses")
        names.add(name)
        n_dims = reader.unpack("<I")
        if n_dims > header_limits.MAX_TENSOR_DIMS:
            raise ValueError(f"tensor {header_limits.quote(name)} has {n_dims:,} dimensions "
                             f"(ggml allows {header_limits.MAX_TENSOR_DIMS})")
        shape = tuple(reader.unpack("<Q") for _ in range(n_dims))
        ggml_type = reader.unpack("<I")
        offset = reader.unpack("<Q")
        tensors.append((name, shape, ggml_type, offset))
    alignment = _alignment(kv.get("general.alignment", quants.GGUF_ALIGNMENT))
    data_offset = -(-reader.pos // alignment) * alignment
    return _Header(version, kv, lengths, tensors, data_offset, alignment)


def _alignment(value: Any) -> int:
    """general.alignment as gguf.cpp takes it: a power of two (a u32 in real files)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1) \
            or value > header_limits.MAX_ALIGNMENT:
        raise ValueError(f"its general.alignment is {header_limits.quote(value)}, not a power of two up to "
                         f"{header_limits.MAX_ALIGNMENT:,}")
    return value


def _parse(pull: Callable[[int], bytes], where: str) -> _Header:
    where = header_limits.name(where)  # a name from a URL or a file system may be long or hold escapes
    reader = _Reader(pull)
    try:
        header = _parse_header(reader)
    except NotGGUFError as exc:
        raise NotGGUFError(f"{where} is not a GGUF model file ({exc}).",
                           "Choose a .gguf file; other formats (safetensors, .bin) must be converted first.") from exc
    except _NeedMore as exc:
        if reader.pos < 4:
            raise NotGGUFError(f"{where} is too short to be a GGUF model file.",
                               "Choose a complete .gguf file.") from exc
        raise TruncatedGGUFError(f"{where} ends inside its GGUF header (after {len(reader.buf):,} bytes).",
                                 "The file is incomplete: download it again.") from exc
    except (ValueError, UnicodeDecodeError, struct.error, OverflowError) as exc:
        raise ModelFileError(f"{where} has a damaged GGUF header ({header_limits.name(str(exc), 200)}).",
                             "Download the file again; if it persists, the file itself is broken.") from exc
    header.label = where
    return header


def _tensor_infos(header: _Header, shard: int, data_size: int | None) -> list[TensorInfo]:
    """Tensor infos with bytes from type and shape (from offsets for a type this gguf does not know).

    Checked as gguf.cpp and llama.cpp's loader check them: plausible names and shapes, each
    tensor's data right after the previous one's (padded to the alignment), and all of it inside
    the file when its size is known; a file that fails is one llama.cpp refuses to load.
    """
    where = header.label
    for name, shape, _ty, _off in header.tensors:
        header_limits.check_tensor(where, name, shape)
    if len({t[0] for t in header.tensors}) != len(header.tensors):
        raise ModelFileError(f"{where} is damaged: two of its tensors have the same name (llama.cpp refuses it).",
                             "Download the file again; if it persists, the file itself is broken.")
    out = []
    ordered = sorted(header.tensors, key=lambda t: t[3])
    next_offset = {t[0]: (ordered[i + 1][3] if i + 1 < len(ordered) else data_size) for i, t in enumerate(ordered)}
    expected: int | None = 0  # where the next tensor's data must start, while every size is known
    end_of_data = 0
    for name, shape, ggml_type, offset in header.tensors:
        try:
            n_bytes = quants.tensor_nbytes(ggml_type, shape)
        except (ValueError, KeyError):
            end = next_offset[name]
            n_bytes = max(0, end - offset) if end is not None else 0
            expected = None  # a type this version does not know: its size, and so the next offset, is a guess
        else:
            if expected is not None and offset != expected:
                raise ModelFileError(
                    f"{where} is damaged: the data of tensor {header_limits.quote(name)} is said to start at "
                    f"byte {offset:,} of the data section, but the tensors before it end at {expected:,} "
                    "(llama.cpp refuses the file).",
                    "Download the file again; if it persists, the file itself is broken.")
            if expected is not None:
                expected += -(-n_bytes // header.alignment) * header.alignment
        end_of_data = max(end_of_data, offset + n_bytes)
        out.append(TensorInfo(name, tuple(int(d) for d in shape), int(ggml_type), n_bytes, int(offset), shard))
    if data_size is not None and end_of_data > max(data_size, 0):
        raise TruncatedGGUFError(
            f"{where} is incomplete: its tensors need {end_of_data:,} bytes of data but the file holds "
            f"{max(data_size, 0):,} after its header (llama.cpp refuses it).",
            "Download the file again.")
    return out


def _meta_from_headers(headers: list[_Header], tensors: list[TensorInfo], where: str) -> ModelMeta:
    """The planner's view of a header, after every number it will use is checked against
    `header_limits` (so a hostile header costs microseconds and never a per-layer loop)."""
    where = header_limits.name(where)
    kv = headers[0].kv
    lengths = headers[0].array_lengths
    arch_raw = kv.get("general.architecture")
    if not arch_raw:
        raise ModelFileError(f"{where} does not say which model architecture it holds.",
                             "The GGUF is incomplete or not a language model; choose another file.")
    if not isinstance(arch_raw, str) or len(arch_raw) > header_limits.MAX_ARCH_NAME:
        raise header_limits.implausible(where, "general.architecture", arch_raw,
                                        f"it must be a name of at most {header_limits.MAX_ARCH_NAME} characters")
    arch = arch_raw

    def get(key: str, default: Any = None) -> Any:
        return kv.get(f"{arch}.{key}", default)

    # Every number the planner reads, checked before anything is derived from it: block_count
    # first, since per-layer arrays are checked against it.
    block = get("block_count")
    if block is not None:
        header_limits.check_arch_value(where, arch, "block_count", block, None,
                                       lengths.get(f"{arch}.block_count"))
    n_layer = int(block or 0)
    for key in header_limits.ARCH_LIMITS:
        full = f"{arch}.{key}"
        if key != "block_count" and (full in kv or full in lengths):
            header_limits.check_arch_value(where, arch, key, kv.get(full), n_layer or None, lengths.get(full))

    n_embd = int(get("embedding_length", 0) or 0)
    n_head_raw = get("attention.head_count", 0)
    n_head = int(max(n_head_raw) if isinstance(n_head_raw, list) else n_head_raw or 0)
    kv_raw = get("attention.head_count_kv", None)
    if kv_raw is None:
        n_head_kv: int | list[int] = [int(x) for x in n_head_raw] if isinstance(n_head_raw, list) else n_head
    elif isinstance(kv_raw, list):
        n_head_kv = [int(x) for x in kv_raw]
        if len(set(n_head_kv)) == 1:
            n_head_kv = n_head_kv[0]
    else:
        n_head_kv = int(kv_raw)
    head_k = int(get("attention.key_length", 0) or (n_embd // n_head if n_head else 0))
    head_v = int(get("attention.value_length", 0) or head_k)
    n_vocab = int(get("vocab_size", 0) or lengths.get("tokenizer.ggml.tokens", 0))
    if not n_vocab:
        embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
        n_vocab = embd.shape[1] if embd and len(embd.shape) > 1 else 0
        if n_vocab > header_limits.MAX_VOCAB:
            raise header_limits.implausible(where, "vocabulary (token_embd.weight's rows)", n_vocab,
                                            f"no real model has more than {header_limits.MAX_VOCAB:,} tokens")
    window = int(get("attention.sliding_window", 0) or 0)
    pattern_raw = get("attention.sliding_window_pattern", None)
    if isinstance(pattern_raw, list):
        swa = [bool(x) for x in pattern_raw][:n_layer]
    elif _is_count(pattern_raw) and pattern_raw > 1 and window:
        swa = [i % pattern_raw < pattern_raw - 1 for i in range(n_layer)]
    else:
        swa = swa_layers(arch, n_layer, window)
    n_ff = get("feed_forward_length", 0)
    ftype = kv.get("general.file_type")
    if not n_layer or not n_embd or (not n_head and arch not in RECURRENT_ARCHITECTURES):
        raise ModelFileError(f"{where} lacks the layer count, width or heads of its "
                             f"{header_limits.name(arch, 40)} model.",
                             "The GGUF metadata is incomplete; choose another file.")
    _check_layers_have_tensors(where, tensors, n_layer)
    n_expert, n_expert_used = int(get("expert_count", 0) or 0), int(get("expert_used_count", 0) or 0)
    if n_expert_used > n_expert or (n_expert > 0 and not n_expert_used):
        # llama.cpp asserts 0 < expert_used_count <= expert_count for a mixture of experts.
        bound = (f"a model with {n_expert} experts must use between 1 and {n_expert} of them" if n_expert
                 else "a model without experts cannot use any")
        raise header_limits.implausible(where, f"{arch}.expert_used_count", n_expert_used,
                                        f"{bound} (llama.cpp refuses the file)")
    try:
        rules = layer_rules(arch, get, n_layer, n_embd)
    except LayerMetaError as exc:
        raise ModelFileError(f"{where} has contradictory layer metadata for its "
                             f"{header_limits.name(arch, 40)} model: {exc}.", exc.fix) from exc
    name, size_label, template = kv.get("general.name"), kv.get("general.size_label"), kv.get("tokenizer.chat_template")
    meta = ModelMeta(
        architecture=arch, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        head_dim_k=head_k, head_dim_v=head_v, n_vocab=n_vocab,
        n_ctx_train=int(get("context_length", 0) or 0),
        n_ff=[int(x) for x in n_ff] if isinstance(n_ff, list) else int(n_ff or 0),
        sliding_window=window if any(swa) else 0, swa_pattern=swa,
        n_expert=n_expert, n_expert_used=n_expert_used,
        n_ff_exp=int(get("expert_feed_forward_length", 0) or 0),
        tied_embeddings=not any(t.name == "output.weight" for t in tensors),
        # Shown, never computed with: text of another type is left out rather than refused.
        chat_template=template if isinstance(template, str) else None,
        file_type=int(ftype) if _is_count(ftype) else None,
        name=header_limits.name(name, 200) if isinstance(name, str) else None,
        size_label=header_limits.name(size_label, 40) if isinstance(size_label, str) else None,
        tensors=tensors, header_bytes=headers[0].data_offset, gguf_version=headers[0].version,
        metadata={k: v for k, v in kv.items() if k != "tokenizer.chat_template"},
        layer_kinds=rules.kinds, state_r=rules.state_r, state_s=rules.state_s, mla=rules.mla,
        unpriced_layers=rules.unpriced, warnings=list(rules.warnings), approximate=bool(rules.unpriced),
    )
    _mark_unknown(meta)
    return meta


def _check_layers_have_tensors(where: str, tensors: list[TensorInfo], n_layer: int) -> None:
    """The block count and the tensor table must describe the same blocks: llama.cpp refuses a file
    with a block that has no tensors (a missing tensor) or tensors of a block past the count (it
    counts the tensors it used). A table with no block tensors at all (a metadata-only header) passes."""
    layers = {t.layer for t in tensors} - {None}
    if not layers:
        return
    beyond = max(layer for layer in layers if layer is not None)
    if beyond >= n_layer:
        raise ModelFileError(f"{where} is damaged: it has tensors of block {beyond:,} but says it has "
                             f"{n_layer} blocks (llama.cpp refuses the file).",
                             "Download the file again; if it persists, the file itself is broken.")
    missing = next((il for il in range(n_layer) if il not in layers), None)
    if missing is not None:
        raise ModelFileError(f"{where} is damaged: it says it has {n_layer} blocks but has no tensors for "
                             f"block {missing} (llama.cpp refuses the file).",
                             "Download the file again; if it persists, the file itself is broken.")


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _mark_unknown(meta: ModelMeta) -> None:
    arch = meta.architecture
    if arch not in KNOWN_ARCHITECTURES and arch not in SWA_PERIODS and arch not in STATEFUL_ARCHITECTURES \
            and not meta.unpriced_layers:
        meta.approximate = True
        meta.unpriced_layers = list(range(meta.n_layer))
        meta.warnings.append(
            f"Camelid has no exact memory rules for the '{meta.architecture}' architecture; all "
            f"{meta.n_layer} layers are priced with generic transformer rules, so the plan is approximate.")


# -- local files ------------------------------------------------------------------------------


def shard_paths(first: str) -> list[str] | None:
    """All shard names of a split GGUF given any shard's name (``x-00001-of-00003.gguf``), else None."""
    match = _SHARD_RE.search(first)
    if not match:
        return None
    total = int(match.group(2))
    if total > header_limits.MAX_SHARDS:
        # Each part is a file to open or a request to make: a name is not allowed to ask for 99,999.
        raise ModelFileError(
            f"{header_limits.name(first.rsplit('/', 1)[-1])} says it is part of a model split into {total:,} "
            f"files; no real model has more than {header_limits.MAX_SHARDS}, so Camelid does not look for them.",
            "Check the file name; a split model's parts are named -00001-of-0000N.gguf.")
    stem = first[: match.start()]
    return [f"{stem}-{i:05d}-of-{total:05d}.gguf" for i in range(1, total + 1)]


def read_gguf(path: str | os.PathLike[str]) -> ModelMeta:
    """Read a local GGUF's header (all shards' tensor tables for a split model); never tensor data."""
    first = Path(path)
    names = shard_paths(str(first)) or [str(first)]
    headers: list[_Header] = []
    tensors: list[TensorInfo] = []
    total = 0
    for i, name in enumerate(names):
        p = Path(name)
        try:
            size = p.stat().st_size
            with p.open("rb") as f:
                header = _parse(lambda n: f.read(max(n, 1 << 20)), p.name)  # used up before f closes
        except FileNotFoundError as exc:
            if i == 0:
                raise ModelFileError(f"There is no file at {p}.", "Check the path.") from exc
            raise ModelFileError(f"{first.name} is split into {len(names)} files but {p.name} is missing.",
                                 "Download every part into the same folder.") from exc
        except IsADirectoryError as exc:
            raise ModelFileError(f"{p} is a folder, not a model file.", "Choose a .gguf file.") from exc
        except PermissionError as exc:
            raise ModelFileError(f"{p} cannot be read (permission denied).",
                                 "Fix the file's permissions or copy it somewhere readable.") from exc
        headers.append(header)
        tensors += _tensor_infos(header, i, size - header.data_offset)
        total += size
    meta = _meta_from_headers(headers, tensors, first.name)
    meta.shards = [str(Path(n)) for n in names]
    meta.file_size = total
    return meta


# -- remote files --------------------------------------------------------------------------------


_RESOLVE_RE = re.compile(r"^https?://[^/]+/(?:(?:models|datasets|spaces)/)?([^/]+/[^/]+)/resolve/[^/]+/(.+)$")


class _RangeSource:
    """Pulls a remote file's bytes in growing Range chunks under the HTTP policy, counting what it downloads.

    Each answer is read raw (a compressed one is refused: its bytes would not be
    the file's) and only up to the length asked for, so a server that goes on is
    cut off; at most `budget` bytes arrive in all; the call's deadline and cancel
    check run between pieces.
    """

    def __init__(self, url: str, headers: dict[str, str], call: Any, budget: int) -> None:
        self.url = url
        self.headers = headers
        self.call = call
        self.budget = budget
        self.offset = 0
        self.chunk = FIRST_CHUNK
        self.bytes_fetched = 0
        self.total_size: int | None = None
        self.eof = False
        self.exhausted = False

    def pull(self, need: int) -> bytes:
        from app.core.http_policy import HeaderTooLargeError

        if self.eof:
            return b""
        left = self.budget - self.bytes_fetched
        if left <= 0:
            self.exhausted = True
            label = self.url.split("?")[0].rsplit("/", 1)[-1]
            raise HeaderTooLargeError(
                f"The header of {_RangeSource.label(label)} is larger than {self.budget / 2**20:g} MiB, "
                "so Camelid stopped reading it.", "It is not a model Camelid can plan; if it should be, report the repository.")
        length = min(max(self.chunk, need), left)
        self.chunk = min(self.chunk * 2, MAX_CHUNK)
        start, end = self.offset, self.offset + length - 1
        data = self._get(start, end)
        self.offset += len(data)
        if len(data) < length:
            self.eof = True
        return data

    def _get(self, start: int, end: int) -> bytes:
        from app.core.http_policy import MalformedAnswerError

        length = end - start + 1
        headers = {**self.headers, "Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"}
        label = _RangeSource.label(self.url.split("?")[0].rsplit("/", 1)[-1])
        with self.call.stream(self.url, headers=headers) as response:
            status = response.status_code
            if status == 416:
                return b""  # the file ends before `start`
            if status not in (200, 206):
                raise _http_error(response, self.url)  # the error body is never read
            if response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
                raise MalformedAnswerError(f"The server of {label} answered a byte range compressed, which "
                                           "Camelid did not ask for, so it stopped.",
                                           "Try again later, or use another mirror (HF_ENDPOINT).")
            if status == 200:
                announced = response.headers.get("Content-Length", "")
                if not announced.strip().isdigit() or int(announced) > length or start > 0:
                    # Reading on would download the whole model to see its header.
                    raise RangeNotSupportedError(
                        f"The server of {label} ignores byte ranges: it would send the whole file "
                        "to show its header, so Camelid stopped.",
                        "Try again later, or use a mirror that supports Range requests (HF_ENDPOINT).")
            elif status == 206:
                self._check_content_range(response.headers.get("Content-Range"), start, label)
            data = self.call.read(response, limit=length, truncate=True)
            self.bytes_fetched += len(data)
            return data

    def _check_content_range(self, value: str | None, start: int, label: str) -> None:
        """A 206 must be the range asked for; its total size, when given, must be a plausible size."""
        from app.core.http_policy import MalformedAnswerError

        if value is None:
            return
        found = re.fullmatch(r"\s*bytes\s+(\d{1,16})-(\d{1,16})/(\d{1,16}|\*)\s*", value)
        if not found or int(found.group(1)) != start or int(found.group(2)) < start or (
                found.group(3) != "*" and int(found.group(3)) <= int(found.group(2))):
            raise MalformedAnswerError(f"The server of {label} answered another byte range than the one asked for.",
                                       "Try again later, or use another mirror (HF_ENDPOINT).")
        if found.group(3) != "*":
            self.total_size = int(found.group(3))

    @staticmethod
    def label(text: str) -> str:
        """A file name or URL from a server, fit for a message (no raw control characters)."""
        from app.core.http_policy import safe_text

        return safe_text(text, 120)


def _http_error(response: Any, url: str) -> CamelidError:
    status = response.status_code
    code = response.headers.get("X-Error-Code", "")
    match = _RESOLVE_RE.match(url.split("?")[0])
    repo_id, filename = (match.group(1), match.group(2)) if match else (None, None)
    what = f"{repo_id}/{filename}" if repo_id else url
    page = url.split("/resolve/")[0] if "/resolve/" in url else url
    if code == "GatedRepo" or (status in (401, 403) and code not in ("RepoNotFound", "EntryNotFound")):
        if status == 403:
            return GatedRepoError(f"{repo_id or url} is gated and your account has not been granted access.",
                                  f"Accept the license at {page}, then try again.")
        return GatedRepoError(f"{repo_id or url} is gated or private: reading it needs a Hugging Face token.",
                              f"Accept the license at {page}, then set HF_TOKEN or run `hf auth login`.")
    if status == 404 or code in ("RepoNotFound", "EntryNotFound", "RevisionNotFound"):
        if code == "RepoNotFound" or (status == 401 and code == "RepoNotFound"):
            return NotFoundError(f"The repository {repo_id or url} was not found (or it is private).",
                                 "Check the name with `camelid search`; for a private repo set HF_TOKEN.")
        fix = f"List the files with `camelid files {repo_id}`." if repo_id else "Check the URL."
        return NotFoundError(f"{what} does not exist.", fix)
    return RemoteError(f"The server answered {status} for {what}.",
                       "Try again in a moment; if it persists, check HF_ENDPOINT and your connection.")


def read_gguf_url(url: str, *, headers: dict[str, str] | None = None, call: Any = None,
                  budget: int | None = None, cancel: Any = None, session: Any = None) -> ModelMeta:
    """Read a remote GGUF's header with HTTP Range requests; `meta.bytes_fetched` counts the download.

    For a split GGUF's first shard, every shard's header is read the same way.
    Everything runs under one `HubCall` (`app.core.http_policy`; the current
    policy's when none is given): its timeouts, deadline and cancel check, and
    at most `budget` bytes in all (the policy's ``max_header_bytes`` by default),
    beyond which the header is a `HeaderTooLargeError`. `session`: an `httpx2.Client`
    to send through instead of the call's own (the policy's bounds still apply).
    """
    from app.core.http_policy import HttpPolicy

    label = _RangeSource.label(url.split("?")[0].rsplit("/", 1)[-1])
    if call is None:
        with HttpPolicy.current().start(f"the header of {label}", cancel=cancel, client=session) as own:
            return read_gguf_url(url, headers=headers, call=own, budget=budget)
    left = call.policy.max_header_bytes if budget is None else budget
    names = shard_paths(url.split("?")[0]) or [url]
    if len(names) > 1 and "?" in url:
        query = url.split("?", 1)[1]
        names = [f"{n}?{query}" for n in names]
    parsed: list[_Header] = []
    tensors: list[TensorInfo] = []
    fetched = 0
    total = 0
    for i, shard_url in enumerate(names):
        source = _RangeSource(shard_url, dict(headers or {}), call, left)
        shard_label = _RangeSource.label(shard_url.split("?")[0].rsplit("/", 1)[-1])
        try:
            header = _parse(source.pull, shard_label)
        finally:
            fetched += source.bytes_fetched
            left -= source.bytes_fetched
        size = source.total_size
        parsed.append(header)
        tensors += _tensor_infos(header, i, size - header.data_offset if size else None)
        total += size or 0
    meta = _meta_from_headers(parsed, tensors, label)
    meta.shards = names
    meta.file_size = total or None
    meta.bytes_fetched = fetched
    return meta


def read_gguf_remote(repo_id: str, filename: str, *, revision: str = "main", token: str | None = None,
                     cancel: Any = None, policy: Any = None) -> ModelMeta:
    """Read the header of ``filename`` in the Hub repo ``repo_id`` (all shards of a split model).

    Bounded by `policy` (an `app.core.http_policy.HttpPolicy`, the current one by
    default); `cancel` (an Event or a callable) stops it between pieces.
    """
    # hub.file_url reads HF_ENDPOINT at call time: huggingface_hub reads it only
    # at import, and a mirror (or a test server) set later must still win.
    from app.core.http_policy import HttpPolicy
    from app.core.models import hub

    hub.validate_repo_id(repo_id)
    url = hub.file_url(repo_id, filename, revision=revision)
    what = f"the header of {_RangeSource.label(repo_id + '/' + filename)}"
    with (policy or HttpPolicy.current()).start(what, cancel=cancel) as call:
        return read_gguf_url(url, headers=hub.auth_headers(token), call=call)
