"""The Hugging Face Hub as Camelid sees it: GGUF repos, their quant files, sizes and hashes.

Every call goes through the one HTTP policy (`app.core.http_policy`): timeouts,
a byte cap per answer, a deadline per call and cancellation. The API routes
are the ones huggingface_hub's `HfApi` builds, and its own `ModelInfo` and
`hf_raise_for_status` read the answers; HfApi itself is not used because its
shared client has no timeout, reads answers whole and retries with back-off
(http_policy says more). Each answer is then checked field by field, so a
malformed one is a `MalformedAnswerError` with a sentence, and a file name that
is unsafe on any platform (controls, terminal escapes, newlines, over-long,
Windows device names) is refused before it is printed or written.

The endpoint is read at call time (``HF_ENDPOINT``, else huggingface_hub's
default) because huggingface_hub reads it only once, at import, and a mirror or
test server set later must still win. The token comes from the caller, else
``HF_TOKEN``, else the token the user saved with ``hf auth login``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from app.core.errors import CamelidError, GatedRepoError, NotFoundError, RemoteError
from app.core.http_policy import (
    Cancel,
    HttpPolicy,
    MalformedAnswerError,
    parse_json,
    request_headers,
    safe_text,
    unsafe_char,
)

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


def _get_json(url: str, what: str, *, params: Any = None, token: str | None = None,
              repo_id: str | None = None, cancel: Cancel = None, policy: HttpPolicy | None = None) -> Any:
    """One API call under the HTTP policy: the answer's JSON, or a typed error."""
    from huggingface_hub.utils import hf_raise_for_status

    with (policy or HttpPolicy.current()).start(what, cancel=cancel) as call:
        response = call.get(url, params=params, headers=auth_headers(token))
    try:
        hf_raise_for_status(response)
    except Exception as exc:
        raise translate_error(exc, repo_id=repo_id) from exc
    return parse_json(response.content, what)


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


_SORTS = {"last_modified": "lastModified", "trending_score": "trendingScore", "created_at": "createdAt"}


def search_models(query: str, *, limit: int = 20, sort: str = "downloads", token: str | None = None,
                  cancel: Cancel = None, policy: HttpPolicy | None = None) -> list[RepoSummary]:
    """GGUF repos whose name matches ``query``, most downloaded first (HfApi.list_models' query)."""
    from huggingface_hub.hf_api import ModelInfo

    params: list[tuple[str, str]] = [("filter", "gguf"), ("sort", _SORTS.get(sort, sort)), ("limit", str(limit))]
    if query:
        params.append(("search", query))
    params += [("expand", e) for e in ("downloads", "likes", "gated", "private", "lastModified",
                                       "pipeline_tag", "gguf")]
    items = _get_json(f"{endpoint()}/api/models", "the Hub's search", params=params, token=token,
                      cancel=cancel, policy=policy)
    if not isinstance(items, list):
        raise MalformedAnswerError("The Hub's search answer is not a list of models.", "Try again later.")
    results = []
    for item in items[:limit]:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not _REPO_ID_RE.match(item["id"]):
            continue  # one odd hit never spoils the others
        try:
            info = ModelInfo(**{**item, "siblings": None})
        except Exception:
            continue
        modified = getattr(info, "last_modified", None)
        results.append(RepoSummary(
            repo_id=info.id,
            downloads=_count(info.downloads),
            likes=_count(info.likes),
            gated=info.gated if isinstance(info.gated, (bool, str)) else False,
            private=info.private is True,
            last_modified=modified.isoformat() if isinstance(modified, datetime) else None,
            pipeline_tag=info.pipeline_tag if isinstance(info.pipeline_tag, str) else None,
            gguf=_gguf_summary(getattr(info, "gguf", None)),
        ))
    return results


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63 else 0


def _gguf_summary(value: Any) -> dict[str, Any] | None:
    """The Hub's GGUF summary with only plausible values kept (it is shown and used as a number)."""
    if not isinstance(value, dict):
        return None
    kept: dict[str, Any] = {}
    total = value.get("total")
    if isinstance(total, int) and not isinstance(total, bool) and 0 < total < 10**15:
        kept["total"] = total
    arch = value.get("architecture")
    if isinstance(arch, str) and len(arch) <= 64 and not any(unsafe_char(c) for c in arch):
        kept["architecture"] = arch
    ctx = value.get("context_length")
    if isinstance(ctx, int) and not isinstance(ctx, bool) and 0 < ctx < 2**31:
        kept["context_length"] = ctx
    for key, v in value.items():
        if key not in kept and key not in ("total", "architecture", "context_length") and isinstance(key, str) \
                and isinstance(v, (int, float, bool)) and not (isinstance(v, float) and not math.isfinite(v)):
            kept[key] = v
    return kept


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


#: Larger than any file the Hub stores (its limit is 50 GB per file; a PiB leaves room for mirrors).
MAX_FILE_BYTES = 2**50
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def repo_files(repo_id: str, *, revision: str = "main", include_mmproj: bool = False,
               token: str | None = None, cancel: Cancel = None, policy: HttpPolicy | None = None) -> RepoFiles:
    """The GGUF models in a repo, grouped by quant, with sizes and LFS hashes (HfApi.model_info's route)."""
    from urllib.parse import quote

    from huggingface_hub.hf_api import ModelInfo

    validate_repo_id(repo_id)
    url = f"{endpoint()}/api/models/{repo_id}"
    if revision != "main":
        url += f"/revision/{quote(revision, safe='')}"
    data = _get_json(url, f"{repo_id}'s files", params={"blobs": "true"}, token=token, repo_id=repo_id,
                     cancel=cancel, policy=policy)
    bad = _malformed(repo_id)
    if not isinstance(data, dict):
        raise bad("it is not a model")
    siblings = data.get("siblings")
    if siblings is not None and not (isinstance(siblings, list) and all(isinstance(x, dict) for x in siblings)):
        raise bad("its file list is not a list of files")
    remote = [f for f in (_remote_file(repo_id, x) for x in siblings or []) if f is not None]
    sha = data.get("sha")
    if sha is None:
        sha = revision
    elif not isinstance(sha, str) or not _REVISION_RE.match(sha):
        raise bad("its commit id is not one")
    try:
        info = ModelInfo(**{**data, "siblings": None})
    except Exception as exc:
        raise bad("its fields have the wrong types") from exc
    return RepoFiles(
        repo_id=repo_id, sha=sha, gated=info.gated if isinstance(info.gated, (bool, str)) else False,
        private=info.private is True, gguf=_gguf_summary(getattr(info, "gguf", None)),
        quants=group_gguf_files(repo_id, remote, revision=sha, include_mmproj=include_mmproj),
    )


def _malformed(repo_id: str) -> Any:
    def make(why: str) -> MalformedAnswerError:
        return MalformedAnswerError(f"The Hub's answer for {repo_id} is malformed: {why}.",
                                    "Try again later; if it persists, report the repository or the mirror.")
    return make


def _remote_file(repo_id: str, item: dict[str, Any]) -> RemoteFile | None:
    """One sibling of the Hub's answer, every field checked (and its name, if it is a model file)."""
    bad = _malformed(repo_id)
    name = item.get("rfilename")
    if not isinstance(name, str):
        raise bad("a file has no name")
    lfs = item.get("lfs")
    if lfs is not None and not isinstance(lfs, dict):
        raise bad(f"the LFS details of {safe_text(name, 80)} are not an object")
    size = item.get("size")
    if size is None and lfs:
        size = lfs.get("size")
    if size is None:
        size = 0
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_BYTES:
        raise bad(f"the size of {safe_text(name, 80)} is not a plausible number of bytes")
    sha256 = lfs.get("sha256") if lfs else None
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256_RE.match(sha256)):
        raise bad(f"the sha256 of {safe_text(name, 80)} is not one")
    if any(unsafe_char(c) for c in name):
        if name.lower().endswith(".gguf"):
            # A model file whose name would be a terminal escape or a line break where it is shown:
            # refused before anything prints it. (Names unsafe on disk are refused by
            # `validate_filename` when a download is planned, before anything is written.)
            validate_filename(name)
        return None  # another file (a README, a config) Camelid never shows or fetches: left out
    return RemoteFile(path=name, size=size, sha256=sha256)


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
    """The resolve URL of a file on the current endpoint (as huggingface_hub's `hf_hub_url` builds it).

    Built here because `hf_hub_url` starts from a template made of the endpoint read
    at import, and swaps in the one given only when that template still starts
    with ``constants.ENDPOINT``.
    """
    from urllib.parse import quote

    if not isinstance(revision, str):
        raise MalformedAnswerError(f"The Hub gave {repo_id} a commit id that is not one.", "Try again later.")
    return f"{endpoint()}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"


def auth_headers(token: str | None = None) -> dict[str, str]:
    """Camelid's request headers: a user agent, and the token when there is one.

    Not huggingface_hub's `build_hf_headers`: it also fetches the Hub's agent
    registry once a day, from the endpoint it read at import (http_policy says more).
    """
    return request_headers(resolve_token(token))


_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate_repo_id(repo_id: str) -> None:
    """Refuse anything that is not ``owner/name``."""
    if not _REPO_ID_RE.match(repo_id) or ".." in repo_id:
        raise CamelidError(f"{repo_id!r} is not a Hub repository name.",
                           "Use the form owner/name, e.g. bartowski/Qwen_Qwen3-8B-GGUF.")


#: Longest file name (one path part) accepted, in UTF-8 bytes: file systems stop at 255, and a
#: download adds a suffix (``.part``, a sidecar) to it.
MAX_NAME_BYTES = 200
#: Longest repo path accepted, in characters (Windows paths stop near 260 without long-path support).
MAX_PATH_CHARS = 400
_WINDOWS_DEVICES = frozenset({"con", "prn", "aux", "nul", "conin$", "conout$",
                              *(f"{p}{n}" for p in ("com", "lpt") for n in "0123456789¹²³")})
_WINDOWS_FORBIDDEN = set('<>:"|?*')


def unsafe_name(filename: object) -> str | None:
    """Why a repo file name cannot be used on every platform Camelid ships for, or None when it can."""
    if not isinstance(filename, str) or not filename:
        return "it is empty"
    if any(unsafe_char(c) for c in filename):
        return "it holds control characters (terminal escapes, newlines)"
    if len(filename) > MAX_PATH_CHARS:
        return f"it is longer than {MAX_PATH_CHARS} characters"
    path = PurePosixPath(filename)
    if "\\" in filename or path.is_absolute() or re.match(r"^[A-Za-z]:", filename):
        return "it points outside the models folder"
    for part in filename.split("/"):
        if part in ("..", ".", ""):
            return "it points outside the models folder"
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            return f"a part of it is longer than {MAX_NAME_BYTES} bytes"
        if _WINDOWS_FORBIDDEN & set(part):
            return "it holds characters Windows does not allow in file names (such as : or ?)"
        if part[-1] in ". ":
            return "a part of it ends in a dot or a space, which Windows drops"
        if part.split(".")[0].rstrip(" ").lower() in _WINDOWS_DEVICES:
            return f"{part.split('.')[0]} is a device name on Windows"
    return None


def validate_filename(filename: str) -> PurePosixPath:
    """A repo file name is trusted only if it stays inside the destination folder and is a plain
    file name on Linux, macOS and Windows; else a `RemoteError` that shows the name escaped."""
    why = unsafe_name(filename)
    if why is not None:
        raise RemoteError(f"The Hub listed a file with an unsafe name ({why}): {safe_text(repr(filename), 100)}.",
                          "Nothing was written. Report the repository; pick another one meanwhile.")
    return PurePosixPath(filename)


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
        from app.core.http_policy import unreachable_reason

        return RemoteError(f"Could not reach {endpoint()}: {unreachable_reason(exc)}.",
                           "Check your internet connection (or HF_ENDPOINT), then try again.")
    return RemoteError(f"Unexpected answer from the Hub for {safe_text(what)} ({type(exc).__name__}).",
                       "Try again.")
