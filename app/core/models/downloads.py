"""Download jobs: plan first, then fetch with progress, cancel, resume, retries and verification.

Why a hand-written Range downloader instead of ``hf_hub_download``:
huggingface_hub 2.x writes to a process-unique temporary file and deletes it
on any failure, so a dropped connection or a crash 70 GB into an 80 GB file
starts again from zero. Camelid keeps ``<name>.part`` plus a JSON sidecar
(etag, commit, size) under ``paths.downloads_dir()`` and continues with an
HTTP Range request, using huggingface_hub's URL, header and metadata helpers
and its HTTP session, so mirrors, tokens and proxies behave the same.

The body is read in a helper thread that only writes to the part file; the
calling thread hashes what has been written (sha256 while streaming, and
over an existing part on resume), reports progress at a steady rate (the
speed decays during a stall instead of freezing) and watches ``cancel``.
Callers never see the helper thread: progress callbacks run on the caller's
thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from app import paths
from app.core.errors import (
    CamelidError,
    ChecksumError,
    DiskSpaceError,
    DownloadCancelled,
    RemoteError,
    WontFitError,
)
from app.core.fit import LoadChoices, plan_with_choices
from app.core.machine import HardwareProfile, detect
from app.core.models import hub
from app.core.models.hub import QuantFile
from app.core.models.part_lock import PartLock
from app.core.units import human_bytes

#: Hashing reads the part file in blocks this big. Also the resume granularity
#: promised to users: a crash loses at most about this much already-fetched data.
CHUNK_SIZE = 1024 * 1024
#: Free space kept beyond the download itself: a fixed floor plus a share of the size.
DISK_MARGIN_FLOOR = 1024**3
DISK_MARGIN_SHARE = 0.02
#: Seconds between progress reports.
PROGRESS_INTERVAL = 0.25
#: Seconds of history behind the speed readout.
SPEED_WINDOW = 3.0
SIDECAR_VERSION = 1


# -- the plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FitJudgement:
    """What the fit engine says about a model on this machine."""

    verdict: str  # full_gpu | partial | cpu | no_fit
    plan: dict[str, Any] | None = None
    reason: str | None = None


#: The seam to the fit engine: given the remote model, say whether it fits (None: unknown).
FitJudge = Callable[[QuantFile], "FitJudgement | None"]


@dataclass(frozen=True)
class PlannedFile:
    """One file of a planned download: where it comes from and where it will land."""

    path: str  # in the repo
    size: int
    sha256: str | None
    destination: Path
    part: Path
    already_bytes: int = 0  # in the part file, or the whole size when already installed
    installed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256,
                "destination": str(self.destination), "part": str(self.part),
                "already_bytes": self.already_bytes, "installed": self.installed}


@dataclass(frozen=True)
class DownloadPlan:
    """Everything decided before the first byte: files, sizes, destination, disk, fit."""

    repo_id: str
    revision: str
    quant: str
    name: str
    files: tuple[PlannedFile, ...]
    total_bytes: int
    remaining_bytes: int
    free_bytes: int
    margin_bytes: int
    fit: FitJudgement | None = None
    #: Which local layout the files use (see :func:`local_layouts`): "tree", "flat" or "@<revision>".
    layout: str = "tree"

    @property
    def destination(self) -> Path:
        """The file to open (the first shard of a split model)."""
        return self.files[0].destination

    @property
    def verdict(self) -> str | None:
        return self.fit.verdict if self.fit else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id, "revision": self.revision, "quant": self.quant, "name": self.name,
            "destination": str(self.destination), "total_bytes": self.total_bytes,
            "remaining_bytes": self.remaining_bytes, "free_bytes": self.free_bytes,
            "margin_bytes": self.margin_bytes, "verdict": self.verdict, "layout": self.layout,
            "fit": self.fit.plan if self.fit else None,
            "files": [f.to_dict() for f in self.files],
        }


def destination_folder(repo_id: str) -> Path:
    """Where a repo's models live in the library: ``models/<owner>/<name>/``."""
    hub.validate_repo_id(repo_id)
    owner, name = repo_id.split("/")
    return paths.models_dir() / owner / name


def _part_folder(repo_id: str) -> Path:
    owner, name = repo_id.split("/")
    return paths.downloads_dir() / owner / name


def part_path(repo_id: str, repo_path: str) -> Path:
    """The partial file of one repo file: the repo's folders kept, so two quants never share one."""
    return _part_folder(repo_id) / f"{hub.validate_filename(repo_path)}.part"


#: How many revision slots beside the tree are tried before giving up (each needs a different file
#: already sitting in every earlier slot).
MAX_SLOTS = 32


def _revision_tag(revision: str) -> str:
    """A folder name for a revision: a commit's first 12 hex digits, or a branch name made safe."""
    if _is_commit(revision):
        return revision[:12].lower()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in revision)[:40].strip(".")
    return safe or "rev"


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdefABCDEF" for c in revision)


def local_layouts(repo_id: str, revision: str, repo_paths: Sequence[str]) -> Iterator[tuple[str, tuple[Path, ...]]]:
    """Where a model's files may lie in the library, in the order they are tried.

    ``tree``: the repo's own folders under ``models/<owner>/<name>/``, what new
    downloads use, so ``Q4_K_M/model.gguf`` and ``Q8_0/model.gguf`` never meet.
    ``flat``: the bare file names, where Camelid saved files of repo folders
    before (found and used when every file is there; never written).
    ``@<revision>``, ``@<revision>-2``...: a folder beside the tree for a file
    whose tree path already holds a different file (another revision, or a
    damaged copy); that file is left exactly as it is.
    """
    folder = destination_folder(repo_id)
    names = [hub.validate_filename(p) for p in repo_paths]
    tree = tuple(folder / p for p in names)
    yield "tree", tree
    flat = tuple(folder / p.name for p in names)
    if flat != tree:
        yield "flat", flat
    tag = _revision_tag(revision)
    for n in range(1, MAX_SLOTS + 1):
        slot = f"@{tag}" if n == 1 else f"@{tag}-{n}"
        yield slot, tuple(folder / slot / p for p in names)


def _state(path: Path, size: int) -> str:
    """``missing``, ``same`` (a file of the right size: verified by hash before use) or ``other``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing" if not path.is_symlink() else "other"
    except OSError:
        return "other"
    return "same" if stat.S_ISREG(st.st_mode) and st.st_size == size else "other"


def _resolve(repo_id: str, revision: str, wanted: Sequence[tuple[str, int, str | None]],
             refused: Iterable[str] = ()) -> tuple[str, tuple[PlannedFile, ...]]:
    """Pick the layout: one that already holds every file, else the first whose paths hold no
    other file. ``refused``: layouts whose same-size files turned out to be different files."""
    refused = set(refused)
    writable: tuple[str, tuple[Path, ...], list[str]] | None = None
    for name, dests in local_layouts(repo_id, revision, [w[0] for w in wanted]):
        states = [_state(d, w[1]) for d, w in zip(dests, wanted, strict=True)]
        if name in refused:
            continue
        if all(s == "same" for s in states):
            return name, tuple(
                PlannedFile(path=p, size=size, sha256=sha, destination=d, part=part_path(repo_id, p),
                            already_bytes=size, installed=True)
                for (p, size, sha), d in zip(wanted, dests, strict=True))
        if writable is None and name != "flat" and "other" not in states:
            writable = (name, dests, states)
        if writable is not None and name.startswith("@") and all(s == "missing" for s in states):
            break  # every later slot is free too: nothing installed beyond here
    if writable is None:
        raise CamelidError(
            f"Every folder Camelid may use under {destination_folder(repo_id)} already holds another file "
            f"named {PurePosixPath(wanted[0][0]).name}; nothing was downloaded.",
            "Delete the copies you no longer need with `camelid models`, then run the download again.")
    name, dests, states = writable
    planned = []
    for (p, size, sha), d, s in zip(wanted, dests, states, strict=True):
        part = part_path(repo_id, p)
        installed = s == "same"
        planned.append(PlannedFile(path=p, size=size, sha256=sha, destination=d, part=part,
                                   already_bytes=size if installed else _usable_part_bytes(part, size),
                                   installed=installed))
    return name, tuple(planned)


def disk_free_bytes(path: Path) -> int:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def disk_margin(total: int) -> int:
    """Free space kept beyond a download of ``total`` bytes."""
    return int(max(DISK_MARGIN_FLOOR, DISK_MARGIN_SHARE * total))


def plan_download(quant: QuantFile, *, judge: FitJudge | None = None,
                  allow_no_fit: bool = False) -> DownloadPlan:
    """Plan a download; refuse early when the disk is short or the model cannot run here.

    ``judge`` is the fit engine (see :func:`judge_remote_fit`); without one the
    verdict is unknown and nothing is refused on fit grounds. Local paths are
    unique per (repo, path) and, where a different file already holds that
    path, per revision (see :func:`local_layouts`): no download ever replaces
    or deletes a file already in the library.
    """
    if not quant.complete:
        raise RemoteError(
            f"{quant.repo_id} lists {len(quant.files)} of the {quant.shard_count} shards of {quant.name}.",
            "The upload looks unfinished; pick another quant or try again later.")
    layout, planned = _resolve(quant.repo_id, quant.revision,
                               [(f.path, f.size, f.sha256) for f in quant.files])
    total = sum(f.size for f in planned)
    remaining = total - sum(f.already_bytes for f in planned)
    margin = disk_margin(total)
    free = _check_space(quant.name, remaining, margin)
    fit = judge(quant) if judge else None
    if fit and fit.verdict == "no_fit" and not allow_no_fit:
        raise WontFitError(
            f"{quant.name} will not fit in this machine's memory"
            + (f": {fit.reason}" if fit.reason else "."),
            "Pick a smaller quant (see `camelid files`), or download anyway with --force.")
    return DownloadPlan(repo_id=quant.repo_id, revision=quant.revision, quant=quant.quant, name=quant.name,
                        files=planned, total_bytes=total, remaining_bytes=remaining,
                        free_bytes=free, margin_bytes=margin, fit=fit, layout=layout)


def _check_space(name: str, remaining: int, margin: int) -> int:
    """The free bytes, or DiskSpaceError when ``remaining`` plus the margin would not fit."""
    free = disk_free_bytes(paths.downloads_dir())
    if remaining > 0 and free < remaining + margin:
        raise DiskSpaceError(
            f"{name} needs {human_bytes(remaining)} more on disk (plus {human_bytes(margin)} kept "
            f"free) but only {human_bytes(free)} is free at {paths.downloads_dir()}.",
            "Free some space, or move the models folder to a bigger disk with CAMELID_MODELS_DIR.")
    return free


def _refreshed(plan: DownloadPlan, refused: Iterable[str] = ()) -> DownloadPlan:
    """The plan against the disk as it is now (run under the part locks: another writer may have
    finished, a file appeared, or a file thought installed was another), space checked again."""
    layout, planned = _resolve(plan.repo_id, plan.revision, [(f.path, f.size, f.sha256) for f in plan.files],
                               refused)
    remaining = plan.total_bytes - sum(f.already_bytes for f in planned)
    free = _check_space(plan.name, remaining, plan.margin_bytes)
    return dataclasses.replace(plan, files=planned, layout=layout, remaining_bytes=remaining, free_bytes=free)


def _usable_part_bytes(part: Path, size: int) -> int:
    sidecar = _read_sidecar(part)
    if sidecar is None or sidecar.get("size") != size or not part.is_file():
        return 0
    have = part.stat().st_size
    return have if have <= size else 0


def judge_remote_fit(hardware: HardwareProfile | None = None, *, token: str | None = None,
                     choices: LoadChoices | None = None) -> FitJudge:
    """A fit judge backed by the fit engine: reads the GGUF header over HTTP ranges and plans it
    with the load settings the engine will use (default: the saved settings)."""
    from app.core.fit import read_gguf_remote

    def judge(quant: QuantFile) -> FitJudgement | None:
        meta = read_gguf_remote(quant.repo_id, quant.first_file, revision=quant.revision,
                                token=hub.resolve_token(token))
        plan = plan_with_choices(meta, hardware or detect(models_dir=paths.models_dir()),
                                 choices or LoadChoices.current())
        return FitJudgement(verdict=plan.verdict, plan=plan.to_dict(),
                            reason=plan.reasons[0] if plan.reasons else None)

    return judge


# -- progress ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadProgress:
    """A progress report: bytes on disk, current speed and time left."""

    state: str  # checking | downloading | retrying | verifying | moving | done
    bytes_done: int
    total_bytes: int
    speed_bps: float
    eta_seconds: float | None
    file: str
    file_index: int
    file_count: int
    message: str | None = None

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.total_bytes if self.total_bytes else 1.0


ProgressCallback = Callable[[DownloadProgress], None]


class _Meter:
    """Speed over a sliding window, sampled at every report, so a stall reads as a falling speed."""

    def __init__(self, plan: DownloadPlan, progress: ProgressCallback | None) -> None:
        self.plan = plan
        self.callback = progress
        self.samples: deque[tuple[float, int]] = deque()
        self.network_bytes = 0
        self.next_report = 0.0
        self.state = "checking"
        self.file = plan.files[0].path
        self.file_index = 0
        self.done_before = 0  # bytes of earlier files
        self.current = 0  # bytes on disk of the current file
        self.message: str | None = None

    def speed(self, now: float) -> float:
        self.samples.append((now, self.network_bytes))
        while len(self.samples) > 2 and now - self.samples[0][0] > SPEED_WINDOW:
            self.samples.popleft()
        t0, b0 = self.samples[0]
        return (self.network_bytes - b0) / (now - t0) if now > t0 else 0.0

    def report(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next_report:
            return
        self.next_report = now + PROGRESS_INTERVAL
        speed = self.speed(now)
        if self.callback is None:
            return
        done = self.done_before + self.current
        left = self.plan.total_bytes - done
        eta = left / speed if speed > 1 else None
        self.callback(DownloadProgress(
            state=self.state, bytes_done=done, total_bytes=self.plan.total_bytes, speed_bps=speed,
            eta_seconds=eta if left > 0 else 0.0, file=self.file, file_index=self.file_index,
            file_count=len(self.plan.files), message=self.message))


# -- the job -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on dropped connections, timeouts and 5xx; never on 401/403/404."""

    attempts: int = 6  # consecutive failures without progress before giving up
    base_delay: float = 0.5
    max_delay: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # a stall longer than this reconnects with a Range request

    def delay(self, failures: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** max(failures - 1, 0))


@dataclass(frozen=True)
class DownloadedFile:
    path: Path
    size: int
    sha256: str
    verified: bool

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.size, "sha256": self.sha256, "verified": self.verified}


@dataclass(frozen=True)
class DownloadResult:
    """The verified model in the library; ``path`` is the file to open."""

    plan: DownloadPlan
    files: tuple[DownloadedFile, ...]
    #: Sentences for the user: a different file kept where this one would have gone, and where it went.
    notes: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return self.files[0].path

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def verified(self) -> bool:
        return all(f.verified for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """``path``, ``bytes``, ``sha256`` (of the file to open) and ``verified``, plus every shard."""
        return {"path": str(self.path), "bytes": self.bytes, "sha256": self.files[0].sha256,
                "verified": self.verified, "files": [f.to_dict() for f in self.files],
                "notes": list(self.notes)}


class _Retryable(Exception):
    """A transient failure: dropped connection, timeout, 5xx, 429."""


class AlreadyDownloading(CamelidError):
    """Another Camelid (process or thread) is writing the same part file."""


def download(plan: DownloadPlan, *, progress: ProgressCallback | None = None,
             cancel: threading.Event | None = None, token: str | None = None,
             retry: RetryPolicy | None = None, wait: bool = True) -> DownloadResult:
    """Fetch every file of a plan, verify each against its LFS sha256, then move all into the library.

    One writer per part file: when another download (another process, or
    another thread) is fetching the same file, this one waits for it
    (progress state ``waiting``) and then reports the file it left, verified;
    with ``wait=False`` it raises AlreadyDownloading instead.

    Nothing in the library is ever replaced or deleted: a different file
    already at a destination is left alone and this one is saved beside it
    (see :func:`local_layouts`, and the result's ``notes``).

    Raises DownloadCancelled (the part files stay, a later call resumes),
    ChecksumError (the bad part is deleted), and RemoteError/NotFoundError/
    GatedRepoError for failures that retrying cannot fix.
    """
    cancel = cancel or threading.Event()
    retry = retry or RetryPolicy()
    meter = _Meter(plan, progress)
    locks = [PartLock(part) for part in sorted({f.part for f in plan.files})]
    try:
        _acquire(locks, plan, meter, cancel, wait=wait)
        result = _download_locked(plan, meter, cancel, token, retry)
    finally:
        for lock in locks:
            lock.release()
        for lock in locks:
            _prune_empty(lock.path.parent)
    meter.state = "done"
    meter.report(force=True)
    return result


def _acquire(locks: Sequence[PartLock], plan: DownloadPlan, meter: _Meter, cancel: threading.Event,
             *, wait: bool) -> None:
    """Take every part lock, in a fixed order (two downloads of one split model cannot deadlock)."""
    for lock in locks:
        while not lock.try_acquire():
            pid = lock.holder_pid()
            who = f"another Camelid (pid {pid})" if pid and pid != os.getpid() else "another Camelid download"
            if not wait:
                raise AlreadyDownloading(f"{plan.name} is already being downloaded by {who}.",
                                         "Wait for that download to finish; it saves the same file.")
            meter.state, meter.message = "waiting", f"already being downloaded by {who}; waiting for it"
            part = lock.path.with_name(lock.path.name.removesuffix(".lock"))
            with contextlib.suppress(OSError):
                meter.current = part.stat().st_size  # the other writer's progress
            meter.report()
            if cancel.wait(PROGRESS_INTERVAL):
                raise DownloadCancelled("Stopped waiting; the other download of this file goes on.",
                                        "Run the same download again to wait for it or resume it.")
    meter.message, meter.current = None, 0


def _download_locked(plan: DownloadPlan, meter: _Meter, cancel: threading.Event, token: str | None,
                     retry: RetryPolicy) -> DownloadResult:
    refused: list[str] = []
    notes: list[str] = []
    for planned in plan.files:
        _adopt_legacy_part(plan.repo_id, planned)
    while True:
        # The disk as it is now, under the locks: the writer we waited for may have left the files.
        plan = _refreshed(plan, refused)
        meter.plan, meter.done_before, meter.current = plan, 0, 0
        digests: dict[int, tuple[str, bool, int]] = {}
        clash = _verify_installed(plan, meter, cancel, digests)
        if clash is None:
            for index, planned in enumerate(plan.files):
                if planned.installed:
                    continue
                meter.file, meter.file_index, meter.current = planned.path, index, 0
                digests[index] = _FileFetch(plan, planned, meter, cancel, retry, token).run()
                meter.done_before += planned.size
                meter.current = 0
            # Only now, with every shard verified, does anything enter the library.
            meter.state = "moving"
            meter.report(force=True)
            clash = _place_all(plan, digests)
        if clash is None:
            break
        refused.append(plan.layout)
        notes.append(f"{clash} holds a different file of the same name (another revision, or a damaged "
                     "copy); it was left as it is.")
    if refused:
        notes.append(f"{plan.name} was saved in {plan.destination.parent}.")
    files = tuple(DownloadedFile(f.destination, digests[i][2], digests[i][0], digests[i][1])
                  for i, f in enumerate(plan.files))
    return DownloadResult(plan=plan, files=files, notes=tuple(notes))


def _verify_installed(plan: DownloadPlan, meter: _Meter, cancel: threading.Event,
                      digests: dict[int, tuple[str, bool, int]]) -> Path | None:
    """Hash the files already in place; the first that is not the wanted file is returned."""
    for index, planned in enumerate(plan.files):
        if not planned.installed:
            continue
        meter.file, meter.file_index, meter.current = planned.path, index, 0
        meter.state = "checking"
        digest = _hash_file(planned.destination, meter, cancel)
        if planned.sha256 is not None and digest != planned.sha256:
            return planned.destination
        digests[index] = (digest, planned.sha256 is not None, planned.size)
        meter.done_before += planned.size
        meter.current = 0
    return None


def _place_all(plan: DownloadPlan, digests: dict[int, tuple[str, bool, int]]) -> Path | None:
    """Move the verified parts to their destinations without replacing anything; on a clash
    (a file appeared there since the plan), the path that is taken."""
    fresh = [(i, f) for i, f in enumerate(plan.files) if not f.installed]
    for _, planned in fresh:
        if _state(planned.destination, -1) != "missing":
            return planned.destination
    for _, planned in fresh:
        try:
            _place(planned.part, planned.destination)
        except FileExistsError:
            return planned.destination
        _sidecar_path(planned.part).unlink(missing_ok=True)
    return None


def _place(part: Path, destination: Path) -> None:
    """Rename without ever replacing: a hard link fails when the destination exists."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(part, destination)
    except FileExistsError:
        raise
    except OSError:
        # A file system without hard links (FAT, some network shares). Windows' rename refuses an
        # existing destination; elsewhere the part lock keeps other Camelids away from this path.
        if os.path.lexists(destination):
            raise FileExistsError(errno.EEXIST, "exists", str(destination)) from None
        os.rename(part, destination)
        return
    part.unlink()


def _adopt_legacy_part(repo_id: str, planned: PlannedFile) -> None:
    """A part left by a Camelid that kept only base names: move it to the per-path name if its
    sidecar says it is this file (resume instead of starting over)."""
    legacy = _part_folder(repo_id) / f"{PurePosixPath(planned.path).name}.part"
    if legacy == planned.part or planned.part.exists() or not legacy.is_file():
        return
    sidecar = _read_sidecar(legacy)
    if sidecar is None or sidecar.get("path") != planned.path:
        return
    with contextlib.suppress(OSError):
        _place(legacy, planned.part)
        _place(_sidecar_path(legacy), _sidecar_path(planned.part))


def _hash_file(path: Path, meter: _Meter, cancel: threading.Event) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK_SIZE * 8):
            digest.update(block)
            meter.current += len(block)
            meter.report()
            if cancel.is_set():
                raise DownloadCancelled("Download cancelled.", "Run it again to resume.")
    return digest.hexdigest()


def _prune_empty(folder: Path) -> None:
    """Remove empty part folders up to (not including) the downloads folder."""
    root = paths.downloads_dir()
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _sidecar_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_sidecar(part: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_sidecar_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == SIDECAR_VERSION else None


def _write_sidecar(part: Path, data: dict[str, Any]) -> None:
    target = _sidecar_path(part)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"version": SIDECAR_VERSION, **data}, indent=2), encoding="utf-8")
    os.replace(tmp, target)


class _BodyReader(threading.Thread):
    """Copies a response body into the part file; nothing else (the caller hashes and reports)."""

    def __init__(self, response: Any, fd: int, limit: int) -> None:
        super().__init__(name="camelid-download-body", daemon=True)
        self.response = response
        self.fd = fd
        self.limit = limit  # the bytes the Hub announced for this range: never write more
        self.overflow = False  # the server sent more than that
        self.received = 0
        self.error: BaseException | None = None
        self.news = threading.Event()
        self._stopping = False

    def run(self) -> None:
        try:
            signalled = 0
            for piece in self.response.iter_raw():
                if self._stopping:
                    break
                if len(piece) > self.limit - self.received:
                    self.overflow = True
                    piece = piece[: self.limit - self.received]
                view = memoryview(piece)
                while view:
                    written = os.write(self.fd, view)
                    view = view[written:]
                self.received += len(piece)
                if self.overflow:
                    break
                if self.received - signalled >= CHUNK_SIZE:
                    signalled = self.received
                    self.news.set()
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
        finally:
            with contextlib.suppress(Exception):
                self.response.close()
            self.news.set()

    def abort(self) -> None:
        """Unblock a read stuck on a stalled socket: shut the socket down under it."""
        self._stopping = True
        stream = self.response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _FileFetch:
    """One file: HEAD for metadata, resume or restart the part, GET with Range, hash, verify."""

    def __init__(self, plan: DownloadPlan, planned: PlannedFile, meter: _Meter,
                 cancel: threading.Event, retry: RetryPolicy, token: str | None) -> None:
        self.plan, self.planned, self.meter, self.cancel, self.retry = plan, planned, meter, cancel, retry
        self.token = hub.resolve_token(token)
        self.part = planned.part
        self.url = hub.file_url(plan.repo_id, planned.path, revision=plan.revision)
        self.size = planned.size
        self.expected_sha = planned.sha256
        self.digest = hashlib.sha256()
        self.hashed = 0

    # -- the attempt loop --

    def run(self) -> tuple[str, bool, int]:
        """Fetch, hash and verify the part: (sha256, verified against the Hub's, size)."""
        self.part.parent.mkdir(parents=True, exist_ok=True)
        failures = 0
        while True:
            self._check_cancel()
            before = self._on_disk()
            try:
                self._attempt()
                break
            except _Retryable as exc:
                failures = 1 if self._on_disk() > before else failures + 1
                if failures >= self.retry.attempts:
                    raise RemoteError(
                        f"Downloading {self.planned.path} kept failing ({exc}).",
                        "The partial file is kept: run the same command later to resume.") from exc
                self._pause(self.retry.delay(failures), f"{exc}; retrying")
        digest, verified = self._verify()
        return digest, verified, self.size

    def _attempt(self) -> None:
        meta = self._head()
        self._prepare_part(meta)
        offset = self._on_disk()
        self.meter.current = offset
        if offset < self.size:
            self._fetch_body(meta, offset)
        self._hash_until(self.size)

    def _head(self) -> Any:
        from huggingface_hub import get_hf_file_metadata

        self.meter.state = "checking"
        self.meter.report(force=True)
        try:
            meta = get_hf_file_metadata(self.url, token=self.token or False, timeout=self.retry.connect_timeout,
                                        endpoint=hub.endpoint())
        except Exception as exc:
            raise self._classify(exc) from exc
        if meta.size is not None and meta.size != self.size:
            if _is_commit(self.plan.revision):
                # A file at one commit cannot change: one of the two answers is false.
                raise RemoteError(
                    f"The Hub lists {self.planned.path} at {self.size} bytes but announces {meta.size} "
                    "when asked for it; nothing was downloaded.",
                    "Try again later; if it persists, the mirror (HF_ENDPOINT) is answering inconsistently.")
            # A branch moved since the plan: the new file is what we fetch, if the disk holds it.
            self._check_disk(meta.size)
            self.size = meta.size
        if meta.etag and len(meta.etag) == 64 and all(c in "0123456789abcdef" for c in meta.etag):
            self.expected_sha = meta.etag  # the LFS sha256 of the file as it is now
        return meta

    def _check_disk(self, size: int) -> None:
        need = size - min(self._on_disk(), size)
        free = disk_free_bytes(self.part)
        if free < need + disk_margin(size):
            raise DiskSpaceError(
                f"{self.planned.path} is now {human_bytes(size)} on the Hub: {human_bytes(need)} more is "
                f"needed (plus {human_bytes(disk_margin(size))} kept free) but only {human_bytes(free)} is free.",
                "Free some space, or move the models folder to a bigger disk with CAMELID_MODELS_DIR.")

    def _prepare_part(self, meta: Any) -> None:
        """Resume a part only if it belongs to the very same remote file; else start over."""
        identity = {"repo_id": self.plan.repo_id, "path": self.planned.path, "etag": meta.etag,
                    "size": self.size, "sha256": self.expected_sha}
        sidecar = _read_sidecar(self.part)
        same = sidecar is not None and all(sidecar.get(k) == v for k, v in identity.items())
        if not same or not self.part.is_file() or self.part.stat().st_size > self.size:
            self.part.unlink(missing_ok=True)
            self.part.touch()
            self._reset_hash()
        _write_sidecar(self.part, {**identity, "commit": meta.commit_hash, "url": self.url})

    def _fetch_body(self, meta: Any, offset: int) -> None:
        import httpx2
        from huggingface_hub.utils import get_session

        headers = hub.auth_headers(self.token)
        headers["Accept-Encoding"] = "identity"
        location = meta.location or self.url
        if _origin(location) != _origin(self.url):
            # A signed CDN URL: the Hub token must not leave the Hub (huggingface_hub does the same).
            headers.pop("authorization", None)
            headers.pop("Authorization", None)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        timeout = httpx2.Timeout(self.retry.read_timeout, connect=self.retry.connect_timeout)
        self.meter.state = "downloading"
        try:
            request = get_session().build_request("GET", location, headers=headers, timeout=timeout)
            response = get_session().send(request, stream=True, follow_redirects=True)
        except Exception as exc:
            raise self._classify(exc) from exc
        try:
            if response.status_code >= 400:
                response.read()
                from huggingface_hub.utils import hf_raise_for_status

                try:
                    hf_raise_for_status(response)
                except Exception as exc:
                    raise self._classify(exc) from exc
            if offset and response.status_code == 200:
                # The server ignored our Range: take the whole body, from byte zero.
                os.truncate(self.part, 0)
                self._reset_hash()
                offset = 0
                self.meter.current = 0
            elif offset and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                raise _Retryable(f"the server answered range {response.headers.get('Content-Range')!r}")
            length = response.headers.get("Content-Length")
            if length is not None and (not length.strip().isdigit() or int(length) > self.size - offset):
                raise self._oversize(f"announces {length.strip()[:20]} bytes", offset)
        except BaseException:
            response.close()
            raise
        self._stream(response, offset)

    def _stream(self, response: Any, offset: int) -> None:
        fd = os.open(self.part, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0))
        reader = _BodyReader(response, fd, self.size - offset)
        reader.start()
        network_base = self.meter.network_bytes
        try:
            while True:
                done = not reader.is_alive()
                on_disk = offset + reader.received
                self.meter.network_bytes = network_base + reader.received
                self.meter.current = on_disk
                if self.hashed < on_disk:
                    self._hash_some(min(on_disk, self.hashed + CHUNK_SIZE * 8))
                elif done:
                    break
                else:
                    reader.news.wait(PROGRESS_INTERVAL)
                    reader.news.clear()
                self.meter.report()
                if self.cancel.is_set():
                    raise DownloadCancelled("Download cancelled.",
                                            "The partial file is kept: run the same download again to resume.")
        except BaseException:
            reader.abort()
            reader.join(timeout=10)
            raise
        finally:
            self.meter.network_bytes = network_base + reader.received
            # A reader still blocked after abort keeps its fd: closing it could let a new file
            # reuse the number and receive the late write.
            if not reader.is_alive():
                os.close(fd)
        if reader.overflow:
            # Nothing of an answer that overran is trusted: the part goes back to where it began.
            with contextlib.suppress(OSError):
                os.truncate(self.part, offset)
            raise self._oversize("kept sending past them", offset)
        if reader.error is not None:
            raise self._classify(reader.error) from reader.error
        if offset + reader.received < self.size:
            raise _Retryable(f"the connection closed after {offset + reader.received} of {self.size} bytes")

    def _oversize(self, what: str, offset: int) -> RemoteError:
        return RemoteError(
            f"The server {what} where the Hub announced {self.size - offset} bytes of {self.planned.path}; "
            f"the download was stopped at the announced size and refused.",
            "Try again later; if it persists, the mirror (HF_ENDPOINT) is misbehaving: use another.")

    # -- hashing and verification --

    def _on_disk(self) -> int:
        try:
            return self.part.stat().st_size
        except OSError:
            return 0

    def _reset_hash(self) -> None:
        self.digest = hashlib.sha256()
        self.hashed = 0

    def _hash_some(self, upto: int) -> None:
        with self.part.open("rb") as f:
            f.seek(self.hashed)
            while self.hashed < upto:
                block = f.read(min(CHUNK_SIZE * 8, upto - self.hashed))
                if not block:
                    break
                self.digest.update(block)
                self.hashed += len(block)

    def _hash_until(self, end: int) -> None:
        if self.hashed < end:
            self.meter.state = "verifying"
        while self.hashed < end:
            before = self.hashed
            self._hash_some(min(end, self.hashed + CHUNK_SIZE * 8))
            if self.hashed == before:
                break
            self.meter.report()
            self._check_cancel()

    def _verify(self) -> tuple[str, bool]:
        size = self._on_disk()
        self._hash_until(size)
        digest = self.digest.hexdigest()
        if size != self.size:
            self._discard()
            raise ChecksumError(f"{self.planned.path} arrived with {size} bytes instead of {self.size}; "
                                "the partial file was deleted.", "Run the same download again to retry.")
        if self.expected_sha is None:
            return digest, False
        if digest != self.expected_sha:
            self._discard()
            raise ChecksumError(
                f"{self.planned.path} is corrupted: its sha256 does not match the Hub's "
                f"({digest[:12]}... instead of {self.expected_sha[:12]}...). It was deleted and "
                "nothing was added to the library.",
                "Run the same download again to retry; if it fails again, the mirror or the connection "
                "is damaging data.")
        return digest, True

    def _discard(self) -> None:
        self.part.unlink(missing_ok=True)
        _sidecar_path(self.part).unlink(missing_ok=True)

    # -- helpers --

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise DownloadCancelled("Download cancelled.",
                                    "The partial file is kept: run the same download again to resume.")

    def _pause(self, seconds: float, message: str) -> None:
        """Back off before a retry, still reporting (speed falls) and still cancellable."""
        self.meter.state, self.meter.message = "retrying", message
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.meter.report()
            self._check_cancel()
            self.cancel.wait(min(left, PROGRESS_INTERVAL))
        self.meter.message = None
        self._check_cancel()

    def _classify(self, exc: BaseException) -> BaseException:
        """Transient failures retry; anything a retry cannot fix becomes a user-facing error."""
        if isinstance(exc, (CamelidError, _Retryable)):
            return exc
        import httpx2
        from huggingface_hub import errors as hf_errors

        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, hf_errors.HfHubHTTPError) and status is not None:
            if status >= 500 or status in (408, 429):
                return _Retryable(f"the server answered {status}")
            return hub.translate_error(exc, repo_id=self.plan.repo_id, filename=self.planned.path)
        if isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError)):
            return _Retryable(type(exc).__name__)
        if isinstance(exc, OSError) and not isinstance(exc, httpx2.HTTPError):
            # A local failure (the part file), not the network's.
            if exc.errno == errno.ENOSPC:
                return DiskSpaceError(f"The disk filled up while downloading {self.planned.path}.",
                                      "Free some space, then run the same download again to resume.")
            return CamelidError(f"Could not write {self.part}: {exc.strerror or exc}.",
                                "Check that the models folder is writable, then run the download again.")
        return hub.translate_error(exc, repo_id=self.plan.repo_id, filename=self.planned.path)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


# -- the queue ---------------------------------------------------------------------------


@dataclass
class QueuedDownload:
    """A download waiting in, or taken from, the queue."""

    id: int
    plan: DownloadPlan
    state: str = "waiting"  # waiting | active | done | failed | cancelled
    cancel: threading.Event = field(default_factory=threading.Event)
    result: DownloadResult | None = None
    error: CamelidError | None = None


class DownloadQueue:
    """Downloads in order: ``max_active`` at a time (one by default), the rest waiting, reorderable.

    The queue decides what runs next; whoever drives it (the CLI in a loop, the
    GUI from worker threads) calls :meth:`run_next` and gets the job's result.
    """

    def __init__(self, *, max_active: int = 1) -> None:
        self.max_active = max_active
        self._jobs: list[QueuedDownload] = []
        self._next_id = 1
        self._lock = threading.Lock()

    def add(self, plan: DownloadPlan) -> QueuedDownload:
        """Queue a planned download at the end."""
        with self._lock:
            job = QueuedDownload(id=self._next_id, plan=plan)
            self._next_id += 1
            self._jobs.append(job)
            return job

    def jobs(self) -> list[QueuedDownload]:
        with self._lock:
            return list(self._jobs)

    def waiting(self) -> list[QueuedDownload]:
        return [j for j in self.jobs() if j.state == "waiting"]

    def active(self) -> list[QueuedDownload]:
        return [j for j in self.jobs() if j.state == "active"]

    def move(self, job_id: int, index: int) -> None:
        """Put a waiting job at ``index`` among the waiting jobs (0: next to run)."""
        with self._lock:
            job = self._find(job_id)
            if job.state != "waiting":
                raise CamelidError("Only a waiting download can be moved.", "Cancel it and queue it again.")
            waiting = [j for j in self._jobs if j.state == "waiting" and j is not job]
            index = max(0, min(index, len(waiting)))
            waiting.insert(index, job)
            others = [j for j in self._jobs if j.state != "waiting"]
            self._jobs = others + waiting

    def reorder(self, job_ids: Iterable[int]) -> None:
        """Set the order of the waiting jobs (ids not listed keep their relative order, after)."""
        for position, job_id in enumerate(job_ids):
            self.move(job_id, position)

    def cancel(self, job_id: int) -> None:
        """Cancel a job: a waiting one leaves the queue, an active one stops (its part is kept)."""
        with self._lock:
            job = self._find(job_id)
            job.cancel.set()
            if job.state == "waiting":
                job.state = "cancelled"

    def take_next(self) -> QueuedDownload | None:
        """Mark the next waiting job active, if fewer than ``max_active`` are running."""
        with self._lock:
            if sum(1 for j in self._jobs if j.state == "active") >= self.max_active:
                return None
            for job in self._jobs:
                if job.state == "waiting":
                    job.state = "active"
                    return job
        return None

    def run_next(self, *, progress: Callable[[QueuedDownload, DownloadProgress], None] | None = None,
                 token: str | None = None, retry: RetryPolicy | None = None) -> QueuedDownload | None:
        """Run the next job to completion (or failure); None when nothing may start."""
        job = self.take_next()
        if job is None:
            return None
        report = (lambda p: progress(job, p)) if progress else None
        try:
            job.result = download(job.plan, progress=report, cancel=job.cancel, token=token, retry=retry)
            job.state = "done"
        except DownloadCancelled as exc:
            job.state, job.error = "cancelled", exc
        except CamelidError as exc:
            job.state, job.error = "failed", exc
        except BaseException as exc:
            # A bug or an interrupt: the job must not look active forever; the caller sees the exception.
            job.state = "failed"
            job.error = CamelidError(f"The download stopped unexpectedly ({type(exc).__name__}).",
                                     "Run it again; the partial file is kept.")
            raise
        return job

    def run(self, **kwargs: Any) -> list[QueuedDownload]:
        """Run every waiting job in order, one after another."""
        finished = []
        while (job := self.run_next(**kwargs)) is not None:
            finished.append(job)
        return finished

    def _find(self, job_id: int) -> QueuedDownload:
        for job in self._jobs:
            if job.id == job_id:
                return job
        raise CamelidError(f"No download with id {job_id} in the queue.", "List the queue to see the ids.")
