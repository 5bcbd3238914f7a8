"""The curated model catalog (resources/catalog.json): trustworthy instruct models.

Each entry names the original model, the GGUF repo to fetch it from, its
license, and the architecture constants from its config.json. File sizes are
never typed in: `CatalogModel.files` predicts them per quant from the
architecture with the fit engine's file-type rules (`app.core.fit.quants`), and
`with_hub_sizes` replaces the predictions with the sizes a Hub listing gives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import paths
from app.core.errors import CamelidError, CatalogError

if TYPE_CHECKING:
    from app.core.fit import ArchConstants, ModelMeta

#: The quants the catalog offers for every model, smallest first.
CATALOG_QUANTS: tuple[str, ...] = (
    "Q2_K", "Q3_K_M", "IQ3_M", "Q4_K_S", "IQ4_XS", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16",
)
_SIZE_RE = re.compile(r"\b(\d+(?:\.\d+)?[BM](?:-A\d+(?:\.\d+)?B)?)\b")
#: The capabilities a catalog entry may claim.
STRENGTHS = frozenset({"chat", "code", "reasoning", "multilingual", "tools"})


@dataclass(frozen=True)
class Architecture:
    """The shapes that decide a model's size, KV cache and speed (config.json names in comments)."""

    architecture: str  # llama.cpp's name: llama, qwen2, qwen3, qwen3moe, gemma2, gemma3, phi3
    n_layer: int  # num_hidden_layers
    n_embd: int  # hidden_size
    n_head: int  # num_attention_heads
    n_head_kv: int  # num_key_value_heads (GQA: this, not n_head, sizes the KV cache)
    head_dim_k: int  # head_dim; may differ from n_embd / n_head (Qwen3-32B, Nemo, Gemma)
    head_dim_v: int
    n_ff: int  # intermediate_size (dense FFN; unused by MoE layers)
    n_vocab: int  # vocab_size
    tied_embeddings: bool  # tie_word_embeddings: the output reuses token_embd
    sliding_window: int | None = None
    #: Every `pattern`-th layer is global, the others slide: 2 for Gemma 2, 6 for Gemma 3.
    sliding_window_pattern: int | None = None
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0  # moe_intermediate_size: one expert's FFN width
    n_expert_shared: int = 0  # shared experts, each n_ff_exp wide
    #: Llama 3.1+ ships its RoPE scaling factors as a small rope_freqs tensor.
    rope_freqs: bool = False
    #: Weights counted from a real tensor table (models whose entry carries a header); 0: use the formula.
    n_params: int = 0
    n_active_params: int = 0

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0

    def attention_parameters(self) -> int:
        """Q, K, V and output projections of one block."""
        q = self.n_embd * self.n_head * self.head_dim_k
        k = self.n_embd * self.n_head_kv * self.head_dim_k
        v = self.n_embd * self.n_head_kv * self.head_dim_v
        o = self.n_head * self.head_dim_v * self.n_embd
        return q + k + v + o

    def ffn_parameters(self, *, active_only: bool = False) -> int:
        """Gated FFN (gate, up, down) of one block; for MoE all experts, or the used ones."""
        if not self.is_moe:
            return 3 * self.n_embd * self.n_ff
        experts = self.n_expert_used if active_only else self.n_expert
        router = self.n_embd * self.n_expert
        shared = 3 * self.n_embd * self.n_ff_exp * self.n_expert_shared
        return experts * 3 * self.n_embd * self.n_ff_exp + shared + router

    def embedding_parameters(self) -> int:
        """Token embedding plus the output matrix when it is not tied to it."""
        one = self.n_vocab * self.n_embd
        return one if self.tied_embeddings else 2 * one

    @classmethod
    def from_meta(cls, meta: ModelMeta) -> Architecture:
        """The summary shapes of a real header (hybrids, MLA, Gemma 4...): what the recommender reads
        for layer counts and bounds; the header itself prices the model."""
        heads_kv = max((meta.kv_heads(i) for i in range(meta.n_layer)), default=0)
        n_ff = meta.n_ff if isinstance(meta.n_ff, int) else max(meta.n_ff, default=0)
        total = meta.n_params
        active = total
        if meta.n_expert > 1:
            experts = sum(t.n_elements for t in meta.tensors if "_exps." in t.name)
            active = total - experts + experts * max(1, meta.n_expert_used) // meta.n_expert
        return cls(architecture=meta.architecture, n_layer=meta.n_layer, n_embd=meta.n_embd,
                   n_head=meta.n_head, n_head_kv=heads_kv, head_dim_k=meta.head_dim_k,
                   head_dim_v=meta.head_dim_v, n_ff=n_ff, n_vocab=meta.n_vocab,
                   tied_embeddings=meta.tied_embeddings, sliding_window=meta.sliding_window or None,
                   n_expert=meta.n_expert, n_expert_used=meta.n_expert_used, n_ff_exp=meta.n_ff_exp,
                   n_params=total, n_active_params=active)

    def parameter_count(self) -> int:
        """Weights in the matrices (norms and biases are under 0.1% and left out)."""
        if self.n_params:
            return self.n_params
        block = self.attention_parameters() + self.ffn_parameters()
        return self.embedding_parameters() + self.n_layer * block

    def sliding_layers(self) -> list[bool]:
        """Per layer, whether it uses the sliding window (all but every `pattern`-th layer)."""
        p = self.sliding_window_pattern or 0
        if not self.sliding_window or p < 2:
            return [False] * self.n_layer
        return [i % p < p - 1 for i in range(self.n_layer)]

    def active_parameter_count(self) -> int:
        """Weights a token passes through: all of a dense model, the used experts of a MoE."""
        if self.n_active_params:
            return self.n_active_params
        block = self.attention_parameters() + self.ffn_parameters(active_only=True)
        return self.embedding_parameters() + self.n_layer * block


@dataclass(frozen=True)
class CatalogFile:
    """One quant of a catalog model: its file name and size, predicted or from the Hub."""

    quant: str
    filename: str
    size_bytes: int
    #: True while the size is the fit engine's prediction; False once a Hub listing gave it.
    predicted: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"quant": self.quant, "filename": self.filename, "size_bytes": self.size_bytes,
                "predicted": self.predicted}


@dataclass(frozen=True)
class CatalogModel:
    """One curated model."""

    id: str
    name: str
    family: str
    model: str  # the original model's Hub id
    repo: str  # the GGUF repo
    file_pattern: str  # e.g. "Qwen2.5-7B-Instruct-{quant}.gguf"
    license: str
    gated: bool
    params_b: float
    context: int
    released: str  # ISO date
    strengths: tuple[str, ...]
    arch: Architecture
    quant_names: Mapping[str, str] = field(default_factory=dict)
    active_params_b: float | None = None
    note: str | None = None
    #: Sizes from a Hub listing, by quant; see `with_hub_sizes`.
    hub_files: Mapping[str, CatalogFile] = field(default_factory=dict)
    #: A GGUF header (`ModelMeta.to_record`) for architectures the constants cannot describe (hybrid,
    #: recurrent, MLA, per-layer shapes): a real file's header from the Hub refresh, or for the shipped
    #: snapshot the tensor table llama.cpp builds from the model's metadata. Priced from it, not `arch`.
    header: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    #: Where the entry came from: "snapshot" (shipped) or "hub" (a refresh), and when it was fetched.
    source: str = "snapshot"
    fetched: str | None = None
    #: The catalog id of the newer model that replaces this one at the same size, if any.
    superseded_by: str | None = None
    #: The vision projector the GGUF repo ships beside the model: {"file": name, "size_bytes": int | None}.
    mmproj: Mapping[str, Any] | None = field(default=None, compare=False)

    def filename(self, quant: str) -> str:
        """The file name the GGUF repo uses for `quant` (single-file form)."""
        return self.file_pattern.format(quant=self.quant_names.get(quant, quant))

    @property
    def is_moe(self) -> bool:
        return self.arch.is_moe

    @property
    def size_label(self) -> str:
        """The size people call it by: "32B", "30B-A3B", "135M" (from the name, else the count)."""
        found = _SIZE_RE.search(self.name)
        if found:
            return found.group(1)
        p = self.params_b
        return f"{p:.1f}".rstrip("0").rstrip(".") + "B" if p >= 1 else f"{p * 1000:.0f}M"

    @property
    def active_b(self) -> float:
        """Billions of parameters used per token (all of them unless mixture-of-experts)."""
        return self.active_params_b or self.params_b

    @cached_property
    def files(self) -> tuple[CatalogFile, ...]:
        """Every catalog quant, smallest first: the Hub's size where known, else predicted."""
        return tuple(sorted((self.file(q) for q in CATALOG_QUANTS), key=lambda f: f.size_bytes))

    def arch_constants(self) -> ArchConstants:
        """The fit engine's view of this model's shapes."""
        return _arch_constants(self.arch, self.context)

    def meta(self, quant: str) -> ModelMeta:
        """A GGUF header for `quant`: the tensor table llama.cpp would write (from the stored header
        when the entry has one, else synthesised from the constants)."""
        if self.header is not None:
            return _header_meta(self, quant)
        return _synthetic_meta(self.arch, self.context, quant)

    def file(self, quant: str) -> CatalogFile:
        """One quant's file, predicting only that one (the Hub's size when known)."""
        if quant in self.hub_files:
            return self.hub_files[quant]
        if quant in CATALOG_QUANTS:
            return CatalogFile(quant, self.filename(quant), predicted_size(self, quant))
        raise CatalogError(f"{self.name} has no {quant} file in the catalog.",
                           f"Use one of: {', '.join(CATALOG_QUANTS)}.")

    def to_dict(self) -> dict[str, Any]:
        """The `camelid catalog --json` entry."""
        return {
            "id": self.id, "name": self.name, "model": self.model, "repo": self.repo,
            "params_b": self.params_b, "active_params_b": self.active_params_b,
            "license": self.license, "gated": self.gated, "context": self.context,
            "released": self.released, "strengths": list(self.strengths),
            "architecture": self.arch.architecture, "source": self.source, "fetched": self.fetched,
            "superseded_by": self.superseded_by,
            "files": [{"quant": f.quant, "size_bytes": f.size_bytes, "predicted": f.predicted,
                       "filename": f.filename} for f in self.files],
        }


@dataclass(frozen=True)
class Catalog:
    models: tuple[CatalogModel, ...]

    def __iter__(self) -> Iterator[CatalogModel]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def get(self, key: str) -> CatalogModel:
        """A model by catalog id, original Hub id or GGUF repo (case-insensitive)."""
        wanted = key.strip().lower()
        for m in self.models:
            if wanted in (m.id.lower(), m.model.lower(), m.repo.lower()):
                return m
        raise CatalogError(f"There is no model {key!r} in the catalog.",
                           "See the list with `camelid catalog`.")

    def to_dict(self) -> dict[str, Any]:
        return {"models": [m.to_dict() for m in self.models]}


def load_catalog(path: Path | None = None, *, include_user: bool = True) -> Catalog:
    """resources/catalog.json (or `path`), validated; the default file is read once.

    With no `path`, the models a catalog refresh stored in the data dir
    (`paths.user_catalog_path()`) follow the shipped ones; a user entry never
    replaces a shipped id or model. A damaged user catalog is left out (see
    `user_catalog_info`), so it never stops the recommender.
    """
    if path is None:
        shipped = _default_catalog()
        if not include_user:
            return shipped
        user = _user_catalog()
        return shipped if user is None else _merged(shipped, user)
    return _parse(_read(Path(path)), source=str(path))


@dataclass(frozen=True)
class UserCatalog:
    """The refreshed part of the catalog: what the Hub added, and when it was last checked."""

    path: Path
    models: tuple[CatalogModel, ...] = ()
    #: When the last successful refresh finished (ISO date-time, UTC), None if never.
    refreshed: str | None = None
    #: Sentences about entries (or the whole file) that could not be read and were left out.
    problems: tuple[str, ...] = ()


def snapshot_date() -> str:
    """The date the shipped catalog was assembled: its "snapshot" field, else its newest release."""
    raw = _shipped_raw()
    stamp = raw.get("snapshot") if isinstance(raw, dict) else None
    if isinstance(stamp, str) and stamp:
        return stamp[:10]
    return max((m.released for m in _default_catalog()), default="1970-01-01")[:10]


def user_catalog_info() -> UserCatalog:
    """The user catalog as it is on disk now (empty when no refresh has run)."""
    return _user_catalog() or UserCatalog(path=paths.user_catalog_path())


def last_refreshed() -> str | None:
    """When the catalog was last refreshed from the Hub (ISO date-time), or None."""
    return user_catalog_info().refreshed


@cache
def _shipped_raw() -> Any:
    return _read(paths.resources_dir() / "catalog.json")


#: (path, inode, mtime_ns, size) -> the parsed user catalog; re-read when the file changes.
_USER_CACHE: dict[tuple[str, int, int, int], UserCatalog] = {}
_MERGED_CACHE: dict[tuple[int, int], Catalog] = {}


def _user_catalog() -> UserCatalog | None:
    path = paths.user_catalog_path()
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    found = _USER_CACHE.get(key)
    if found is None:
        _USER_CACHE.clear()
        found = _USER_CACHE[key] = _parse_user(path)
    return found


def _parse_user(path: Path) -> UserCatalog:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return UserCatalog(path=path, problems=(f"The refreshed catalog {path} could not be read ({exc}); "
                                                "refresh the catalog to rebuild it.",))
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        return UserCatalog(path=path, problems=(f"The refreshed catalog {path} has no list of models; "
                                                "refresh the catalog to rebuild it.",))
    models, problems = [], []
    seen: set[str] = set()
    for entry in data["models"]:
        try:
            (model,) = _parse({"models": [entry]}, source=str(path)).models
        except CatalogError as exc:
            problems.append(exc.message)
            continue
        if model.id in seen:
            continue
        seen.add(model.id)
        models.append(model)
    refreshed = data.get("refreshed")
    return UserCatalog(path=path, models=tuple(models), problems=tuple(problems),
                       refreshed=refreshed if isinstance(refreshed, str) else None)


def _merged(shipped: Catalog, user: UserCatalog) -> Catalog:
    key = (id(shipped), id(user))
    merged = _MERGED_CACHE.get(key)
    if merged is None:
        taken = {m.id.lower() for m in shipped} | {m.model.lower() for m in shipped}
        extra = tuple(m for m in user.models if m.id.lower() not in taken and m.model.lower() not in taken)
        _MERGED_CACHE.clear()
        merged = _MERGED_CACHE[key] = Catalog(models=shipped.models + extra)
    return merged


@cache
def _default_catalog() -> Catalog:
    path = paths.resources_dir() / "catalog.json"
    return _parse(_read(path), source=str(path))


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"The model catalog {path} could not be read ({exc}).",
                           "Reinstall Camelid, or fix the file if you edited it.") from exc


def _parse(data: Any, *, source: str) -> Catalog:
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise CatalogError(f"The model catalog {source} has no list of models.",
                           "Reinstall Camelid, or fix the file if you edited it.")
    models = []
    seen: set[str] = set()
    headers: dict[str, Any] = data["headers"] if isinstance(data.get("headers"), dict) else {}
    for entry in data["models"]:
        try:
            header = entry.get("header")
            if isinstance(header, str):  # a key into the catalog's header table
                header = headers.get(header) or _shipped_headers()[header]
            if header is not None:
                from app.core.fit import ModelMeta

                header_meta = ModelMeta.from_record(header, where=source)
                arch = Architecture.from_meta(header_meta)
            else:
                header_meta, arch = None, Architecture(**entry["arch"])
            model = CatalogModel(
                id=entry["id"], name=entry["name"], family=entry["family"], model=entry["model"],
                repo=entry["repo"], file_pattern=entry["file_pattern"], license=entry["license"],
                gated=bool(entry["gated"]), params_b=float(entry["params_b"]),
                context=int(entry["context"]), released=entry["released"],
                strengths=tuple(entry["strengths"]), arch=arch,
                quant_names=dict(entry.get("quant_names") or {}),
                active_params_b=entry.get("active_params_b"), note=entry.get("note"),
                header=header, source=str(entry.get("source") or "snapshot"), fetched=entry.get("fetched"),
                superseded_by=entry.get("superseded_by"), mmproj=_mmproj(entry.get("mmproj")),
            )
        except CamelidError as exc:
            raise CatalogError(f"The catalog entry {entry.get('id', '?')!r} in {source} cannot be read: "
                               f"{exc}", "Reinstall Camelid, or refresh the catalog.") from exc
        except (KeyError, TypeError, ValueError) as exc:
            name = entry.get("id", "?") if isinstance(entry, dict) else "?"
            raise CatalogError(f"The catalog entry {name!r} in {source} is malformed ({exc}).",
                               "Reinstall Camelid, or fix the file if you edited it.") from exc
        if header_meta is not None:  # priced from this header later: read it once
            _HEADER_METAS[(model.id, id(header), "")] = header_meta
        unknown = set(model.strengths) - STRENGTHS
        if unknown or model.id in seen or "{quant}" not in model.file_pattern:
            raise CatalogError(f"The catalog entry {model.id!r} in {source} is inconsistent "
                               f"(duplicate id, unknown strengths {sorted(unknown)} or no {{quant}} "
                               "in its file pattern).",
                               "Reinstall Camelid, or fix the file if you edited it.")
        seen.add(model.id)
        models.append(model)
    return Catalog(models=tuple(models))


def _mmproj(value: Any) -> dict[str, Any] | None:
    """An entry's optional vision projector: a file name and its size in bytes (None when unknown)."""
    if value is None:
        return None
    size = value.get("size_bytes")
    return {"file": str(value["file"]), "size_bytes": None if size is None else int(size)}


@cache
def _shipped_headers() -> dict[str, Any]:
    """resources/catalog_headers.json.gz: the tensor tables of the snapshot's newer architectures
    (written by scripts/catalog_headers.py from each model's metadata with llama.cpp itself)."""
    import gzip

    path = paths.resources_dir() / "catalog_headers.json.gz"
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.loads(f.read(64 << 20))
    except FileNotFoundError:
        return {}
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"The catalog's model headers {path} could not be read ({exc}).",
                           "Reinstall Camelid.") from exc
    return data if isinstance(data, dict) else {}


#: Header-priced metas per (model id, header identity, quant).
_HEADER_METAS: dict[tuple[str, int, str], ModelMeta] = {}


def _header_meta(model: CatalogModel, quant: str) -> ModelMeta:
    from app.core.fit import ModelMeta

    assert model.header is not None
    key = (model.id, id(model.header), quant)
    meta = _HEADER_METAS.get(key)
    if meta is None:
        base_key = (model.id, id(model.header), "")
        base = _HEADER_METAS.get(base_key)
        if base is None:
            base = _HEADER_METAS[base_key] = ModelMeta.from_record(model.header, where=model.name)
        meta = base if base.quant == quant else base.with_file_type(quant)
        if not meta.header_bytes:
            meta.file_size = int(meta.file_size or 0) + _header_estimate(model.arch)
        _HEADER_METAS[key] = meta
    return meta


# -- predicted files (the fit engine's file-type rules) -----------------------------


@lru_cache(maxsize=64)
def _arch_constants(arch: Architecture, context: int) -> ArchConstants:
    from app.core.fit import ArchConstants

    return ArchConstants(
        architecture=arch.architecture, n_layer=arch.n_layer, n_embd=arch.n_embd,
        n_head=arch.n_head, n_head_kv=arch.n_head_kv, n_ff=arch.n_ff, n_vocab=arch.n_vocab,
        head_dim_k=arch.head_dim_k, head_dim_v=arch.head_dim_v,
        tied_embeddings=arch.tied_embeddings, n_ctx_train=context,
        n_expert=arch.n_expert, n_expert_used=arch.n_expert_used,
        n_ff_exp=arch.n_ff_exp or None, n_expert_shared=arch.n_expert_shared,
        sliding_window=arch.sliding_window or 0, swa_pattern=arch.sliding_layers(),
        rope_freqs=arch.rope_freqs,
    )


#: Synthetic headers and predicted sizes, per (architecture, context, quant). The
#: catalog is small (models x quants), so these never need evicting; predicting
#: a file runs llama.cpp's type rules over every tensor, which is worth doing once.
_METAS: dict[tuple[Architecture, int, str], ModelMeta] = {}
_SIZES: dict[tuple[Architecture, int, str], int] = {}


def _synthetic_meta(arch: Architecture, context: int, quant: str) -> ModelMeta:
    key = (arch, context, quant)
    meta = _METAS.get(key)
    if meta is None:
        # Re-typing one F16 table (`with_file_type`) gives the same tensors as
        # `from_architecture` at half the cost: the type rules run once, not twice.
        # Unnamed: models of the same shape (Qwen2.5-7B and its Coder) share these.
        base = _METAS.get((arch, context, "F16"))
        if base is None:
            from app.core.fit import ModelMeta

            base = ModelMeta.from_architecture(_arch_constants(arch, context), "F16")
            _METAS[(arch, context, "F16")] = base
            _SIZES[(arch, context, "F16")] = int(base.file_size or 0)
        if quant == "F16":
            return base
        meta = base.with_file_type(quant)
        # with_file_type counts tensor data only (a synthetic table has no header): add
        # the same tokenizer estimate quants.predict_file_size adds.
        meta.file_size = int(meta.file_size or 0) + _header_estimate(arch)
        _METAS[key] = meta
        _SIZES[key] = meta.file_size
    return meta


def _header_estimate(arch: Architecture) -> int:
    from app.core.fit import quants

    kind = quants.tokenizer_kind(arch.architecture, arch.n_vocab)
    return quants.HEADER_BYTES_PER_TOKEN[kind] * arch.n_vocab


def predicted_size(model: CatalogModel, quant: str) -> int:
    """Bytes of `model`'s `quant` file as llama-quantize would write it (header included)."""
    if model.header is not None:
        return int(model.meta(quant).file_size or 0)
    key = (model.arch, model.context, quant)
    size = _SIZES.get(key)
    if size is None:
        from app.core.fit import predict_file_size

        size = _SIZES[key] = int(predict_file_size(_arch_constants(model.arch, model.context), quant))
    return size


# -- the Hub's real sizes ---------------------------------------------------------


def with_hub_sizes(model: CatalogModel, listing: Iterable[Any]) -> CatalogModel:
    """`model` with the sizes a Hub listing gives replacing the predictions.

    `listing` is what `app.core.models.hub` returns for the GGUF repo: `QuantFile`s
    (a quant with its files, shards summed) or plain `RemoteFile`s (path and
    size), which are grouped into quants here. Quants the listing lacks keep
    their predicted size; an F16 slot takes a BF16 file (same size) when the
    repo has no F16.
    """
    from app.core.models.hub import QuantFile, RemoteFile, group_gguf_files

    items = list(listing)
    remote = [i for i in items if isinstance(i, RemoteFile)]
    quants: list[QuantFile] = [i for i in items if isinstance(i, QuantFile)]
    if remote:
        quants += group_gguf_files(model.repo, remote)
    found: dict[str, CatalogFile] = {}
    from_bf16: set[str] = set()
    for q in quants:
        if q.mmproj or not q.complete or q.quant not in (*CATALOG_QUANTS, "BF16"):
            continue
        slot = "F16" if q.quant == "BF16" else q.quant
        # A real F16 replaces a BF16 in the F16 slot, never the other way round.
        if slot in found and not (slot in from_bf16 and q.quant != "BF16"):
            if q.quant == "BF16" and slot not in from_bf16:
                continue
            if _is_plain(model, slot, found[slot].filename):
                continue  # several files parse as one quant: keep the publisher's usual name
        found[slot] = CatalogFile(slot, q.first_file, q.total_bytes, predicted=False)
        from_bf16.discard(slot)
        if q.quant == "BF16":
            from_bf16.add(slot)
    return replace(model, hub_files={**model.hub_files, **found})


def _is_plain(model: CatalogModel, quant: str, filename: str) -> bool:
    return Path(filename).name.lower() == model.filename(quant).lower()
