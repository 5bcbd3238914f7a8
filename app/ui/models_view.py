"""The Models page: what is on disk, what the Hub has, and the download queue.

Installed: core/library.py's listing (size, quant, fit verdict, where), with
open-folder, delete and "chat with it". Discover: Hub search (core/hub.py), a
repo's quant files, each file's fit judged before download (the fit engine
through core/downloads.judge_remote_fit) and drawn as a memory bar.
Downloads: the shared queue (ui/downloads.py) with progress, speed, ETA,
cancel and resume. Above the tabs, the catalog's age and "Check for new models"
(core/models/refresh.py on a worker; also once a day when the app runs, unless
Settings turn it off or Camelid works offline).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
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
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.models import (
    FitJudgement,
    LibraryModel,
    QuantFile,
    RepoFiles,
    RepoSummary,
    hub,
    judge_remote_fit,
    library,
    refresh,
)
from app.core.settings import SettingsError
from app.ui import text
from app.ui.downloads import Downloads, Entry
from app.ui.state import AppState
from app.ui.widgets.banner import Banner
from app.ui.widgets.common import subtle, title
from app.ui.widgets.plan_view import PlanBars, plan_verdict, verdict_text
from app.ui.wording import window_sentence
from app.ui.workers import Job, run_job

WHERE = {"camelid": "Camelid", "lmstudio": "LM Studio (read-only)", "hf-cache": "HF cache (read-only)",
         "ollama": "Ollama (read-only)", "folder": "Added folder (read-only)", "path": "elsewhere"}


class LibraryTable(QAbstractTableModel):
    """Installed models as rows; a thin adapter over core's list of LibraryModel."""

    COLUMNS = ("Name", "Quant", "Size", "Fit here", "Where")

    def __init__(self) -> None:
        super().__init__()
        self.models: list[LibraryModel] = []

    def set_models(self, models: list[LibraryModel]) -> None:
        self.beginResetModel()
        self.models = list(models)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.models)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        model = self.models[index.row()]
        if role == Qt.ItemDataRole.UserRole:
            return model
        if role == Qt.ItemDataRole.ToolTipRole:
            return model.problem or str(model.path)
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        column = self.COLUMNS[index.column()]
        if column == "Name":
            return model.name
        if column == "Quant":
            return model.quant or "?"
        if column == "Size":
            return text.size(model.size_bytes)
        if column == "Fit here":
            return (model.problem and "damaged or incomplete") or verdict_text(model.verdict)
        return WHERE.get(model.source, model.source)


class ModelsView(QWidget):
    """Installed / Discover / Downloads tabs."""

    #: A model the user wants to chat with (the main window switches to Chat and loads it).
    chat_requested = Signal(Path)
    #: A catalog refresh finished (its RefreshResult): new models may now be recommended.
    catalog_refreshed = Signal(object)
    #: How often, while the app runs, the daily check asks whether a day has passed.
    DAILY_CHECK_INTERVAL_MS = 60 * 60 * 1000

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.downloads: Downloads = state.downloads()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 20, 24, 16)
        outer.addWidget(title("Models"))
        outer.addLayout(self._catalog_row())
        outer.addSpacing(6)
        self.tabs = QTabWidget()
        outer.addWidget(self.tabs, 1)
        # One line below the tabs that always keeps its height: a message never moves the rows,
        # it can be dismissed, and the page's next action clears it.
        self.error = Banner("error", rewrite=window_sentence)
        outer.addWidget(self.error)
        self.tabs.addTab(self._installed_tab(), "Installed")
        self.tabs.addTab(self._discover_tab(), "Discover")
        self.tabs.addTab(self._downloads_tab(), "Downloads")
        self.tabs.currentChanged.connect(lambda _i: self.error.clear())
        self.downloads.changed.connect(self._rebuild_queue)
        self.downloads.progressed.connect(self._update_row)
        self.downloads.failed.connect(lambda _e, message: self.error.show_text(message))
        # Every change to the models on disk (a download ending anywhere, a delete, an added folder,
        # Refresh) and a new hardware reading (the verdicts) re-read the list.
        state.library_changed.connect(self.refresh_installed)
        state.profile_changed.connect(lambda _p: self.refresh_installed())
        state.settings_changed.connect(self._settings_changed)
        self._quants: list[QuantFile] = []
        self._fits: dict[str, FitJudgement | None] = {}
        self._refresh_job: Job | None = None
        #: The running search and repo listing: a new one cancels the one it replaces (the Hub
        #: policy checks the event between pieces), and shutdown cancels both.
        self._hub_jobs: dict[str, Job] = {}
        self._daily_timer: QTimer | None = None
        self._listing = 0
        self._confirm_box: QMessageBox | None = None
        if not state.demo:
            self.refresh_installed()
            self.show_catalog_status()

    # -------------------------------------------------------------- catalog
    def _catalog_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        text_column = QVBoxLayout()
        text_column.setSpacing(2)
        self.catalog_label = subtle("")
        self.catalog_result = subtle("")
        self.catalog_result.hide()
        text_column.addWidget(self.catalog_label)
        text_column.addWidget(self.catalog_result)
        row.addLayout(text_column, 1)
        self.check_button = QPushButton("Check for new models")
        self.check_button.setToolTip("Ask the Hugging Face Hub for models the watched labs published since "
                                     "the catalog was made (a few MB: one header per new model).")
        self.check_button.clicked.connect(lambda _c=False: self.check_for_new_models())
        row.addWidget(self.check_button, 0, Qt.AlignmentFlag.AlignTop)
        return row

    def show_catalog_status(self) -> None:
        """Re-read the catalog's snapshot date and last refresh (off the GUI thread)."""
        run_job(refresh.catalog_status, result=self._show_catalog_status)

    def _show_catalog_status(self, status: refresh.CatalogStatus) -> None:
        when = text_when(status.refreshed) if status.refreshed else "never"
        found = f" · {status.found} found by checks" if status.found else ""
        self.catalog_label.setText(f"Catalog snapshot of {status.snapshot} · last checked for new models: "
                                   f"{when}{found}")

    def _settings_snapshot(self) -> dict[str, Any]:
        # The worker gets plain values: Settings belongs to the GUI thread.
        return self.state.settings.to_dict()

    def check_for_new_models(self, *, automatic: bool = False) -> Job | None:
        """Run a catalog refresh on a worker; `automatic` for the daily check (which may find it not due)."""
        if self._refresh_job is not None:
            return self._refresh_job
        settings = self._settings_snapshot()
        if refresh.is_offline(settings):
            if not automatic:
                self._show_refresh_failed("Camelid is set to work offline, so it did not check the Hub for "
                                          "new models. Turn off offline mode in Settings to check.")
            return None
        self.check_button.setEnabled(False)
        if not automatic:
            self.error.show_text("")
            self._set_result("Checking the Hub for new models…")
        fn = refresh.daily_check if automatic else refresh.refresh_catalog
        job = Job(lambda progress, cancel: fn(settings=settings, progress=progress, cancel=cancel))
        job.on(result=self._refresh_done, error=self._show_refresh_failed,
               progress=lambda message: self._set_result(str(message)) if not automatic else None,
               cancelled=lambda: self._set_result("Check cancelled; the catalog was not changed."),
               finished=self._refresh_finished)
        self._refresh_job = job.start()
        return job

    def start_daily_check(self) -> None:
        """The once-a-day check: now if due, then every hour while the app runs (settings re-read each time)."""
        if self.state.demo:
            return
        self.check_for_new_models(automatic=True)
        if self._daily_timer is None:
            self._daily_timer = QTimer(self)
            self._daily_timer.setInterval(self.DAILY_CHECK_INTERVAL_MS)
            self._daily_timer.timeout.connect(lambda: self.check_for_new_models(automatic=True))
            self._daily_timer.start()

    def _set_result(self, message: str) -> None:
        self.catalog_result.setText(message)
        self.catalog_result.setVisible(bool(message))

    def _refresh_done(self, result: refresh.RefreshResult | None) -> None:
        if result is None:  # the daily check was not due
            return
        names = [e["name"] for e in result.added]
        if names:
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            self._set_result(f"Added {len(names)} new model{'s' if len(names) != 1 else ''}: {shown}. "
                             "Recommendations now include them.")
            self.state.status_message.emit(f"{len(names)} new model{'s' if len(names) != 1 else ''} "
                                           "added to the catalog")
        else:
            self._set_result(f"No new models from the {result.labs} watched labs since {result.since}.")
        self.catalog_refreshed.emit(result)
        self.show_catalog_status()

    def _show_refresh_failed(self, message: str) -> None:
        self._set_result("")
        self.error.show_text(message)

    def _refresh_finished(self) -> None:
        self._refresh_job = None
        self.check_button.setEnabled(True)

    # ------------------------------------------------------------ installed
    def _installed_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 10, 0, 0)
        self.library_model = LibraryTable()
        self.table = QTableView()
        self.table.setModel(self.library_model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(LibraryTable.COLUMNS)):
            self.table.horizontalHeader().setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.table.doubleClicked.connect(lambda _i: self._chat_with_selected())
        layout.addWidget(self.table, 1)
        self.installed_hint = subtle("")
        layout.addWidget(self.installed_hint)
        row = QHBoxLayout()
        self.chat_button = QPushButton("Chat with it")
        self.chat_button.setProperty("primary", True)
        self.folder_button = QPushButton("Open folder")
        self.delete_button = QPushButton("Delete…")
        self.add_folder_button = QPushButton("Add a folder…")
        self.add_folder_button.setToolTip("List the GGUF files of another folder here, used where they are "
                                          "(never copied or deleted). Ollama's store is found by itself.")
        self.refresh_button = QPushButton("Refresh")
        self.chat_button.clicked.connect(lambda _c=False: self._chat_with_selected())
        self.folder_button.clicked.connect(lambda _c=False: self._open_folder())
        self.delete_button.clicked.connect(lambda _c=False: self.delete_selected())
        self.add_folder_button.clicked.connect(lambda _c=False: self.choose_folder())
        self.refresh_button.clicked.connect(lambda _c=False: self.library_changed())
        for button in (self.chat_button, self.folder_button, self.delete_button):
            row.addWidget(button)
        row.addStretch(1)
        row.addWidget(self.add_folder_button)
        row.addWidget(self.refresh_button)
        layout.addLayout(row)
        return page

    #: Settings that change what the library lists (folders) or its verdicts (how models are loaded).
    LIBRARY_SETTINGS = frozenset({"models_dir", "model_folders", "context_length", "flash_attention",
                                  "kv_cache_type", "cpu_repack", "gpu_layers"})

    def _settings_changed(self, keys: list[str]) -> None:
        if "models_dir" in keys or "model_folders" in keys:
            self.state.library_changed.emit()  # other lists (the chat's picker) follow the new folder too
        elif self.LIBRARY_SETTINGS & set(keys):
            self.refresh_installed()

    def library_changed(self) -> None:
        """Tell every model list (this page, the chat's picker, the wizard) that the library changed."""
        self.error.clear()
        self.state.library_changed.emit()

    def refresh_installed(self) -> None:
        if self.state.demo:
            return
        self.installed_hint.setText("Reading the models folder…")
        self._listing += 1
        listing = self._listing
        profile = self.state.profile
        # A listing started before the hardware was known (no verdicts) never replaces a later one.
        folders = library.extra_folders(str(self.state.settings["model_folders"] or ""))

        def listed(models: list[LibraryModel]) -> None:
            if listing == self._listing:
                self._show_installed(models)

        run_job(lambda: library.list_models(hardware=profile, folders=folders), result=listed,
                error=self.error.show_text)

    def _show_installed(self, models: list[LibraryModel]) -> None:
        selected = self.selected_model()
        self.library_model.set_models(models)
        if models and self.state.profile is None:
            fits = " The fit column fills in once this machine is measured."
        else:
            fits = ""
        self.installed_hint.setText(
            f"{len(models)} model{'s' if len(models) != 1 else ''} on disk. Models in LM Studio's folder, "
            "Ollama's store, the Hugging Face cache or a folder you added are used where they are and never "
            f"deleted by Camelid.{fits}"
            if models else "No models yet: find one in Discover, add a folder that holds GGUF files, or run "
                           "the first-run wizard (Help menu).")
        paths_now = [m.path for m in models]
        if selected is not None and selected.path in paths_now:
            self.table.selectRow(paths_now.index(selected.path))
        elif models:
            self.table.selectRow(0)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of GGUF models")
        if folder:
            self.add_folder(Path(folder))

    def add_folder(self, folder: Path) -> bool:
        """List `folder`'s GGUF files in the library, in place (setting ``model_folders``)."""
        folder = folder.expanduser()
        if not folder.is_dir():
            self.error.show_text(f"{folder} is not a folder. Choose a folder that holds .gguf files.")
            return False
        settings = self.state.settings
        current = library.extra_folders(str(settings["model_folders"] or ""))
        if folder not in current:
            settings.set("model_folders", os.pathsep.join(str(f) for f in [*current, folder]))
            try:
                settings.save()
            except SettingsError as exc:
                self.error.show_text(f"The folder is listed until Camelid closes, but could not be remembered. {exc}")
            self.state.status_message.emit(f"Listing the models in {folder} (used where they are, never copied)")
            self.state.settings_changed.emit(["model_folders"])  # which re-lists every model list
        else:
            self.library_changed()
        return True

    def selected_model(self) -> LibraryModel | None:
        rows = self.table.selectionModel().selectedRows()
        return self.library_model.models[rows[0].row()] if rows else None

    def _chat_with_selected(self) -> None:
        model = self.selected_model()
        if model is not None:
            self.chat_requested.emit(model.path)

    def _open_folder(self) -> None:
        model = self.selected_model()
        folder = model.path.parent if model else None
        if folder is not None:
            from app.ui.widgets.folder import open_folder

            # No file manager (a bare desktop): the path with Copy, not silence.
            self.folder_dialog = open_folder(folder, self)

    def delete_selected(self, *, confirm: bool = True) -> None:
        model = self.selected_model()
        if model is None:
            return
        if not model.deletable:
            self.error.show_text(f"{model.name} lives in {WHERE.get(model.source, model.source)}; "
                                 "Camelid only reads it there. Delete it from that program.")
            return
        self.error.clear()
        if confirm and QMessageBox.question(
                self, "Delete model", f"Delete {model.name} ({text.size(model.size_bytes)}) from disk?"
        ) != QMessageBox.StandardButton.Yes:
            return
        run_job(library.delete_model, model.name, result=lambda _m: self.state.library_changed.emit(),
                error=self.error.show_text)

    # -------------------------------------------------------------- discover
    def _discover_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 10, 0, 0)
        row = QHBoxLayout()
        self.query = QLineEdit()
        self.query.setPlaceholderText("Search GGUF models on the Hugging Face Hub, e.g. qwen2.5 7b instruct")
        self.query.returnPressed.connect(self.search)
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(lambda _c=False: self.search())
        row.addWidget(self.query, 1)
        row.addWidget(self.search_button)
        layout.addLayout(row)
        self.search_busy = QProgressBar()
        self.search_busy.setRange(0, 0)  # a moving bar: the Hub was asked, the answer is on its way
        self.search_busy.setFixedHeight(4)
        self.search_busy.setTextVisible(False)
        busy_policy = self.search_busy.sizePolicy()
        busy_policy.setRetainSizeWhenHidden(True)
        self.search_busy.setSizePolicy(busy_policy)
        self.search_busy.hide()
        layout.addWidget(self.search_busy)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        self.results = QListWidget()
        self.results.currentItemChanged.connect(lambda item, _prev: self._open_repo(item))
        splitter.addWidget(self.results)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(8, 0, 0, 0)
        self.repo_title = QLabel("Search, then pick a repository to see its files.")
        self.repo_title.setWordWrap(True)
        right_layout.addWidget(self.repo_title)
        self.quant_table = QTableWidget(0, 3)
        self.quant_table.setHorizontalHeaderLabels(["Quant", "Size", "Fit here"])
        self.quant_table.verticalHeader().hide()
        self.quant_table.setShowGrid(False)
        self.quant_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.quant_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.quant_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.quant_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.quant_table.itemSelectionChanged.connect(self._quant_selected)
        right_layout.addWidget(self.quant_table, 1)
        self.fit_label = QLabel("")
        self.fit_label.setWordWrap(True)
        right_layout.addWidget(self.fit_label)
        self.fit_bars = PlanBars()
        right_layout.addWidget(self.fit_bars)
        self.download_button = QPushButton("Download")
        self.download_button.setProperty("primary", True)
        self.download_button.setEnabled(False)
        self.download_button.clicked.connect(lambda _c=False: self.download_selected())
        right_layout.addWidget(self.download_button, 0, Qt.AlignmentFlag.AlignRight)
        splitter.addWidget(right)
        splitter.setSizes([320, 640])
        layout.addWidget(splitter, 1)
        return page

    def search(self) -> None:
        self.error.clear()
        query = self.query.text().strip()
        self.search_button.setEnabled(False)
        self.search_button.setText("Searching…")
        self.search_busy.show()
        self.results.clear()
        self.quant_table.setRowCount(0)
        self.fit_bars.set_plan(None)
        self.fit_label.setText("")
        self.repo_title.setText(f"Searching the Hub for “{query}”…" if query else "Asking the Hub for the most "
                                                                                 "downloaded GGUF models…")
        self._hub_job("search", run_job(hub.search_models, query, result=self._show_results,
                                        error=self._search_failed))

    def _search_ended(self) -> None:
        self.search_button.setEnabled(True)
        self.search_button.setText("Search")
        self.search_busy.hide()

    def _hub_job(self, key: str, job: Job) -> None:
        previous = self._hub_jobs.get(key)
        if previous is not None:
            previous.cancel()
        self._hub_jobs[key] = job

    def _search_failed(self, message: str) -> None:
        self._search_ended()
        self.repo_title.setText(message)  # the sentence where the results would be, and in the banner
        self.error.show_text(message)

    def _show_results(self, hits: list[RepoSummary]) -> None:
        self._search_ended()
        self.repo_title.setText("Pick a repository to see its files." if hits else "")
        self.results.clear()
        for hit in hits:
            params = f" · {hit.parameters / 1e9:.1f}B" if hit.parameters else ""
            gated = " · gated" if hit.gated else ""
            item = QListWidgetItem(f"{hit.repo_id}\n{hit.downloads:,} downloads{params}{gated}")
            item.setData(Qt.ItemDataRole.UserRole, hit.repo_id)
            self.results.addItem(item)
        if not hits:
            self.repo_title.setText("Nothing found. Try fewer words, or the model family's name (\"qwen\").")

    def _open_repo(self, item: QListWidgetItem | None) -> None:
        if item is None:
            return
        repo_id = item.data(Qt.ItemDataRole.UserRole)
        self.open_repo(repo_id)

    def open_repo(self, repo_id: str) -> None:
        self.error.clear()
        self.repo_title.setText(f"<b>{repo_id}</b> · reading its files…")
        self.quant_table.setRowCount(0)
        self.fit_bars.set_plan(None)
        self.fit_label.setText("")
        self._hub_job("repo", run_job(hub.repo_files, repo_id, result=self._show_repo, error=self._repo_failed))

    def _repo_failed(self, message: str) -> None:
        self.repo_title.setText("")
        self.error.show_text(message)

    def _show_repo(self, files: RepoFiles) -> None:
        self._quants = [q for q in files.quants if not q.mmproj]
        gated = " · gated: accept the license on its Hub page and save a token in Settings" if files.gated else ""
        self.repo_title.setText(f"<b>{files.repo_id}</b> · {len(self._quants)} files{gated}")
        self.quant_table.setRowCount(len(self._quants))
        for row, quant in enumerate(self._quants):
            label = quant.quant + (f" ({quant.shard_count} parts)" if quant.is_split else "")
            self.quant_table.setItem(row, 0, QTableWidgetItem(label))
            self.quant_table.setItem(row, 1, QTableWidgetItem(text.size(quant.total_bytes)))
            self.quant_table.setItem(row, 2, QTableWidgetItem("…"))
        self._fits = {}
        for quant in self._quants:
            self._judge(quant)

    def _judge(self, quant: QuantFile) -> None:
        """The fit engine reads the file's header over HTTP ranges and plans it for this machine."""
        judge = judge_remote_fit(self.state.profile)

        def done(fit: FitJudgement | None) -> None:
            self._fits[quant.first_file] = fit
            self._show_fit(quant, fit)

        def failed(message: str) -> None:
            self._fits[quant.first_file] = None
            self._show_fit(quant, None, message)

        run_job(judge, quant, result=done, error=failed)

    def _show_fit(self, quant: QuantFile, fit: FitJudgement | None, problem: str | None = None) -> None:
        if quant not in self._quants:
            return
        row = self._quants.index(quant)
        words = plan_verdict(fit.plan) if fit and fit.plan else verdict_text(fit.verdict if fit else None)
        item = QTableWidgetItem(words)
        if problem:
            item.setToolTip(problem)
        self.quant_table.setItem(row, 2, item)
        if self.selected_quant() is quant:
            self._quant_selected()

    def selected_quant(self) -> QuantFile | None:
        rows = self.quant_table.selectionModel().selectedRows()
        return self._quants[rows[0].row()] if rows and rows[0].row() < len(self._quants) else None

    def _quant_selected(self) -> None:
        quant = self.selected_quant()
        self.download_button.setEnabled(quant is not None)
        fit = self._fits.get(quant.first_file) if quant is not None else None
        no_fit = fit is not None and fit.verdict == "no_fit"
        self.download_button.setText("Download anyway…" if no_fit else "Download")
        self.download_button.setProperty("primary", not no_fit)
        self.download_button.style().unpolish(self.download_button)
        self.download_button.style().polish(self.download_button)
        if quant is None:
            return
        if fit is None:
            self.fit_label.setText(f"{quant.name}: {text.size(quant.total_bytes)}. "
                                   + ("Checking how it fits…" if quant.first_file not in self._fits
                                      else "How it fits here is not known."))
            self.fit_bars.set_plan(None)
            return
        why = f" {fit.reason}" if fit.reason else ""
        self.fit_label.setText(f"{quant.name}: {plan_verdict(fit.plan or {'verdict': fit.verdict})}.{why}")
        self.fit_bars.set_plan(fit.plan)

    def download_selected(self, *, confirm: bool = True) -> Entry | None:
        """Queue the selected file; one that does not fit here is queued only after an explicit yes."""
        quant = self.selected_quant()
        if quant is None:
            return None
        self.error.clear()
        fit = self._fits.get(quant.first_file)
        allow = False
        if fit is not None and fit.verdict == "no_fit":
            if confirm and not self.confirm_no_fit(quant, fit.reason):
                return None
            allow = True
        entry = self.downloads.add(quant, allow_no_fit=allow)
        self.tabs.setCurrentIndex(2)
        return entry

    def confirm_no_fit(self, quant: QuantFile, reason: str | None) -> bool:
        """Ask before fetching a file the plan says this machine cannot load."""
        why = f" {reason}" if reason else ""
        box = QMessageBox(QMessageBox.Icon.Warning, "Download a model that does not fit?",
                          f"{quant.name} ({text.size(quant.total_bytes)}) does not fit in this machine's "
                          f"memory.{why}\n\nIt will most likely fail to load here. Download it anyway "
                          "(for another machine, or after adding memory)?", parent=self)
        anyway = box.addButton("Download anyway", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        self._confirm_box = box
        box.exec()
        return box.clickedButton() is anyway

    def download_anyway(self, entry: Entry, *, confirm: bool = True) -> None:
        """A queued file refused for not fitting: fetch it after all, once the user says yes."""
        reason = entry.error or None
        if confirm and not self.confirm_no_fit(entry.quant, reason):
            return
        self.error.clear()
        self.downloads.resume(entry, allow_no_fit=True)

    # -------------------------------------------------------------- downloads
    def _downloads_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 10, 0, 0)
        self.queue_table = QTableWidget(0, 5)
        self.queue_table.setHorizontalHeaderLabels(["Model", "Progress", "Speed", "Time left", ""])
        self.queue_table.verticalHeader().hide()
        self.queue_table.setShowGrid(False)
        self.queue_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.queue_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.queue_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        layout.addWidget(self.queue_table, 1)
        layout.addWidget(subtle("One download runs at a time. Cancelling keeps what was fetched: "
                                "Resume continues from there, even after Camelid was closed."))
        return page

    def _rebuild_queue(self) -> None:
        entries = self.downloads.entries
        self.queue_table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            self.queue_table.setItem(row, 0, QTableWidgetItem(entry.name))
            bar = QProgressBar()
            bar.setRange(0, 1000)
            self.queue_table.setCellWidget(row, 1, bar)
            button = QPushButton()
            if entry.state in ("planning", "waiting", "active"):
                button.setText("Cancel")
                button.clicked.connect(lambda _c=False, e=entry: self.downloads.cancel(e))
            elif entry.state == "failed" and entry.no_fit:
                button.setText("Download anyway…")
                button.clicked.connect(lambda _c=False, e=entry: self.download_anyway(e))
            elif entry.state in ("cancelled", "failed"):
                button.setText("Resume")
                button.clicked.connect(lambda _c=False, e=entry: self.downloads.resume(e))
            else:
                button.setText("Chat with it")
                button.clicked.connect(lambda _c=False, e=entry: e.path and self.chat_requested.emit(Path(e.path)))
            cell = QWidget()
            buttons = QHBoxLayout(cell)
            buttons.setContentsMargins(0, 0, 0, 0)
            buttons.setSpacing(4)
            buttons.addWidget(button)
            if entry.state in ("done", "failed", "cancelled"):
                remove = QPushButton("Remove")
                remove.setToolTip("Take this row off the list (a finished model stays on disk; a part "
                                  "file stays, so downloading it again continues it).")
                remove.clicked.connect(lambda _c=False, e=entry: self.downloads.remove(e))
                buttons.addWidget(remove)
            self.queue_table.setCellWidget(row, 4, cell)
            self._update_row(row)
        self.queue_table.resizeColumnToContents(4)

    def queue_button(self, row: int, which: int = 0) -> QPushButton | None:
        """The row's action button (Cancel, Resume, Download anyway…, Chat with it), or 1: Remove."""
        cell = self.queue_table.cellWidget(row, 4)
        buttons = cell.findChildren(QPushButton) if cell is not None else []
        return buttons[which] if which < len(buttons) else None

    def _update_row(self, row: int) -> None:
        if row >= len(self.downloads.entries) or row >= self.queue_table.rowCount():
            return
        entry = self.downloads.entries[row]
        bar = self.queue_table.cellWidget(row, 1)
        p = entry.progress
        if isinstance(bar, QProgressBar):
            bar.setValue(int(p.fraction * 1000) if p else (1000 if entry.state == "done" else 0))
            label = {"planning": "Checking disk space and fit…", "waiting": "Waiting",
                     "cancelled": "Cancelled (resumable)", "done": "Done", "failed": "Failed"}.get(entry.state)
            if entry.state == "active" and p:
                label = f"{text.size(p.bytes_done)} of {text.size(p.total_bytes)}"
                if p.state not in ("downloading",):
                    label += f" · {p.message or p.state}"
            bar.setFormat(label or "")
            if entry.error:
                bar.setToolTip(entry.error)
        active = entry.state == "active" and p is not None
        self.queue_table.setItem(row, 2, QTableWidgetItem(text.rate(p.speed_bps) if active else ""))
        self.queue_table.setItem(row, 3, QTableWidgetItem(text.duration(p.eta_seconds) if active else ""))

    def shutdown(self) -> None:
        if self._daily_timer is not None:
            self._daily_timer.stop()
        if self._refresh_job is not None:
            self._refresh_job.cancel()
        for job in self._hub_jobs.values():
            job.cancel()
        self.downloads.shutdown()

    def show_demo(self) -> None:
        """Sample models for screenshots (nothing read from disk)."""
        from app.ui import demo

        demo.fill_models(self)


def text_when(stamp: str) -> str:
    """``2026-12-02T10:31:00Z`` as ``2026-12-02 10:31 UTC``."""
    return stamp.replace("T", " ").removesuffix("Z")[:16] + (" UTC" if "T" in stamp else "")
