"""The models on disk: Camelid's models folder, plus GGUFs found in the Hugging Face
cache, LM Studio's folder, Ollama's store and any folder the user added (all read-only:
shown with where they are, used in place, never copied and never deleted).

Ollama keeps each model as a content-addressed blob (``blobs/sha256-<hex>``, a plain
GGUF without the extension) named by a manifest (``manifests/<registry>/<namespace>/
<model>/<tag>``, JSON whose ``application/vnd.ollama.image.model`` layer is the GGUF).

Each model carries a summary of its GGUF header and its fit verdict on this
machine. Reading headers is the slow part, so summaries are cached in
``paths.cache_dir()/library.json`` keyed by path, size and mtime; a listing
then costs one ``stat`` per file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from app import paths
from app.core.errors import CamelidError, ModelFileError
from app.core.fit import LoadChoices, ModelMeta, header_limits, plan_with_choices, read_gguf
from app.core.machine import HardwareProfile
from app.core.models.hub import parse_quant

SOURCES = ("camelid", "lmstudio", "hf-cache", "ollama", "folder")
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})$")
_CACHE_VERSION = 1
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class LibraryModel:
    """One model on disk: a GGUF file, or all shards of a split GGUF."""

    name: str  # the file name without .gguf and shard suffix; what `camelid chat NAME` takes
    path: Path  # the file to open (first shard)
    files: tuple[Path, ...]
    size_bytes: int
    source: str  # camelid | lmstudio | hf-cache | ollama | folder
    repo_id: str | None = None
    quant: str | None = None
    shard_count: int = 1
    #: Header summary (architecture, parameters, context length...), None if unreadable.
    meta: dict[str, Any] | None = None
    verdict: str | None = None  # full_gpu | partial | cpu | no_fit
    problem: str | None = None  # why the header could not be read, or shards are missing

    @property
    def deletable(self) -> bool:
        """Only Camelid's own folder is Camelid's to delete."""
        return self.source == "camelid"

    @property
    def complete(self) -> bool:
        return len(self.files) == self.shard_count

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": str(self.path), "files": [str(f) for f in self.files],
            "size_bytes": self.size_bytes, "source": self.source, "repo_id": self.repo_id,
            "quant": self.quant, "shards": self.shard_count, "complete": self.complete,
            "deletable": self.deletable, "meta": self.meta, "verdict": self.verdict, "problem": self.problem,
        }


#: Reads a header summary and verdict for one model file: (summary, verdict).
Describe = Callable[[Path], "tuple[dict[str, Any] | None, str | None]"]


# -- where models are --------------------------------------------------------------------


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def lmstudio_dirs() -> list[Path]:
    """LM Studio's models folders (current and older layouts)."""
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def ollama_dirs() -> list[Path]:
    """Ollama's model stores: OLLAMA_MODELS if set, else the user's and the Linux service's."""
    if os.environ.get("OLLAMA_MODELS"):
        return [Path(os.environ["OLLAMA_MODELS"]).expanduser()]
    return [Path.home() / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


def extra_folders(value: str | None = None) -> list[Path]:
    """The folders the user added (setting ``model_folders``: paths separated by os.pathsep)."""
    if value is None:
        from app.core.settings import Settings

        value = str(Settings()["model_folders"] or "")
    found: list[Path] = []
    for part in value.split(os.pathsep):
        part = part.strip()
        if part and Path(part).expanduser() not in found:
            found.append(Path(part).expanduser())
    return found


def _group(files: Iterable[Path]) -> dict[tuple[Path, str], list[tuple[int, int, Path]]]:
    groups: dict[tuple[Path, str], list[tuple[int, int, Path]]] = {}
    for f in files:
        stem = f.name[: -len(".gguf")]
        shard = _SHARD_RE.search(stem)
        base = _SHARD_RE.sub("", stem)
        index, count = (int(shard.group(1)), int(shard.group(2))) if shard else (1, 1)
        groups.setdefault((f.parent, base), []).append((index, count, f))
    return groups


def _same_repo(repo_id: str) -> Callable[[Path], str | None]:
    """repo_of for files that all come from one repo."""
    return lambda _file: repo_id


def _models_from(files: Iterable[Path], source: str, repo_of: Callable[[Path], str | None]) -> list[LibraryModel]:
    models = []
    for (_, base), members in _group(files).items():
        if "mmproj" in base.lower():
            continue  # vision projectors are attachments, not models
        members.sort()
        shard_files = tuple(m[2] for m in members)
        first = shard_files[0]
        models.append(LibraryModel(
            name=base, path=first, files=shard_files,
            size_bytes=sum(_size(f) for f in shard_files), source=source,
            repo_id=repo_of(first), quant=parse_quant(first.name), shard_count=max(m[1] for m in members),
        ))
    return models


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _scan_camelid() -> list[LibraryModel]:
    root = paths.models_dir()
    if not root.is_dir():
        return []
    downloads = paths.downloads_dir()
    files = [f for f in root.rglob("*.gguf")
             if f.is_file() and downloads not in f.parents and not f.name.startswith(".")]

    def repo_of(f: Path) -> str | None:
        # models/<owner>/<name>/[@<revision>/][<repo folders>/]<file> (downloads.local_layouts)
        rel = f.relative_to(root).parts
        return f"{rel[0]}/{rel[1]}" if len(rel) >= 3 else None

    def quant_of(model: LibraryModel) -> LibraryModel:
        # A per-quant folder (Q8_0/model.gguf) names the quant when the file name does not.
        rel = model.path.relative_to(root).parts
        if model.quant or len(rel) <= 3:
            return model
        inside = "/".join(part for part in rel[2:] if not part.startswith("@"))
        return replace(model, quant=parse_quant(inside))

    return [quant_of(m) for m in _models_from(files, "camelid", repo_of)]


def _scan_lmstudio() -> list[LibraryModel]:
    models = []
    for root in lmstudio_dirs():
        if not root.is_dir():
            continue
        files = [f for f in root.rglob("*.gguf") if f.is_file()]

        def repo_of(f: Path, root: Path = root) -> str | None:
            rel = f.relative_to(root).parts
            return f"{rel[0]}/{rel[1]}" if len(rel) >= 3 else None

        models.extend(_models_from(files, "lmstudio", repo_of))
    return models


#: The manifest layer that holds the GGUF (projectors, templates and licences are other layers).
_OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
#: Larger than any real manifest (a few hundred bytes); a bigger file is not read.
_MAX_MANIFEST = 1 << 20
_DIGEST_RE = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


def _ollama_name(parts: tuple[str, ...]) -> tuple[str, str | None]:
    """(name as `ollama run` takes it, repo id for Hub models) from registry/namespace/model/tag."""
    registry, *middle, model, tag = parts
    if registry == "hf.co" or registry == "huggingface.co":
        repo = "/".join([*middle, model])
        return f"hf.co/{repo}:{tag}", repo
    if registry == "registry.ollama.ai" and middle == ["library"]:
        return f"{model}:{tag}", None
    return f"{'/'.join([registry, *middle, model])}:{tag}", None


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        if path.stat().st_size > _MAX_MANIFEST:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _ollama_quant(store: Path, manifest: dict[str, Any], tag: str) -> str | None:
    config = manifest.get("config")
    digest = _DIGEST_RE.match(str(config.get("digest", ""))) if isinstance(config, dict) else None
    if digest:
        data = _read_manifest(store / "blobs" / f"sha256-{digest.group(1)}")
        if data and isinstance(data.get("file_type"), str):
            return parse_quant(data["file_type"]) or data["file_type"][:32]
    return parse_quant(tag)


def _scan_ollama() -> list[LibraryModel]:
    models: list[LibraryModel] = []
    seen: set[Path] = set()
    for store in ollama_dirs():
        manifests = store / "manifests"
        try:
            if not manifests.is_dir():
                continue
            found = sorted(p for p in manifests.rglob("*") if p.is_file())
        except OSError:  # the service's store may not be readable by this user
            continue
        for manifest_path in found:
            parts = manifest_path.relative_to(manifests).parts
            if len(parts) < 3 or any(part.startswith(".") for part in parts):
                continue
            manifest = _read_manifest(manifest_path)
            layers = manifest.get("layers") if manifest else None
            if not isinstance(layers, list):
                continue
            layer = next((x for x in layers if isinstance(x, dict) and x.get("mediaType") == _OLLAMA_MODEL_LAYER),
                         None)
            digest = _DIGEST_RE.match(str(layer.get("digest", ""))) if layer else None
            if digest is None or manifest is None:
                continue
            blob = store / "blobs" / f"sha256-{digest.group(1)}"
            if blob in seen or not blob.is_file():
                continue  # several tags (latest, 3b) name the same blob: listed once
            seen.add(blob)
            name, repo = _ollama_name(parts)
            models.append(LibraryModel(name=name, path=blob, files=(blob,), size_bytes=_size(blob),
                                       source="ollama", repo_id=repo,
                                       quant=_ollama_quant(store, manifest, parts[-1])))
    return models


def _scan_folders(folders: Iterable[Path] | None = None) -> list[LibraryModel]:
    models: list[LibraryModel] = []
    own = paths.models_dir()
    for root in (extra_folders() if folders is None else folders):
        try:
            if not root.is_dir() or root == own or own in root.parents:
                continue  # Camelid's own folder is listed (and deletable) as camelid
            files = [f for f in root.rglob("*.gguf") if f.is_file() and not f.name.startswith(".")]
        except OSError:
            continue
        models.extend(_models_from(files, "folder", lambda _f: None))
    return models


def _scan_hf_cache() -> list[LibraryModel]:
    cache = hf_cache_dir()
    if not cache.is_dir():
        return []
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(cache)
    except Exception:  # a damaged cache must not break the library listing
        return []
    models = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        seen: dict[str, Path] = {}
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            for cached in revision.files:
                if cached.file_name.endswith(".gguf") and cached.file_path.is_file():
                    seen.setdefault(str(cached.file_path.relative_to(revision.snapshot_path)), cached.file_path)
        models.extend(_models_from(seen.values(), "hf-cache", _same_repo(repo.repo_id)))
    return models


# -- the metadata cache ------------------------------------------------------------------


def _cache_path() -> Path:
    return paths.cache_dir() / "library.json"


def _load_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("entries", {}) if data.get("version") == _CACHE_VERSION else {}


def _save_cache(entries: dict[str, Any]) -> None:
    # A disposable speed-up: on read-only storage (or a full disk) the listing is
    # simply described again next time, never refused.
    target = _cache_path()
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": _CACHE_VERSION, "entries": entries}), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def hardware_key(hardware: HardwareProfile | None, choices: LoadChoices | None = None) -> str:
    """What a verdict depends on: the memory this machine offers (not its free bytes of the moment)
    and the load settings the plan is made with."""
    if hardware is None:
        return "none"
    gpus = [(g.name, g.vram_total_bytes) for g in hardware.gpus]
    return json.dumps([hardware.ram.total_bytes, gpus, hardware.unified_memory,
                       asdict(choices or LoadChoices())], sort_keys=True)


def engine_describe(hardware: HardwareProfile | None = None, choices: LoadChoices | None = None) -> Describe:
    """Header summary and verdict from the fit engine, planned with the load settings the engine uses."""

    def describe(path: Path) -> tuple[dict[str, Any] | None, str | None]:
        meta = read_gguf(path)
        summary = summarize_meta(meta)
        if hardware is None:
            return summary, None
        return summary, plan_with_choices(meta, hardware, choices, improvements=False).verdict

    return describe


#: The header facts a library listing shows (keys of ModelMeta.to_dict()).
SUMMARY_KEYS = ("architecture", "name", "size_label", "n_params", "n_ctx_train", "file_type", "quant",
                "n_layers", "n_embd", "n_head", "n_vocab", "sliding_window", "n_expert", "tensor_bytes",
                "approximate")


def summarize_meta(meta: ModelMeta) -> dict[str, Any]:
    """The few header facts a library listing shows, as plain JSON."""
    data = meta.to_dict()
    summary = {k: data[k] for k in SUMMARY_KEYS}
    summary["chat_template"] = bool(data.get("chat_template"))  # only whether there is one; templates are long
    summary["shards"] = len(data.get("shards") or []) or 1
    return summary


def _describe_all(models: list[LibraryModel], describe: Describe, hw_key: str) -> list[LibraryModel]:
    with _cache_lock:
        cache = _load_cache()
        fresh: dict[str, Any] = {}
        changed = False
        out = []
        for model in models:
            try:
                key = _key(model.path)
            except OSError:
                out.append(model)
                continue
            entry = cache.get(key) or {}
            if "meta" not in entry or hw_key not in entry.get("verdicts", {}):
                try:
                    summary, verdict = describe(model.path)
                    entry = {"meta": summary, "problem": None,
                             "verdicts": {**entry.get("verdicts", {}), hw_key: verdict}}
                except CamelidError as exc:
                    entry = {"meta": None, "problem": _clip(str(exc)), "verdicts": {hw_key: None}}
                except Exception as exc:  # one bad file must not hide the others
                    # Not a typed error: a Camelid bug or a transient one (MemoryError), so it is shown
                    # and not cached, and the next listing tries the file again.
                    problem = f"Unreadable GGUF header ({type(exc).__name__}: {_clip(str(exc), 200)})"
                    out.append(LibraryModel(**{**_fields(model), "problem": problem}))
                    continue
                changed = True
            fresh[key] = entry
            out.append(LibraryModel(**{**_fields(model), "meta": entry["meta"],
                                       "verdict": entry["verdicts"].get(hw_key),
                                       "problem": entry.get("problem") or model.problem}))
        # Entries of files that are gone are dropped; other processes' entries for live files kept.
        if changed or set(fresh) != set(cache):
            _save_cache({**{k: v for k, v in cache.items() if _still_there(k)}, **fresh})
    return out


def _clip(text: str, limit: int = 400) -> str:
    """A problem sentence short enough for a listing (a damaged header can make a long one)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _still_there(key: str) -> bool:
    path = key.split("|", 1)[0]
    try:
        return _key(Path(path)) == key
    except OSError:
        return False


def _fields(model: LibraryModel) -> dict[str, Any]:
    return {name: getattr(model, name) for name in model.__dataclass_fields__}


# -- the public calls --------------------------------------------------------------------


def scan_models(sources: Iterable[str] = SOURCES, *, folders: Iterable[Path] | None = None) -> list[LibraryModel]:
    """Every model on disk without reading headers (instant), Camelid's own first.

    ``folders``: the extra folders to list as source ``folder`` (default: the ``model_folders`` setting).
    """
    wanted = set(sources)
    models: list[LibraryModel] = []
    if "camelid" in wanted:
        models.extend(_scan_camelid())
    if "lmstudio" in wanted:
        models.extend(_scan_lmstudio())
    if "hf-cache" in wanted:
        models.extend(_scan_hf_cache())
    if "ollama" in wanted:
        models.extend(_scan_ollama())
    if "folder" in wanted:
        models.extend(_scan_folders(folders))
    for i, model in enumerate(models):
        if model.shard_count > header_limits.MAX_SHARDS:
            models[i] = LibraryModel(**{**_fields(model), "problem":
                                        f"its name says it is split into {model.shard_count:,} files; no real "
                                        f"model has more than {header_limits.MAX_SHARDS}"})
        elif not model.complete:
            models[i] = LibraryModel(**{**_fields(model), "problem":
                                        f"{len(model.files)} of {model.shard_count} shards present"})
    models.sort(key=lambda m: (SOURCES.index(m.source), m.name.lower()))
    return models


def list_models(*, describe: Describe | None = None, hardware: HardwareProfile | None = None,
                choices: LoadChoices | None = None, sources: Iterable[str] = SOURCES,
                folders: Iterable[Path] | None = None) -> list[LibraryModel]:
    """Every model on disk, each with its header summary and its fit verdict on ``hardware``.

    Verdicts are planned with ``choices`` (default: the saved settings), as the
    engine will load the model. ``describe`` reads one header (default: the
    fit engine); results are cached by path, size and mtime (and, for
    verdicts, by the machine's memory and the choices).
    """
    if choices is None and hardware is not None:
        choices = LoadChoices.current()
    return _describe_all(scan_models(sources, folders=folders),
                         describe if describe is not None else engine_describe(hardware, choices),
                         hardware_key(hardware, choices))


def find_model(name: str, *, models: list[LibraryModel] | None = None) -> Path:
    """The file to open for a library name, ``repo:quant``, ``owner/repo/file.gguf`` or a path.

    Exact names win over unique partial matches; Camelid's own copy wins over
    LM Studio's and the HF cache's.
    """
    return find_library_model(name, models=models).path


def find_library_model(name: str, *, models: list[LibraryModel] | None = None) -> LibraryModel:
    """Like :func:`find_model`, returning the whole library entry."""
    candidate = Path(name).expanduser()
    if candidate.suffix == ".gguf" and candidate.is_file():
        return LibraryModel(name=_SHARD_RE.sub("", candidate.stem), path=candidate, files=(candidate,),
                            size_bytes=_size(candidate), source="path")
    models = models if models is not None else scan_models()
    key = name.strip().lower().removesuffix(".gguf")
    repo, _, quant = key.partition(":")

    def usable(found: list[LibraryModel]) -> list[LibraryModel]:
        return [m for m in found if m.complete]

    tiers = [
        [m for m in models if m.name.lower() == key],
        [m for m in models if quant and (m.repo_id or "").lower() == repo and (m.quant or "").lower() == quant],
        [m for m in models if m.repo_id and f"{m.repo_id}/{m.path.name}".lower().removesuffix(".gguf") == key],
        [m for m in models if key in m.name.lower()],
    ]
    for tier in tiers:
        found = usable(tier)
        if not found:
            continue
        best = [m for m in found if m.source == found[0].source]
        if len(best) == 1 or len({m.name.lower() for m in best}) == 1:
            return best[0]
        raise ModelFileError(f"{name!r} matches several models: {', '.join(m.name for m in best[:6])}.",
                             "Use the full name shown by `camelid models`.")
    raise ModelFileError(f"No model called {name!r} in the library.",
                         "See `camelid models`, or fetch one with `camelid download`.")


def delete_model(name: str) -> LibraryModel:
    """Delete a model (every shard) from Camelid's models folder; other folders are read-only."""
    model = find_library_model(name)
    if not model.deletable:
        where = {"lmstudio": "LM Studio's folder", "hf-cache": "the Hugging Face cache",
                 "ollama": "Ollama's store", "folder": "a folder you added",
                 "path": "a folder outside the library"}.get(model.source, model.source)
        fix = ("Delete it from LM Studio." if model.source == "lmstudio"
               else "Remove it with `hf cache delete`." if model.source == "hf-cache"
               else f"Remove it with `ollama rm {model.name}`." if model.source == "ollama"
               else "Delete the file yourself if you no longer need it.")
        raise CamelidError(f"{model.name} lives in {where} ({model.path.parent}); Camelid only reads it there.", fix)
    for f in model.files:
        f.unlink(missing_ok=True)
    root = paths.models_dir()
    folder = model.path.parent
    while folder != root and root in folder.parents:
        with contextlib.suppress(OSError):
            folder.rmdir()
        folder = folder.parent
    return model
