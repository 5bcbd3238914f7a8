"""The live catalog refresh: new models from the watched labs, read from the Hub, stored as the user catalog.

`refresh_catalog` asks the Hub, once per watched lab (resources/watched_labs.json),
for that lab's newest repos; keeps the chat models created since the shipped
snapshot that no catalog knows yet; follows each to its GGUF quantizations (the
Hub's ``base_model:quantized:<repo>`` relation with the ``gguf`` filter, one call
per model, or the lab's own ``-GGUF`` repo seen in its listing); picks the
Q4_K_M file (else the nearest quant) of the most trusted quantizer; reads that
file's header over HTTP Ranges (at most 16 MiB, with a deadline); and derives a
catalog entry priced from that header. The user catalog in the data dir is then
replaced in one rename, so it is never half-written.

Why not `HfApi.list_models`: huggingface_hub 2.x's shared client has no timeout
and its pagination retries connection errors with back-off, so an unplugged
cable would hang or repeat. The listing here sends the same ``/api/models``
query HfApi builds through Camelid's one HTTP policy (app.core.http_policy:
timeouts, a size cap per answer, a deadline, the refresh's cancel event),
parses each item into huggingface_hub's own `ModelInfo`, and raises its errors
through `hf_raise_for_status` (then `hub.translate_error`), so the answers mean
what they mean to HfApi.

Only models whose repo belongs to a watched lab are added: third-party
fine-tunes and merges never are, whoever quantized them. The first connection
failure (or a Hub that answers 5xx) stops the refresh with one sentence and
leaves the user catalog as it was. Nothing at all is sent when Camelid is set
to work offline (the ``offline`` setting, or ``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from app import paths
from app.core.errors import CamelidError, GatedRepoError, NotFoundError, RemoteError
from app.core.http_policy import (
    HeaderTooLargeError,
    HttpPolicy,
    HttpTimeoutError,
    HubCall,
    HubCallCancelled,
    MalformedAnswerError,
    parse_json,
    request_headers,
)
from app.core.models import hub
from app.core.models.catalog import Architecture, load_catalog, snapshot_date, user_catalog_info

if TYPE_CHECKING:
    from app.core.fit import ModelMeta

#: The most a header read may download, and how long it may take.
HEADER_MAX_BYTES = 16 * 1024 * 1024
HEADER_DEADLINE_S = 60.0
#: The most one listing answer may be (a listing of 100 repos with their file names is ~100 KB).
LISTING_MAX_BYTES = 8 * 1024 * 1024
#: The whole refresh's deadline (connect and read timeouts are the HTTP policy's, app.core.http_policy).
REFRESH_DEADLINE_S = 600.0
#: Newest repos asked for per lab (the Hub sorts by creation date, newest first).
LAB_LIMIT = 100
#: Quantizations asked for per new model, most downloaded first.
QUANT_LIMIT = 100
#: The quant to read, else the nearest one people use (a header is the same for all but the types).
QUANT_PREFERENCE = ("Q4_K_M", "Q4_K_S", "IQ4_XS", "Q4_0", "Q5_K_M", "Q4_K_L", "Q5_K_S", "Q6_K", "IQ4_NL",
                    "MXFP4", "Q3_K_L", "Q3_K_M", "IQ3_M", "Q8_0", "Q6_K_L", "BF16", "F16")
_WATCHED = "watched_labs.json"
_ADAPTER_RE = re.compile(r"^base_model:(?:adapter|merge):", re.IGNORECASE)
_QUANTIZED_RE = re.compile(r"^base_model:quantized:(.+)$", re.IGNORECASE)
_NOT_CHAT_RE = re.compile(r"(?:^|[-_.])(base|pt|embed(?:ding)?s?|reward|rm|guard|prm|classifier|tts|asr|"
                          r"fp8|awq|gptq|mlx|int4|int8|nvfp4|bnb|onnx|eagle\d*|draft)(?=$|[-_.])",
                          re.IGNORECASE)


class OfflineError(CamelidError):
    """Camelid is set to work offline, so nothing was asked of the Hub."""

    code = "offline"


class RefreshCancelled(CamelidError):
    code = "cancelled"


@dataclass(frozen=True)
class WatchedLabs:
    """resources/watched_labs.json: whose models are added, and whose GGUF files are trusted."""

    labs: tuple[str, ...]
    quantizers: tuple[str, ...]
    chat_pipelines: tuple[str, ...] = ("text-generation", "image-text-to-text")

    def is_lab(self, author: str) -> bool:
        return author.lower() in {lab.lower() for lab in self.labs}

    def quantizer_rank(self, author: str, lab: str) -> int | None:
        """0 for the lab's own GGUF repo, then the quantizers in the file's order; None: not trusted."""
        if author.lower() == lab.lower():
            return 0
        order = [q.lower() for q in self.quantizers]
        return order.index(author.lower()) + 1 if author.lower() in order else None


def watched_labs(path: Path | None = None) -> WatchedLabs:
    """The watched labs and trusted quantizers (resources/watched_labs.json)."""
    where = path or paths.resources_dir() / _WATCHED
    try:
        data = json.loads(Path(where).read_text(encoding="utf-8"))
        labs = tuple(str(x) for x in data["labs"])
        quantizers = tuple(str(x) for x in data["quantizers"])
        pipelines = tuple(str(x) for x in data.get("chat_pipelines") or ("text-generation",))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CamelidError(f"The list of watched labs {where} could not be read ({exc}).",
                           "Reinstall Camelid, or fix the file if you edited it.") from exc
    return WatchedLabs(labs=labs, quantizers=quantizers, chat_pipelines=pipelines)


def is_offline(settings: Any = None) -> bool:
    """Whether Camelid must not touch the network: the ``offline`` setting, or HF_HUB_OFFLINE."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if settings is None:
        from app.core.settings import Settings

        settings = Settings()
    try:
        return bool(settings["offline"])
    except KeyError:
        return False


def refresh_due(settings: Any = None, *, now: datetime | None = None) -> bool:
    """Whether the daily check should run now: on, online, and no refresh in the last 24 hours."""
    if settings is None:
        from app.core.settings import Settings

        settings = Settings()
    if is_offline(settings) or not settings["catalog_daily_check"]:
        return False
    last = user_catalog_info().refreshed
    if not last:
        return True
    try:
        then = datetime.fromisoformat(last.replace("Z", "+00:00"))
    except ValueError:
        return True
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return ((now or datetime.now(timezone.utc)) - then).total_seconds() >= 24 * 3600


# -- the result -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A repo the refresh looked at and did not add, with the reason in words."""

    repo: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"repo": self.repo, "reason": self.reason}


@dataclass
class RefreshResult:
    """What one refresh did: the entries it added, what it skipped and why, and what it cost."""

    added: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    #: HTTP requests sent (redirects to the CDN counted), and what each kind was.
    requests: int = 0
    listing_calls: int = 0
    quant_lookups: int = 0
    header_reads: int = 0
    #: Bytes of GGUF headers downloaded, and the largest single header read.
    header_bytes: int = 0
    max_header_bytes: int = 0
    #: Bytes of listing answers (JSON).
    listing_bytes: int = 0
    labs: int = 0
    since: str = ""
    refreshed: str = ""
    path: str = ""
    seconds: float = 0.0

    @property
    def bytes_fetched(self) -> int:
        return self.header_bytes + self.listing_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": [{k: e.get(k) for k in ("id", "name", "model", "repo", "released", "license",
                                              "params_b", "active_params_b", "context", "strengths")}
                      for e in self.added],
            "skipped": [s.to_dict() for s in self.skipped],
            "requests": self.requests, "listing_calls": self.listing_calls,
            "quant_lookups": self.quant_lookups, "header_reads": self.header_reads,
            "header_bytes": self.header_bytes, "max_header_bytes": self.max_header_bytes,
            "listing_bytes": self.listing_bytes, "bytes_fetched": self.bytes_fetched,
            "labs": self.labs, "since": self.since, "refreshed": self.refreshed, "path": self.path,
            "seconds": round(self.seconds, 3),
        }


# -- HTTP with bounds ------------------------------------------------------------------------------


class _Stop(Exception):
    """Internal: a failure that ends the whole refresh (carries the user-facing error)."""

    def __init__(self, error: CamelidError) -> None:
        super().__init__(str(error))
        self.error = error


def _unchanged(error: RemoteError) -> RemoteError:
    """The same error, saying that the user catalog was left as it was."""
    return type(error)(f"{error.message.rstrip('.')}; the catalog was not changed.", error.fix)


def _stops(error: CamelidError) -> bool:
    """Whether an error ends the refresh: the Hub unreachable, too slow or failing, not one repo's problem."""
    return isinstance(error, RemoteError) and not isinstance(error, NotFoundError | GatedRepoError
                                                             | MalformedAnswerError)


def _request_headers(token: str | None) -> dict[str, str]:
    """A user agent and the token, if any (the policy's headers: no agent-registry request)."""
    return request_headers(hub.resolve_token(token), purpose="catalog refresh")


class _HubClient:
    """The refresh's calls under the one HTTP policy: a deadline for the whole refresh, a request
    counter, the listing and header caps, and the refresh's cancel event."""

    def __init__(self, *, deadline: float, result: RefreshResult, token: str | None,
                 cancel: threading.Event | None = None) -> None:
        self.result = result
        self.deadline = deadline
        self.cancel = cancel
        self.headers = _request_headers(token)
        # Read now, so a test (or a caller) that changes the caps sees them used.
        base = HttpPolicy.current()
        self.policy = base.with_(max_json_bytes=LISTING_MAX_BYTES, max_header_bytes=HEADER_MAX_BYTES,
                                 deadline=min(base.deadline, HEADER_DEADLINE_S))

    def _count(self) -> None:
        self.result.requests += 1

    def close(self) -> None:
        """Nothing to close: the policy's connection pool is shared."""

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Stop(RemoteError("The Hub was too slow: the refresh ran past its time limit and stopped; "
                                    "the catalog was not changed.", "Try again later."))

    def call(self, what: str) -> HubCall:
        self.check_deadline()
        return self.policy.start(what, cancel=self.cancel, deadline_at=self.deadline, on_request=self._count)

    def list_models(self, params: Any) -> list[Any]:
        """GET /api/models with `params` (HfApi.list_models' query), as huggingface_hub ModelInfo."""
        from huggingface_hub.hf_api import ModelInfo
        from huggingface_hub.utils import hf_raise_for_status

        url = f"{hub.endpoint()}/api/models"
        try:
            with self.call("the Hub's model listing") as call:
                response = call.get(url, params=params, headers=self.headers)
        except HubCallCancelled:
            raise _cancelled() from None
        except RemoteError as exc:
            if isinstance(exc, MalformedAnswerError):
                raise  # that lab's listing is skipped
            raise _Stop(_unchanged(exc)) from exc
        self.result.listing_bytes += len(response.content)
        try:
            hf_raise_for_status(response)
        except Exception as exc:
            raise hub.translate_error(exc, repo_id=None) from exc
        items = parse_json(response.content, "the Hub's model listing")
        if not isinstance(items, list):
            raise MalformedAnswerError(f"The Hub's listing at {url} was not a list of models.", "Try again later.")
        models = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                item.setdefault("siblings", None)
                with contextlib.suppress(Exception):  # one odd item never spoils the listing
                    models.append(ModelInfo(**item))
        return models


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


# -- the refresh ---------------------------------------------------------------------------------


@dataclass
class _Candidate:
    info: Any  # huggingface_hub ModelInfo of the lab's model
    lab: str
    own_gguf: list[Any] = field(default_factory=list)  # the lab's own GGUF repos of it, from its listing


def refresh_catalog(*, settings: Any = None, labs: WatchedLabs | None = None, since: str | None = None,
                    token: str | None = None, today: date | None = None,
                    progress: Callable[[str], None] | None = None,
                    cancel: threading.Event | None = None) -> RefreshResult:
    """Ask the Hub for the watched labs' new models and store them as the user catalog.

    Returns what was added and skipped and the requests and bytes it cost. Raises
    `OfflineError` (nothing sent) when Camelid works offline, and a `RemoteError`
    at the first connection failure; the user catalog is then left as it was.
    """
    if is_offline(settings):
        raise OfflineError("Camelid is set to work offline, so it did not check the Hub for new models.",
                           "Turn off offline mode in Settings (or unset HF_HUB_OFFLINE) to refresh the catalog.")
    watched = labs or watched_labs()
    began = time.monotonic()
    today = today or datetime.now(timezone.utc).date()
    since = (since or snapshot_date())[:10]
    result = RefreshResult(labs=len(watched.labs), since=since, path=str(paths.user_catalog_path()))
    say = progress or (lambda _m: None)
    catalog = load_catalog()
    known = {m.model.lower() for m in catalog} | {m.repo.lower() for m in catalog}
    taken_ids = {m.id.lower() for m in catalog}
    client = _HubClient(deadline=began + REFRESH_DEADLINE_S, result=result, token=token, cancel=cancel)
    added: list[dict[str, Any]] = []
    try:
        candidates: list[_Candidate] = []
        for lab in watched.labs:
            _check_cancel(cancel)
            say(f"Listing {lab}'s new models…")
            candidates += _lab_candidates(client, watched, lab, since, known, result)
        for n, cand in enumerate(candidates, 1):
            _check_cancel(cancel)
            say(f"Reading {cand.info.id} ({n} of {len(candidates)})…")
            entry = _follow(client, watched, cand, result, today=today, taken_ids=taken_ids)
            if entry is not None:
                added.append(entry)
                taken_ids.add(entry["id"].lower())
        _check_cancel(cancel)
    except _Stop as stop:
        raise stop.error from None
    finally:
        client.close()
    result.added = added
    result.refreshed = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    _store(added, refreshed=result.refreshed, since=since)
    result.seconds = time.monotonic() - began
    say(f"{len(added)} new model{'s' if len(added) != 1 else ''} added.")
    return result


def _cancelled() -> RefreshCancelled:
    return RefreshCancelled("The catalog refresh was cancelled; the catalog was not changed.", None)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise _cancelled()


def _lab_candidates(client: _HubClient, watched: WatchedLabs, lab: str, since: str, known: set[str],
                    result: RefreshResult) -> list[_Candidate]:
    params = [("author", lab), ("sort", "createdAt"), ("limit", str(LAB_LIMIT)),
              *(("expand", e) for e in ("createdAt", "tags", "gated", "pipeline_tag", "cardData",
                                        "siblings", "author"))]
    result.listing_calls += 1
    try:
        items = client.list_models(params)
    except CamelidError as exc:
        if _stops(exc):
            raise _Stop(exc) from exc
        result.skipped.append(Skipped(lab, f"its listing failed: {exc.message}"))
        return []
    chat, ggufs = [], []
    for info in items:
        created = _created(info)
        if created is None or created < since:
            continue
        author = info.id.split("/")[0]
        if not watched.is_lab(author):  # the Hub filtered by author; never trust that blindly
            result.skipped.append(Skipped(info.id, "not by a watched lab"))
            continue
        tags = [str(t) for t in (info.tags or [])]
        if "gguf" in [t.lower() for t in tags]:
            ggufs.append(info)
            continue
        if info.id.lower() in known:
            result.skipped.append(Skipped(info.id, "already in the catalog"))
            continue
        reason = _not_a_chat_model(info, tags, watched)
        if reason:
            result.skipped.append(Skipped(info.id, reason))
            continue
        chat.append(_Candidate(info=info, lab=lab))
    for gguf in ggufs:
        base = _quantized_from(gguf)
        for cand in chat:
            if (base and base.lower() == cand.info.id.lower()) or \
                    gguf.id.lower() in (f"{cand.info.id.lower()}-gguf", f"{cand.info.id.lower()}_gguf"):
                cand.own_gguf.append(gguf)
    if len(items) >= LAB_LIMIT and all((_created(i) or "") >= since for i in items):
        result.skipped.append(Skipped(lab, f"more than {LAB_LIMIT} new repos: only the newest "
                                           f"{LAB_LIMIT} were looked at"))
    return chat


def _created(info: Any) -> str | None:
    stamp = getattr(info, "created_at", None) or getattr(info, "last_modified", None)
    if isinstance(stamp, datetime):
        return stamp.date().isoformat()
    return str(stamp)[:10] if stamp else None


def _quantized_from(info: Any) -> str | None:
    for tag in info.tags or []:
        found = _QUANTIZED_RE.match(str(tag))
        if found:
            return found.group(1)
    return None


def _not_a_chat_model(info: Any, tags: list[str], watched: WatchedLabs) -> str | None:
    pipeline = getattr(info, "pipeline_tag", None)
    if pipeline not in watched.chat_pipelines:
        return f"not a chat model (pipeline {pipeline or 'none'})"
    if any(_ADAPTER_RE.match(t) for t in tags):
        return "an adapter or merge, not a model of its own"
    if _quantized_from(info):
        return "a quantization of another model"
    name = info.id.split("/", 1)[1]
    found = _NOT_CHAT_RE.search(name)
    if found:
        word = found.group(1).lower()
        if word in ("base", "pt"):
            return "a base (pretrained) model, not an instruct one"
        return f"not a chat model llama.cpp runs as is ({found.group(1)})"
    return None


def _follow(client: _HubClient, watched: WatchedLabs, cand: _Candidate, result: RefreshResult, *,
            today: date, taken_ids: set[str]) -> dict[str, Any] | None:
    """The new model's catalog entry, or None (with the reason in `result.skipped`)."""
    repo_id = cand.info.id
    params = [("filter", f"base_model:quantized:{repo_id}"), ("filter", "gguf"), ("sort", "downloads"),
              ("limit", str(QUANT_LIMIT)), *(("expand", e) for e in ("author", "siblings", "gated", "tags"))]
    result.quant_lookups += 1
    try:
        quantizations = client.list_models(params)
    except CamelidError as exc:
        if _stops(exc):
            raise _Stop(exc) from exc
        quantizations = []
    seen = {q.id.lower() for q in quantizations}
    quantizations += [g for g in cand.own_gguf if g.id.lower() not in seen]
    ranked = []
    untrusted = []
    for q in quantizations:
        author = q.id.split("/")[0]
        rank = watched.quantizer_rank(author, cand.lab)
        if rank is None:
            untrusted.append(q.id)
            continue
        if q.gated:
            continue
        pick = _pick_file(q)
        if pick is not None:
            ranked.append((rank, pick[0], q, pick[1]))
    if not ranked:
        why = "no GGUF by a trusted quantizer yet"
        if untrusted:
            why += f" (only by {', '.join(sorted({u.split('/')[0] for u in untrusted})[:3])})"
        result.skipped.append(Skipped(repo_id, why))
        return None
    ranked.sort(key=lambda r: (r[1], r[0]))
    _, _, gguf, filename = ranked[0]
    try:
        meta = _read_header(client, gguf.id, filename, result)
    except CamelidError as exc:
        if _stops(exc):
            raise _Stop(exc) from exc
        result.skipped.append(Skipped(repo_id, f"{gguf.id}/{filename}: {exc.message}"))
        return None
    try:
        return derive_entry(cand.info, gguf.id, filename, meta, today=today, taken_ids=taken_ids,
                            mmproj=_pick_mmproj(gguf))
    except CamelidError as exc:
        result.skipped.append(Skipped(repo_id, exc.message))
        return None


def _pick_file(info: Any) -> tuple[int, str] | None:
    """(preference, file) of the repo's Q4_K_M, else its nearest quant; single files before splits."""
    names = [s.rfilename for s in (info.siblings or []) if getattr(s, "rfilename", None)]
    quants = hub.group_gguf_files(info.id, [hub.RemoteFile(path=n, size=0) for n in names])
    best: tuple[int, str] | None = None
    for q in quants:
        if q.mmproj or not q.complete or q.quant not in QUANT_PREFERENCE:
            continue
        try:
            hub.validate_filename(q.first_file)
        except CamelidError:
            continue
        score = QUANT_PREFERENCE.index(q.quant) * 2 + (1 if q.is_split else 0)
        if best is None or score < best[0]:
            best = (score, q.first_file)
    return best


def _pick_mmproj(info: Any) -> str | None:
    """The repo's vision projector, if it ships one (the F16 one when there are several)."""
    names = sorted(s.rfilename for s in (info.siblings or [])
                   if getattr(s, "rfilename", "").endswith(".gguf") and hub.is_mmproj(s.rfilename))
    return next((n for n in names if "f16" in n.lower()), names[0] if names else None)


def _read_header(client: _HubClient, repo_id: str, filename: str, result: RefreshResult) -> ModelMeta:
    from app.core.fit.gguf_meta import read_gguf_url

    call = client.call(f"the header of {repo_id}/{filename}")
    result.header_reads += 1
    try:
        return read_gguf_url(hub.file_url(repo_id, filename), headers=client.headers, call=call)
    except HubCallCancelled:
        raise _cancelled() from None
    except HeaderTooLargeError as exc:
        raise HeaderTooLargeError(f"Its header is larger than {_mib(call.policy.max_header_bytes)}.",
                                  None) from exc
    except HttpTimeoutError as exc:
        if time.monotonic() > client.deadline:
            raise _Stop(_unchanged(exc)) from exc
        raise HeaderTooLargeError(f"Reading its header took longer than {HEADER_DEADLINE_S:.0f} s.",
                                  None) from exc
    except MalformedAnswerError:
        raise
    except RemoteError as exc:
        if _stops(exc):
            raise _Stop(_unchanged(exc)) from exc
        raise
    finally:
        call.close()
        result.header_bytes += call.bytes_received
        result.max_header_bytes = max(result.max_header_bytes, call.bytes_received)


# -- the entry ------------------------------------------------------------------------------------

_SIZE_TOKEN = re.compile(r"^\d+(?:\.\d+)?[BM]$", re.IGNORECASE)
_ACTIVE_TOKEN = re.compile(r"^A\d+(?:\.\d+)?B$", re.IGNORECASE)


def derive_entry(info: Any, gguf_repo: str, filename: str, meta: ModelMeta, *, today: date,
                 taken_ids: Collection[str] = (), mmproj: str | None = None) -> dict[str, Any]:
    """The catalog entry (catalog.json's shape) of a new model, from its listing and its header."""
    repo_id = info.id
    author, name = repo_id.split("/", 1)
    quant = hub.parse_quant(filename)
    if quant is None:
        raise CamelidError(f"{filename} names no quant.", None)
    pattern = _file_pattern(filename, quant)
    # Publishers write quants one way per repo: a lower-case file means lower-case siblings.
    lower = quant.lower() in PurePosixPath(filename).name and quant not in PurePosixPath(filename).name
    arch = Architecture.from_meta(meta)
    record = meta.to_record()
    total = meta.n_params
    active = arch.n_active_params if meta.n_expert > 1 else None
    entry_id = name.lower()
    if entry_id in taken_ids:
        entry_id = f"{author.lower()}-{name.lower()}"
    tags = [str(t) for t in (info.tags or [])]
    entry: dict[str, Any] = {
        "id": entry_id,
        "name": _display_name(name),
        "family": _family(name, meta.architecture),
        "model": repo_id,
        "repo": gguf_repo,
        "file_pattern": pattern,
        "license": _license(info, tags),
        "gated": bool(info.gated),
        "params_b": _billions(total),
        "active_params_b": _billions(active) if active else None,
        "context": int(meta.n_ctx_train or 0) or 4096,
        "released": _created(info) or today.isoformat(),
        "strengths": _strengths(name, tags),
        "header": record,
        "source": "hub",
        "fetched": today.isoformat(),
        "note": f"Found by a catalog refresh: {gguf_repo}/{filename} ({meta.architecture}).",
    }
    if mmproj:
        entry["mmproj"] = {"file": mmproj, "size_bytes": None}  # the listing gives no sizes
    if lower:
        from app.core.models.catalog import CATALOG_QUANTS

        entry["quant_names"] = {q: q.lower() for q in CATALOG_QUANTS}
    return entry


def _file_pattern(filename: str, quant: str) -> str:
    """The file name with its quant replaced by ``{quant}`` (the last match, as `parse_quant` reads it)."""
    path = PurePosixPath(filename)
    name = path.name
    spans = [m.span(1) for m in hub._QUANT_RE.finditer(name) if m.group(1).upper() == quant]
    if spans:
        a, b = spans[-1]
        name = name[:a] + "{quant}" + name[b:]
    folder = str(path.parent)
    if folder not in ("", "."):
        folder = re.sub(re.escape(quant), "{quant}", folder, flags=re.IGNORECASE)
        name = f"{folder}/{name}"
    if "{quant}" not in name:
        raise CamelidError(f"{filename} does not name its quant where Camelid can find it.", None)
    return name.replace("{", "{{").replace("}", "}}").replace("{{quant}}", "{quant}")


def _display_name(name: str) -> str:
    """``gemma-5-2b-it`` -> ``Gemma 5 2B it``; ``Qwen3.9-35B-A3B`` -> ``Qwen3.9 35B-A3B`` (sizes upper-case, as
    `CatalogModel.size_label` reads them)."""
    out: list[str] = []
    for t in name.split("-"):
        if _SIZE_TOKEN.match(t) or _ACTIVE_TOKEN.match(t):
            t = t.upper()
        if out and _ACTIVE_TOKEN.match(t) and _SIZE_TOKEN.match(out[-1]):
            out[-1] = f"{out[-1]}-{t}"
        else:
            out.append(t)
    text = " ".join(out)
    return text[:1].upper() + text[1:]


def _family(name: str, architecture: str) -> str:
    tokens = name.split("-")
    head = []
    for t in tokens:
        if _SIZE_TOKEN.match(t):
            break
        head.append(t)
    return " ".join(head) or architecture


def _license(info: Any, tags: list[str]) -> str:
    card = getattr(info, "card_data", None)
    value = None
    if card is not None:
        value = getattr(card, "license_name", None) if getattr(card, "license", None) == "other" else None
        value = value or getattr(card, "license", None)
    if not value:
        value = next((t.split(":", 1)[1] for t in tags if t.lower().startswith("license:")), None)
    return str(value) if value else "unknown"


def _strengths(name: str, tags: list[str]) -> list[str]:
    words = name.lower()
    tagset = {t.lower() for t in tags}
    out = ["chat"]
    if "coder" in words or "code" in words.split("-") or "devstral" in words or "code" in tagset:
        out.append("code")
    if any(w in words for w in ("thinking", "reasoning", "reasoner", "-r1")) or \
            tagset & {"reasoning", "thinking"}:
        out.append("reasoning")
    return out


def _billions(n: int | None) -> float:
    if not n:
        return 0.0
    return float(f"{n / 1e9:.4g}")


# -- storage --------------------------------------------------------------------------------------


def _store(added: list[dict[str, Any]], *, refreshed: str, since: str) -> Path:
    """The user catalog with `added` merged in, written to a temp file and renamed over the old one."""
    path = paths.user_catalog_path()
    previous: list[dict[str, Any]] = []
    # Entries of earlier refreshes stay (a damaged file is rebuilt from this refresh alone).
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        previous = [e for e in json.loads(path.read_text(encoding="utf-8")).get("models", [])
                    if isinstance(e, dict)]
    new_ids = {e["id"] for e in added}
    models = [e for e in previous if e.get("id") not in new_ids] + added
    data = {"_comment": "Models found on the Hub by `camelid catalog --refresh`; rebuilt by each refresh.",
            "format": 1, "refreshed": refreshed, "since": since, "models": models}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".catalog_user-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# -- for the front doors -------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogStatus:
    """What the Models page and `camelid catalog` say about the catalog's age."""

    snapshot: str
    #: ISO date-time (UTC) of the last successful refresh, or None.
    refreshed: str | None
    #: Models the refreshes added (the user catalog).
    found: int
    problems: tuple[str, ...] = ()


def catalog_status() -> CatalogStatus:
    """The snapshot date, the last refresh and how many models refreshes added (reads the user catalog)."""
    info = user_catalog_info()
    return CatalogStatus(snapshot=snapshot_date(), refreshed=info.refreshed, found=len(info.models),
                         problems=info.problems)


def daily_check(settings: Any = None, *, progress: Callable[[str], None] | None = None,
                cancel: threading.Event | None = None) -> RefreshResult | None:
    """The once-a-day refresh: runs it when `refresh_due`, else returns None without a request."""
    if not refresh_due(settings):
        return None
    return refresh_catalog(settings=settings, progress=progress, cancel=cancel)
