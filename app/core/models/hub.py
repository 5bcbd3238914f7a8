"""The Hugging Face Hub as Camelid sees it: GGUF repos, their quant files, sizes and hashes.

Everything goes through huggingface_hub. The endpoint is read at call time
(``HF_ENDPOINT``, else huggingface_hub's default) because huggingface_hub
reads it only once, at import, and a mirror or test server set later must
still win. The token comes from the caller, else ``HF_TOKEN``, else the token
the user saved with ``hf auth login``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from app.core.errors import CamelidError, GatedRepoError, NotFoundError, RemoteError

#: Quant names as they appear in file names (bartowski, unsloth, Qwen, lmstudio-community, ggml-org).
_QUANT_RE = re.compile(
    r"(?:^|[-._/])((?:UD-)?(?:I?Q[1-8](?:_[A-Z0-9]{1,4})*|TQ[12]_0|BF16|FP16|F16|F32|MXFP4))(?=$|[-._])",
    re.IGNORECASE,
)
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})$")


def endpoint() -> str:
    """The Hub URL to talk to: ``HF_ENDPOINT`` now, else huggingface_hub's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def resolve_token(token: str | None = None) -> str | None:
    """The token to send: the one given, else HF_TOKEN, else the user's saved login."""
    if token:
        return token
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token()


def repo_page(repo_id: str) -> str:
    """The web page of a repo (where a gated model's license is accepted)."""
    return f"{endpoint()}/{repo_id}"


def _api(token: str | None) -> Any:
    from huggingface_hub import HfApi

    # token=False stops HfApi from looking for a token on its own: we already did.
    return HfApi(endpoint=endpoint(), token=resolve_token(token) or False)


# -- search -------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoSummary:
    """One search hit: a model repo that holds GGUF files."""

    repo_id: str
    downloads: int = 0
    likes: int = 0
    gated: bool | str = False
    private: bool = False
    last_modified: str | None = None
    pipeline_tag: str | None = None
    #: The Hub's GGUF summary when present: total (parameters), architecture, context_length.
    gguf: dict[str, Any] | None = None

    @property
    def parameters(self) -> int | None:
        total = (self.gguf or {}).get("total")
        return int(total) if isinstance(total, (int, float)) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id, "downloads": self.downloads, "likes": self.likes,
            "gated": self.gated, "private": self.private, "last_modified": self.last_modified,
            "pipeline_tag": self.pipeline_tag, "parameters": self.parameters,
            "architecture": (self.gguf or {}).get("architecture"),
            "context_length": (self.gguf or {}).get("context_length"),
        }


def search_models(query: str, *, limit: int = 20, sort: str = "downloads",
                  token: str | None = None) -> list[RepoSummary]:
    """GGUF repos whose name matches ``query``, most downloaded first."""
    api = _api(token)
    try:
        hits = api.list_models(
            search=query or None, filter="gguf", sort=sort, limit=limit,
            expand=["downloads", "likes", "gated", "private", "lastModified", "pipeline_tag", "gguf"],
        )
        results = []
        for info in hits:
            modified = getattr(info, "last_modified", None)
            results.append(RepoSummary(
                repo_id=info.id,
                downloads=info.downloads or 0,
                likes=info.likes or 0,
                gated=info.gated or False,
                private=bool(info.private),
                last_modified=modified.isoformat() if isinstance(modified, datetime) else modified,
                pipeline_tag=info.pipeline_tag,
                gguf=getattr(info, "gguf", None),
            ))
        return results
    except Exception as exc:
        raise translate_error(exc, repo_id=None) from exc


# -- files of a repo ------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One file in a repo, with its real size and its LFS sha256 (None for non-LFS files)."""

    path: str
    size: int
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class QuantFile:
    """One downloadable model in a repo: a GGUF file, or all shards of a split GGUF."""

    repo_id: str
    quant: str
    #: The file (or shards, in order); paths are relative to the repo root.
    files: tuple[RemoteFile, ...]
    revision: str = "main"
    mmproj: bool = False
    #: For split GGUFs: how many shards the names announce (complete when len(files) matches).
    shard_count: int = 1

    @property
    def name(self) -> str:
        """The model's file name without folder and shard suffix, e.g. ``Llama-3-8B-Q4_K_M``."""
        stem = PurePosixPath(self.files[0].path).name.removesuffix(".gguf")
        return _SHARD_RE.sub("", stem)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def first_file(self) -> str:
        """The file llama.cpp opens (the first shard of a split GGUF)."""
        return self.files[0].path

    @property
    def is_split(self) -> bool:
        return self.shard_count > 1

    @property
    def complete(self) -> bool:
        return len(self.files) == self.shard_count

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id, "quant": self.quant, "name": self.name, "revision": self.revision,
            "total_bytes": self.total_bytes, "mmproj": self.mmproj, "shards": self.shard_count,
            "complete": self.complete, "files": [f.to_dict() for f in self.files],
        }


@dataclass(frozen=True)
class RepoFiles:
    """The GGUF models of one repo at one commit."""

    repo_id: str
    sha: str
    gated: bool | str = False
    private: bool = False
    gguf: dict[str, Any] | None = None
    quants: list[QuantFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "sha": self.sha, "gated": self.gated, "private": self.private,
                "gguf": self.gguf, "quants": [q.to_dict() for q in self.quants]}


def parse_quant(filename: str) -> str | None:
    """The quant named in a GGUF file name (``Q4_K_M``, ``IQ3_XXS``, ``F16``...), upper-cased.

    The folder is used when the file name itself names none (per-quant folders).
    """
    path = PurePosixPath(filename)
    candidates = [_SHARD_RE.sub("", path.name.removesuffix(".gguf")), *reversed(path.parent.parts)]
    for text in candidates:
        matches = _QUANT_RE.findall(text)
        if matches:
            return matches[-1].upper()
    return None


def is_mmproj(filename: str) -> bool:
    """Vision projector files ride along in GGUF repos but are not models of their own."""
    return "mmproj" in PurePosixPath(filename).name.lower()


def group_gguf_files(repo_id: str, files: Iterable[RemoteFile], *, revision: str = "main",
                     include_mmproj: bool = False) -> list[QuantFile]:
    """Group a repo's GGUF files into models: shards summed into one entry, smallest first."""
    groups: dict[tuple[str, str], list[tuple[int, RemoteFile]]] = {}
    announced: dict[tuple[str, str], int] = {}
    for f in files:
        path = PurePosixPath(f.path)
        if path.suffix.lower() != ".gguf" or (is_mmproj(f.path) and not include_mmproj):
            continue
        stem = path.name[: -len(".gguf")]
        shard = _SHARD_RE.search(stem)
        base = _SHARD_RE.sub("", stem)
        key = (str(path.parent), base)
        index = int(shard.group(1)) if shard else 1
        groups.setdefault(key, []).append((index, f))
        announced[key] = max(announced.get(key, 1), int(shard.group(2)) if shard else 1)
    result = []
    for key, members in groups.items():
        members.sort(key=lambda m: m[0])
        first = members[0][1].path
        result.append(QuantFile(
            repo_id=repo_id,
            quant=parse_quant(first) or "unknown",
            files=tuple(f for _, f in members),
            revision=revision,
            mmproj=is_mmproj(first),
            shard_count=announced[key],
        ))
    result.sort(key=lambda q: (q.mmproj, q.total_bytes, q.name))
    return result


def repo_files(repo_id: str, *, revision: str = "main", include_mmproj: bool = False,
               token: str | None = None) -> RepoFiles:
    """The GGUF models in a repo, grouped by quant, with sizes and LFS hashes."""
    validate_repo_id(repo_id)
    api = _api(token)
    try:
        info = api.model_info(repo_id, revision=None if revision == "main" else revision,
                              files_metadata=True)
    except Exception as exc:
        raise translate_error(exc, repo_id=repo_id) from exc
    remote = [
        RemoteFile(path=s.rfilename, size=int(s.size or (s.lfs.size if s.lfs else 0) or 0),
                   sha256=s.lfs.sha256 if s.lfs else None)
        for s in (info.siblings or [])
    ]
    sha = info.sha or revision
    return RepoFiles(
        repo_id=repo_id, sha=sha, gated=info.gated or False, private=bool(info.private),
        gguf=getattr(info, "gguf", None),
        quants=group_gguf_files(repo_id, remote, revision=sha, include_mmproj=include_mmproj),
    )


def select_quant(files: RepoFiles, wanted: str | None = None) -> QuantFile:
    """Pick one model from a repo: by quant (``Q4_K_M``), by file path, or the only one there is."""
    models = [q for q in files.quants if not q.mmproj]
    if not models:
        raise NotFoundError(f"{files.repo_id} has no GGUF files.",
                            "Search for a repo that ends in -GGUF with `camelid search`.")
    if wanted is None:
        if len(models) == 1:
            return models[0]
        raise CamelidError(
            f"{files.repo_id} holds {len(models)} quants: {', '.join(_labels(models))}.",
            f"Pick one, e.g. `camelid download {files.repo_id}:{_default_quant(models).quant}`.")
    key = wanted.strip().upper()
    by_path = [q for q in files.quants if any(f.path == wanted for f in q.files)]
    if by_path:
        return by_path[0]
    by_name = [q for q in models if q.name.upper() == key or q.quant == key]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise CamelidError(f"{files.repo_id} has several {key} files: {', '.join(q.first_file for q in by_name)}.",
                           f"Name the file: `camelid download {files.repo_id}/{by_name[0].first_file}`.")
    raise NotFoundError(f"{files.repo_id} has no {wanted} file.",
                        f"Available: {', '.join(_labels(models))}.")


def _labels(models: list[QuantFile]) -> list[str]:
    counts: dict[str, int] = {}
    for q in models:
        counts[q.quant] = counts.get(q.quant, 0) + 1
    return [q.quant if counts[q.quant] == 1 else q.name for q in models]


def _default_quant(models: list[QuantFile]) -> QuantFile:
    for preferred in ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q4_0"):
        for q in models:
            if q.quant == preferred:
                return q
    return models[0]


# -- URLs, headers, validation, errors -------------------------------------------------


def file_url(repo_id: str, filename: str, *, revision: str = "main") -> str:
    """The resolve URL of a file on the current endpoint."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint())


def auth_headers(token: str | None = None) -> dict[str, str]:
    """huggingface_hub's request headers (user agent, and the token when there is one)."""
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(token=resolve_token(token) or False)


_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate_repo_id(repo_id: str) -> None:
    """Refuse anything that is not ``owner/name``."""
    if not _REPO_ID_RE.match(repo_id) or ".." in repo_id:
        raise CamelidError(f"{repo_id!r} is not a Hub repository name.",
                           "Use the form owner/name, e.g. bartowski/Qwen_Qwen3-8B-GGUF.")


def validate_filename(filename: str) -> PurePosixPath:
    """A repo file name is trusted only if it stays inside the destination folder."""
    path = PurePosixPath(filename)
    bad = (not filename or "\\" in filename or "\x00" in filename or path.is_absolute()
           or any(part in ("..", ".", "") for part in filename.split("/"))
           or re.match(r"^[A-Za-z]:", filename) is not None)
    if bad:
        raise RemoteError(f"The Hub listed a file with an unsafe name: {filename!r}.",
                          "Nothing was written. Report the repository; pick another one meanwhile.")
    return path


def translate_error(exc: BaseException, *, repo_id: str | None, filename: str | None = None) -> CamelidError:
    """Turn a huggingface_hub / HTTP failure into an error a person can act on."""
    if isinstance(exc, CamelidError):
        return exc
    from huggingface_hub import errors as hf_errors

    what = f"{repo_id}/{filename}" if repo_id and filename else (repo_id or "the Hub")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, hf_errors.GatedRepoError):
        page = repo_page(repo_id) if repo_id else endpoint()
        if status == 403:
            return GatedRepoError(f"{repo_id} is gated and your account has not been granted access.",
                                  f"Accept the license at {page}, then try again.")
        return GatedRepoError(f"{repo_id} is gated: downloading it needs a Hugging Face token.",
                              f"Accept the license at {page}, then set HF_TOKEN or run `hf auth login`.")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        if status == 401 and not resolve_token():
            return NotFoundError(f"{repo_id} was not found, or it is private.",
                                 "Check the name with `camelid search`; for a private repo set HF_TOKEN.")
        return NotFoundError(f"{repo_id} was not found on {endpoint()}.",
                             "Check the name with `camelid search`.")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return NotFoundError(f"That revision of {repo_id} does not exist.", "Use the main branch.")
    if isinstance(exc, (hf_errors.RemoteEntryNotFoundError, hf_errors.EntryNotFoundError)):
        return NotFoundError(f"{what} does not exist.", f"List the files with `camelid files {repo_id}`.")
    if isinstance(exc, hf_errors.HfHubHTTPError):
        return RemoteError(f"The Hub answered {status or 'an error'} for {what}.",
                           "Try again in a moment; if it persists, check HF_ENDPOINT and your connection.")
    import httpx2

    if isinstance(exc, (httpx2.TransportError, OSError)):
        return RemoteError(f"Could not reach {endpoint()} ({type(exc).__name__}).",
                           "Check your internet connection (or HF_ENDPOINT), then try again.")
    return RemoteError(f"Unexpected answer from the Hub for {what}: {exc}.", "Try again.")
