"""The download queue as the window sees it: core's DownloadQueue driven through workers.

One `Downloads` object per window, shared by the wizard and the Models page.
Planning (Hub metadata, disk space, fit) and downloading run off the GUI
thread; the queue runs one download at a time and starts the next when one
ends. Pausing is cancelling: the part file stays and a resume re-plans, which
picks up the bytes already on disk (core/downloads.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.core.errors import WontFitError
from app.core.models import (
    DownloadPlan,
    DownloadProgress,
    DownloadQueue,
    QuantFile,
    QueuedDownload,
    plan_download,
)
from app.ui.workers import Job, run_job


@dataclass
class Entry:
    """One row of the queue: the core job plus what the window needs to show and resume it."""

    quant: QuantFile
    job: QueuedDownload | None = None
    progress: DownloadProgress | None = None
    #: planning | waiting | active | done | failed | cancelled
    state: str = "planning"
    error: str | None = None
    #: Refused because the model does not fit here: the window offers "Download anyway" (with a confirm).
    no_fit: bool = False

    @property
    def name(self) -> str:
        return self.quant.name

    @property
    def path(self) -> Any:
        return self.job.result.path if self.job and self.job.result else None


class Downloads(QObject):
    """Queue downloads; signals say what changed. Entries are never touched from worker threads."""

    changed = Signal()  # rows added, removed, or state changed
    progressed = Signal(int)  # row index whose progress moved
    finished = Signal(object)  # Entry that completed (state done)
    failed = Signal(object, str)  # Entry and the sentence saying why

    def __init__(self, *, judge: Any = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.queue = DownloadQueue(max_active=1)
        self.entries: list[Entry] = []
        #: The fit engine's judge (core.downloads.judge_remote_fit), or None to skip fit checks.
        self.judge = judge
        self._running: Job | None = None

    # --- adding -----------------------------------------------------------------
    def add(self, quant: QuantFile, *, allow_no_fit: bool = False) -> Entry:
        """Plan `quant` (off the GUI thread), then queue it."""
        entry = Entry(quant)
        self.entries.append(entry)
        self.changed.emit()
        self._plan(entry, allow_no_fit=allow_no_fit)
        return entry

    def _plan(self, entry: Entry, *, allow_no_fit: bool = False) -> None:
        entry.state, entry.error = "planning", None

        def planned(plan: DownloadPlan | WontFitError) -> None:
            if isinstance(plan, WontFitError):
                # The window has no flags: it offers the action itself (ModelsView.download_anyway).
                entry.no_fit = True
                refused(f"{plan.message} Choose a smaller quant, or press “Download anyway…” to fetch it "
                        "all the same.")  # the window's action, not the CLI's --force
                return
            entry.job = self.queue.add(plan)
            entry.state = "waiting"
            self.changed.emit()
            self._pump()

        def refused(message: str) -> None:
            entry.state, entry.error = "failed", message
            self.changed.emit()
            self.failed.emit(entry, message)

        judge = self.judge
        earlier = entry.job.plan.fit if entry.job is not None else None
        if earlier is not None:
            # Resuming the same file: its fit was judged already; reading the
            # header again would re-fetch megabytes for the same answer.
            judge = lambda _quant: earlier  # noqa: E731
        entry.no_fit = False

        def plan() -> DownloadPlan | WontFitError:
            try:
                return plan_download(entry.quant, judge=judge, allow_no_fit=allow_no_fit)
            except WontFitError as exc:
                return exc  # told apart on the GUI thread (entries are never touched from workers)

        run_job(plan, result=planned, error=refused)

    # --- running ------------------------------------------------------------------
    def _pump(self) -> None:
        """Start the next waiting download when none is running."""
        if self._running is not None:
            return
        queue = self.queue

        def run_next(progress) -> QueuedDownload | None:
            return queue.run_next(progress=lambda job, p: progress((job.id, p)))

        self._running = run_job(run_next, progress=self._progress, result=self._ended,
                                error=self._crashed)

    def _entry_for(self, job_id: int) -> Entry | None:
        return next((e for e in self.entries if e.job is not None and e.job.id == job_id), None)

    def _progress(self, update: tuple[int, DownloadProgress]) -> None:
        job_id, progress = update
        entry = self._entry_for(job_id)
        if entry is None:
            return
        if entry.state != "active":
            entry.state = "active"
            self.changed.emit()
        entry.progress = progress
        self.progressed.emit(self.entries.index(entry))

    def _ended(self, job: QueuedDownload | None) -> None:
        self._running = None
        if job is None:
            return
        entry = self._entry_for(job.id)
        if entry is not None:
            entry.state = job.state
            if job.state == "failed":
                entry.error = str(job.error)
            self.changed.emit()
            if job.state == "done":
                self.finished.emit(entry)
            elif job.state == "failed":
                self.failed.emit(entry, entry.error or "The download failed.")
        self._pump()

    def _crashed(self, message: str) -> None:
        # run_next catches CamelidError itself; this is only for the unexpected.
        self._running = None
        for entry in self.entries:
            if entry.state == "active":
                entry.state, entry.error = "failed", message
                self.failed.emit(entry, message)
        self.changed.emit()

    # --- controls -----------------------------------------------------------------
    def cancel(self, entry: Entry) -> None:
        """Stop (or unqueue) a download; its part file stays, so `resume` continues it."""
        if entry.job is not None and entry.state in ("waiting", "active"):
            self.queue.cancel(entry.job.id)
            if entry.state == "waiting":
                entry.state = "cancelled"
                self.changed.emit()

    def resume(self, entry: Entry, *, allow_no_fit: bool = False) -> None:
        """Plan again and queue: the bytes already on disk are kept."""
        if entry.state in ("cancelled", "failed"):
            entry.progress = None
            self.changed.emit()
            self._plan(entry, allow_no_fit=allow_no_fit)

    def remove(self, entry: Entry) -> None:
        if entry.state in ("done", "failed", "cancelled"):
            self.entries.remove(entry)
            self.changed.emit()

    def busy(self) -> bool:
        return any(e.state in ("planning", "waiting", "active") for e in self.entries)

    def shutdown(self) -> None:
        """Stop everything (window closing); part files stay for next time."""
        for entry in self.entries:
            self.cancel(entry)
        if self._running is not None:
            self._running.done.wait(10)
