"""The Documents page, and the pieces the Chat page shares with it: indexing with progress, attachments.

Collections of files (app/core/docs) that chats can draw on, with citations.
Everything that reads files, embeds or writes the index runs as a Job on the
engine thread (the embedding model belongs to it, as the chat model does);
listings and removals run on the pool. The index is the window's one
`DocIndex` (EngineHost.docs_index). This file only arranges widgets and
shows what core reports; the retrieval itself is app/core/docs/answer.py.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.errors import CamelidError
from app.ui.state import AppState
from app.ui.widgets.common import Card, Notice, subtle, title
from app.ui.widgets.text_prompt import ask_text
from app.ui.wording import window_sentence
from app.ui.workers import Job, run_job

#: The setting that names the embedding model (app/core/settings.py).
EMBEDDING_SETTING = "embedding_model"
NO_EMBEDDER_NOTE = (f"No embedding model is set (the “{EMBEDDING_SETTING}” setting), so documents are searched "
                    "by words only. To search by meaning too, download an embedding model (for example "
                    "all-MiniLM-L6-v2 or Qwen3-Embedding-0.6B), name it or its .gguf file below and press "
                    "Save; collections indexed before keep words-only passages until added again.")
DEFAULT_COLLECTION = "default"
DOC_COLUMNS = ("File", "Pages", "Passages", "State")
#: The file dialog's filter: the suffixes the extractor reads (app/core/docs/extract.py).
_ANY = "All files (*)"

#: Terminal hints in core's documents sentences, as this window says them.
_HINTS = tuple((re.compile(p), r) for p, r in (
    (r"Add files to it first: camelid docs add PATH --collection NAME\.",
     "Add files to it on the Documents page."),
    (r"Use --embedder (\S+), or remove the collection and add its files again with the new model\.",
     rf"Set “{EMBEDDING_SETTING}” back to \1, or remove the collection and add its files again."),
    (r"Pass --embedder MODEL, or search with --mode lexical\.", f"Set “{EMBEDDING_SETTING}” in Settings."),
))


def sentence(message: str) -> str:
    """A core sentence with its command-line hints turned into the window's own places."""
    message = window_sentence(message)
    for pattern, replacement in _HINTS:
        message = pattern.sub(replacement, message)
    return message


def file_filter() -> str:
    from app.core.docs.extract import SUPPORTED_SUFFIXES

    patterns = " ".join(f"*{s}" for s in sorted(SUPPORTED_SUFFIXES))
    return f"Documents ({patterns});;{_ANY}"


def count(n: int, word: str) -> str:
    """"1 passage", "1,024 passages"."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def duration(seconds: float | None) -> str:
    """"about 12 s", "about 3 min"; "" when unknown."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    return f"about {round(seconds / 60)} min"


def progress_text(p: Any) -> str:
    """"3/12 files · 140 passages · about 20 s left · report.pdf"."""
    parts = [f"{p.files_done}/{p.files_total} files", count(p.chunks, "passage")]
    eta = duration(p.eta_s)
    if eta and p.files_done < p.files_total:
        parts.append(f"{eta} left")
    if p.current:
        parts.append(str(p.current))
    return " · ".join(parts)


def report_text(report: Any) -> str:
    """One sentence for an IndexReport: what was added, how many passages, whether it was cancelled."""
    parts = [f"{len(report.added)} added"]
    if report.updated:
        parts.append(f"{len(report.updated)} updated")
    if report.unchanged:
        parts.append(f"{len(report.unchanged)} unchanged")
    if report.removed:
        parts.append(f"{len(report.removed)} removed")
    if report.failed:
        parts.append(f"{len(report.failed)} could not be read")
    text = f"{', '.join(parts)}; {count(report.chunks, 'new passage')} in {report.seconds:.1f} s."
    if report.cancelled:
        text = "Cancelled: what was indexed before stays. " + text
    if report.lexical_only:
        text += " Indexed for word search only (no embedding model)."
    return text


def problems_text(report: Any) -> str:
    """The files that could not be read, one sentence each."""
    return "\n".join(sentence(problem) for _path, problem in report.failed)


# -- work that runs on the engine thread ------------------------------------------------------
def index_work(host: Any, name: str, paths: Sequence[Path | str] | None, *, setting: str,
               private: bool = False) -> Callable[..., Any]:
    """A job body: add `paths` to the collection `name` (None: re-scan it), with the embedding model.

    Runs on the engine thread: the embedding model is loaded there, once (EngineHost.embedding).
    """

    def run(progress: Any, cancel: Any) -> Any:
        from app.core.docs.indexer import add_paths, refresh

        index = host.docs_index()
        existing = next((c for c in index.collections(private=True) if c.name.lower() == name.lower()), None)
        embedding = host.embedding(setting, existing.embedder if existing else None)
        if cancel.is_set():
            return None
        if paths is None:
            return refresh(index, name, embedding=embedding, progress=progress, cancel=cancel)
        return add_paths(index, name, list(paths), embedding=embedding, progress=progress, cancel=cancel,
                         private=private)

    return run


def documents_augment(host: Any, names: Sequence[str], setting: str, *, reply_tokens: int | None = None) -> Any:
    """The `augment` for a reply that draws on the collections `names` (attachments included).

    Called on the engine thread by send_message: it opens the collections, loads the embedding
    model they were indexed with (once), and lets core's DocumentChat choose the passages.
    """
    names = list(names)

    def augment(messages: list[dict[str, Any]]) -> Any:
        from app.core.docs.answer import REPLY_TOKENS, DocumentChat

        index = host.docs_index()
        wanted = None
        for name in names:
            try:
                collection = index.collection(name)
            except CamelidError:
                continue
            if collection.embedder:
                wanted = collection.embedder
                break
        embedding, problem = None, None
        if wanted:
            try:
                embedding = host.embedding(setting, wanted)
            except CamelidError as exc:  # the passages are still found by their words
                problem = f"Searched by words only: the embedding model could not be loaded ({exc})"
        chat = DocumentChat(index, names, host.engine, embedding=embedding,
                            reply_tokens=reply_tokens or REPLY_TOKENS)
        out = chat(messages)
        if problem:
            out.notices.append(problem)
        return out

    return augment


@dataclass
class Attachment:
    """A file or folder attached to a conversation, and what became of it."""

    path: str
    documents: int
    passages: int
    problems: list[str]

    @property
    def name(self) -> str:
        return Path(self.path).name or self.path


def attachments_collection(conversation_id: int) -> str:
    """The private collection that holds a conversation's attachments (as `camelid chat` /attach does)."""
    return f"chat-{conversation_id}"


def index_exists() -> bool:
    """Whether the document index file exists: listings never create it (nor fail on read-only storage)."""
    from app.core.docs.store import default_path

    return default_path().exists()


def list_attachments(host: Any, conversation_id: int) -> list[Attachment]:
    """The files and folders attached to a conversation (pool thread)."""
    if not index_exists():
        return []
    index = host.docs_index()
    try:
        collection = index.collection(attachments_collection(conversation_id))
    except CamelidError:
        return []
    docs = index.documents(collection)
    out = []
    for path, _source_id in index.sources(collection):
        mine = [d for d in docs if d.path == path or d.path.startswith(path.rstrip(os.sep) + os.sep)]
        out.append(Attachment(path=path, documents=len(mine), passages=sum(d.chunks for d in mine),
                              problems=[d.problem for d in mine if d.problem]))
    return out


def detach(host: Any, conversation_id: int, path: str) -> int:
    """Forget one attached file or folder (its passages go; the file stays)."""
    index = host.docs_index()
    collection = index.collection(attachments_collection(conversation_id))
    return index.remove_source(collection, path)


def forget_attachments(host: Any, conversation_id: int) -> None:
    """Drop a deleted conversation's attachments collection, if it had one."""
    if not index_exists():
        return
    index = host.docs_index()
    with contextlib.suppress(CamelidError):
        index.remove_collection(attachments_collection(conversation_id))


def collection_names(host: Any) -> list[str]:
    """The named (not private) collections, for the Chat page's "Use documents" picker."""
    if not index_exists():
        return []
    return [c.name for c in host.docs_index().collections()]


# -- widgets ------------------------------------------------------------------------------------
class IndexProgress(QWidget):
    """Files, passages and time left of one indexing job, with Cancel; it runs the job on the engine thread.

    `done` gets the IndexReport, also when cancelled (with report.cancelled) or None when it stopped
    before the first file; `failed` a sentence.
    """

    done = Signal(object)
    failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setFixedWidth(180)
        self.bar.setFixedHeight(14)
        self.label = QLabel("")
        self.label.setProperty("subtle", True)
        self.label.setMinimumWidth(10)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(lambda _c=False: self.cancel())
        layout.addWidget(self.bar)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.cancel_button)
        self.job: Job | None = None
        self.last_progress: Any = None
        self.report: Any = None
        self.hide()

    @property
    def running(self) -> bool:
        return self.job is not None

    def start(self, host: Any, work: Callable[..., Any], *, what: str = "Indexing") -> Job:
        """Run `work(progress=, cancel=)` (see index_work) on the engine thread."""
        kept: dict[str, Any] = {}

        def run(progress: Any, cancel: Any) -> Any:
            kept["report"] = work(progress=progress, cancel=cancel)
            return kept["report"]

        self.last_progress = None
        self.report = None
        self.bar.setRange(0, 0)  # busy until the files are counted (and the embedding model loaded)
        self.label.setText(f"{what}: getting ready…")
        self.cancel_button.setEnabled(True)
        self.cancel_button.show()
        self.show()
        self.job = run_job(run, progress=self._progress, result=self._finish,
                           cancelled=lambda: self._finish(kept.get("report")), error=self._fail,
                           where=host.engine_thread)
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.label.setText("Cancelling after this file…")

    def _progress(self, p: Any) -> None:
        self.last_progress = p
        self.bar.setRange(0, max(1, p.files_total))
        self.bar.setValue(min(p.files_done, p.files_total))
        self.label.setText(progress_text(p))

    def _finish(self, report: Any) -> None:
        self.job = None
        self.report = report
        self.cancel_button.hide()
        if report is None:
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
            self.label.setText("Cancelled before any file was read.")
        else:
            if not report.cancelled:
                self.bar.setRange(0, max(1, self.bar.maximum()))
                self.bar.setValue(self.bar.maximum())
            self.label.setText(report_text(report))
        self.done.emit(report)

    def _fail(self, message: str) -> None:
        self.job = None
        self.hide()
        self.failed.emit(sentence(message))


class DocsView(QWidget):
    """Collections (documents, passages, embedder), the documents of one, and adding, updating, removing."""

    #: The collections changed (added, removed, re-indexed): the Chat page's picker re-reads them.
    collections_changed = Signal()

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.host = state.engine_host()
        self.collections: list[Any] = []
        self.documents: list[Any] = []
        self._selected: str | None = None

        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 20, 24, 20)
        layout.setSpacing(12)
        head = QHBoxLayout()
        head.addWidget(title("Documents"), 1)
        self.new_button = QPushButton("New collection…")
        self.new_button.setProperty("primary", True)
        self.new_button.setToolTip("Name a collection, then choose a folder to index into it.")
        self.new_button.clicked.connect(lambda _c=False: self.new_collection())
        head.addWidget(self.new_button, 0, Qt.AlignmentFlag.AlignVCenter)
        layout.addLayout(head)
        layout.addWidget(subtle("Collections of files that chats can answer from, citing the page and heading "
                                "of each passage they use. Pick them in a chat with “Use documents”. PDF, "
                                "Word, Markdown, HTML, text and source files; everything stays on this "
                                "machine."))
        self.embed_note = Notice("warning")
        layout.addWidget(self.embed_note)
        embed_row = QHBoxLayout()
        embed_row.setSpacing(6)
        embed_row.addWidget(QLabel("Embedding model"))
        self.embed_edit = QLineEdit(self._setting())
        self.embed_edit.setPlaceholderText("a library name or .gguf path; empty: search by words only")
        self.embed_edit.setToolTip(f"The “{EMBEDDING_SETTING}” setting: the model that turns passages into "
                                   "vectors for search by meaning (also used by the local server's embeddings).")
        self.embed_edit.returnPressed.connect(self.save_embedding)
        self.embed_browse = QPushButton("Choose file…")
        self.embed_browse.clicked.connect(lambda _c=False: self.choose_embedding())
        self.embed_save = QPushButton("Save")
        self.embed_save.clicked.connect(lambda _c=False: self.save_embedding())
        embed_row.addWidget(self.embed_edit, 1)
        embed_row.addWidget(self.embed_browse)
        embed_row.addWidget(self.embed_save)
        layout.addLayout(embed_row)
        self.error = Notice("error")
        layout.addWidget(self.error)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        left = Card("Collections")
        self.list = QListWidget()
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.currentItemChanged.connect(lambda item, _prev: self._select(item))
        left.body.addWidget(self.list, 1)
        self.empty_hint = subtle("No collections yet: press “New collection…” or “Add folder…”.")
        left.body.addWidget(self.empty_hint)
        left_buttons = QHBoxLayout()
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Forget this collection and its passages (the files stay where they are).")
        self.remove_button.clicked.connect(lambda _c=False: self.remove_selected())
        left_buttons.addStretch(1)
        left_buttons.addWidget(self.remove_button)
        left.body.addLayout(left_buttons)
        splitter.addWidget(left)

        right = Card()
        self.heading = QLabel("")
        self.heading.setObjectName("SectionTitle")
        self.detail = subtle("")
        right.body.addWidget(self.heading)
        right.body.addWidget(self.detail)
        self.table = QTableWidget(0, len(DOC_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(DOC_COLUMNS))
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setWordWrap(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        right.body.addWidget(self.table, 1)
        buttons = QHBoxLayout()
        self.add_files_button = QPushButton("Add files…")
        self.add_folder_button = QPushButton("Add folder…")
        self.update_button = QPushButton("Update")
        self.update_button.setToolTip("Re-scan the files and folders: changed files are indexed again, "
                                      "deleted ones dropped.")
        self.add_files_button.clicked.connect(lambda _c=False: self.choose_files())
        self.add_folder_button.clicked.connect(lambda _c=False: self.choose_folder())
        self.update_button.clicked.connect(lambda _c=False: self.update_selected())
        buttons.addWidget(self.add_files_button)
        buttons.addWidget(self.add_folder_button)
        buttons.addStretch(1)
        buttons.addWidget(self.update_button)
        right.body.addLayout(buttons)
        splitter.addWidget(right)
        splitter.setSizes([260, 800])
        splitter.setStretchFactor(1, 1)
        layout.addWidget(splitter, 1)

        self.progress = IndexProgress()
        self.progress.done.connect(self._indexed)
        self.progress.failed.connect(self._index_failed)
        layout.addWidget(self.progress)
        self.problems = Notice("warning")
        layout.addWidget(self.problems)

        state.settings_changed.connect(lambda keys: EMBEDDING_SETTING in keys and self._show_embed_note())
        self._show_embed_note()
        self._update_buttons()
        self.setAcceptDrops(True)
        if not state.demo:
            self.refresh()

    # ------------------------------------------------------------------ listing
    def _setting(self) -> str:
        return str(self.state.settings[EMBEDDING_SETTING] or "")

    def _show_embed_note(self) -> None:
        self.embed_note.show_text("" if self._setting().strip() else NO_EMBEDDER_NOTE)
        if not self.embed_edit.hasFocus():
            self.embed_edit.setText(self._setting())

    def choose_embedding(self) -> None:
        from app import paths

        chosen, _filter = QFileDialog.getOpenFileName(self, "Choose an embedding model", str(paths.models_dir()),
                                                      "GGUF models (*.gguf);;All files (*)")
        if chosen:
            self.embed_edit.setText(chosen)
            self.save_embedding()

    def save_embedding(self, value: str | None = None) -> bool:
        """Save the embedding_model setting (used from the next indexing or question on)."""
        from app.core.settings import SettingsError

        value = (self.embed_edit.text() if value is None else value).strip()
        self.embed_edit.setText(value)
        if value == self._setting() or self.state.demo:
            return True
        settings = self.state.settings
        settings.set(EMBEDDING_SETTING, value)
        try:
            settings.save()
        except SettingsError as exc:
            self._error(str(exc))
            return False
        self.error.show_text("")
        self.state.settings_changed.emit([EMBEDDING_SETTING])
        self.state.status_message.emit(f"Embedding model: {value}." if value else
                                       "No embedding model: documents are searched by words only.")
        return True

    def refresh(self, select: str | None = None) -> Job:
        """Re-read the collections (pool thread), then the selected one's documents."""
        host = self.host

        def read() -> tuple[Any, list[Any]]:
            if not index_exists():
                return None, []
            index = host.docs_index()
            return index.notice, index.collections()

        return run_job(read, result=lambda out: self._fill(out, select), error=self._error)

    def _fill(self, out: tuple[str | None, list[Any]], select: str | None) -> None:
        notice, collections = out
        if notice:
            self.problems.show_text(notice)
        self.collections = collections
        keep = select or self._selected
        self.list.blockSignals(True)
        self.list.clear()
        chosen = None
        for c in collections:
            item = QListWidgetItem(f"{c.name}\n{count(c.documents, 'document')} · {count(c.chunks, 'passage')}\n"
                                   f"{c.embedder or 'words only'}")
            item.setData(Qt.ItemDataRole.UserRole, c.name)
            item.setToolTip("\n".join([c.name, *c.sources]))
            self.list.addItem(item)
            if keep is not None and c.name.lower() == keep.lower():
                chosen = item
        if chosen is None and self.list.count():
            chosen = self.list.item(0)
        self.list.blockSignals(False)
        self.empty_hint.setVisible(not collections)
        if chosen is not None:
            self.list.setCurrentItem(chosen)
            self._select(chosen)
        else:
            self._select(None)

    def _select(self, item: QListWidgetItem | None) -> None:
        self._selected = str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None
        collection = self.selected()
        if collection is None:
            self.heading.setText("No collection selected")
            self.detail.setText("Add files or a folder: a collection named “default” is made for them.")
            self._show_documents([])
        else:
            self.heading.setText(collection.name)
            embedder = f"searched with {collection.embedder}" if collection.embedder else \
                "searched by words only (no embedding model)"
            sources = ", ".join(collection.sources) or "no files or folders"
            self.detail.setText(f"{count(collection.documents, 'document')}, {count(collection.chunks, 'passage')}, "
                                f"{embedder}. "
                                f"From: {sources}")
            host = self.host
            if not self.state.demo:
                run_job(lambda: host.docs_index().documents(collection), result=self._show_documents,
                        error=self._error)
        self._update_buttons()

    def selected(self) -> Any:
        return next((c for c in self.collections if self._selected and c.name.lower() == self._selected.lower()),
                    None)

    def _show_documents(self, documents: list[Any]) -> None:
        self.documents = documents
        self.table.setRowCount(len(documents))
        for row, d in enumerate(documents):
            name = QTableWidgetItem(Path(d.path).name)
            name.setToolTip(d.path)
            pages = QTableWidgetItem(str(d.pages) if d.pages else "")
            passages = QTableWidgetItem(f"{d.chunks:,}")
            for item in (pages, passages):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if d.problem:
                state = QTableWidgetItem(sentence(d.problem))
            elif d.warnings:
                state = QTableWidgetItem("Indexed. " + " ".join(d.warnings))
            else:
                state = QTableWidgetItem("Indexed")
            state.setToolTip(state.text())
            for column, item in enumerate((name, pages, passages, state)):
                self.table.setItem(row, column, item)
        self.table.resizeRowsToContents()

    def _error(self, message: str) -> None:
        self.error.show_text(sentence(message))

    # ------------------------------------------------------------------ actions
    def _update_buttons(self) -> None:
        busy = self.progress.running
        has = self.selected() is not None
        for button in (self.new_button, self.add_files_button, self.add_folder_button):
            button.setEnabled(not busy)
        self.update_button.setEnabled(has and not busy)
        self.remove_button.setEnabled(has and not busy)

    def _target(self) -> str | None:
        """The collection new files go to: the selected one, else a name asked for (default "default")."""
        collection = self.selected()
        if collection is not None:
            return collection.name
        return self._ask_name()

    def _ask_name(self) -> str | None:
        name, ok = ask_text(self, "New collection", "Name", DEFAULT_COLLECTION if not self.collections else "")
        name = name.strip()
        if not ok or not name:
            return None
        from app.core.docs.store import check_name

        try:
            return check_name(name)
        except CamelidError as exc:
            self._error(str(exc))
            return None

    def new_collection(self) -> None:
        name = self._ask_name()
        if name is not None:
            folder = QFileDialog.getExistingDirectory(self, f"Add a folder to {name}", str(Path.home()))
            if folder:
                self.add_paths_to(name, [folder])

    def choose_files(self) -> None:
        name = self._target()
        if name is None:
            return
        files, _filter = QFileDialog.getOpenFileNames(self, f"Add files to {name}", str(Path.home()),
                                                      file_filter())
        if files:
            self.add_paths_to(name, files)

    def choose_folder(self) -> None:
        name = self._target()
        if name is None:
            return
        folder = QFileDialog.getExistingDirectory(self, f"Add a folder to {name}", str(Path.home()))
        if folder:
            self.add_paths_to(name, [folder])

    def add_paths_to(self, name: str, paths: Sequence[Path | str]) -> Job | None:
        """Index `paths` (files and folders) into the collection `name`, made if new."""
        if self.progress.running or not paths:
            return None
        self.error.show_text("")
        self.problems.show_text("")
        self._selected = name
        job = self.progress.start(self.host, index_work(self.host, name, paths, setting=self._setting()),
                                  what=f"Adding to {name}")
        self._update_buttons()
        return job

    def update_selected(self) -> Job | None:
        """Re-scan the selected collection's files and folders."""
        collection = self.selected()
        if collection is None or self.progress.running:
            return None
        self.error.show_text("")
        self.problems.show_text("")
        job = self.progress.start(self.host, index_work(self.host, collection.name, None, setting=self._setting()),
                                  what=f"Updating {collection.name}")
        self._update_buttons()
        return job

    def remove_selected(self, *, confirm: bool = True) -> Job | None:
        collection = self.selected()
        if collection is None or self.progress.running:
            return None
        if confirm and QMessageBox.question(
                self, "Remove collection",
                f"Remove the collection \u201c{collection.name}\u201d and its {collection.chunks:,} passages? "
                "The files themselves stay where they are.") != QMessageBox.StandardButton.Yes:
            return None
        host = self.host
        self._selected = None

        def removed(_c: Any) -> None:
            self.progress.hide()
            self.state.status_message.emit(f"Removed the collection {collection.name}; the files are untouched.")
            self.refresh()
            self.collections_changed.emit()

        return run_job(lambda: host.docs_index().remove_collection(collection.name), result=removed,
                       error=self._error)

    def _indexed(self, report: Any) -> None:
        if report is not None and report.failed:
            self.problems.show_text(problems_text(report))
        self._update_buttons()
        self.refresh(select=report.collection if report is not None else None)
        self.collections_changed.emit()

    def _index_failed(self, message: str) -> None:
        self.error.show_text(message)
        self._update_buttons()
        self.refresh()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and not self.state.demo and not self.progress.running:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        """Files or folders dropped on the page go to the selected collection (or a new one, named first)."""
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile() and u.toLocalFile()]
        if not paths:
            return
        event.acceptProposedAction()
        name = self._target()
        if name is not None:
            self.add_paths_to(name, paths)

    # --------------------------------------------------------------- lifecycle
    def shutdown(self) -> None:
        self.progress.cancel()

    def show_demo(self) -> None:
        """Sample collections for screenshots (no index, no model)."""
        from app.ui import demo

        demo.fill_documents(self)


def citation_label(c: dict[str, Any]) -> str:
    """"report.pdf, page 3 — Intro" for a stored citation (core's Citation.label)."""
    from app.core.docs.answer import Citation

    fields = ("n", "source", "page", "page_end", "heading", "text", "start", "end")
    return Citation(**{k: c.get(k) for k in fields}).label


def citation_links(citations: Sequence[dict[str, Any]], prefix: str, color: str | None = None) -> str:
    """Rich text: one link per citation, "[1] report.pdf, page 3 — Intro", hrefs `prefix:i`."""
    style = f' style="color: {color};"' if color else ""
    return "<br>".join(f'<a href="{prefix}:{i}"{style}>[{html.escape(str(c.get("n", i + 1)))}] '
                       f'{html.escape(citation_label(c))}</a>' for i, c in enumerate(citations))
