"""The Settings dialog: one control per setting declared in app.core.settings, plus the Hub token."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app import paths
from app.core.errors import CamelidError
from app.core.settings import BY_KEY, Settings, SettingsError, models_dir_problem
from app.ui.widgets.common import Notice
from app.ui.workers import run_job

CHOICE_LABELS = {
    "system": "Follow the system", "light": "Light", "dark": "Dark",
    "f16": "f16 (full precision)", "q8_0": "q8_0 (half the memory)", "q4_0": "q4_0 (quarter; needs flash attention)",
    "chat": "Chat", "rag": "Documents (RAG)", "reasoning": "Reasoning", "code": "Code", "json": "Strict JSON",
    "precise": "Precise", "balanced": "Balanced", "creative": "Creative",
    "repack": "Repack, read into RAM (fastest, one copy)",
    "repack_mmap": "Repack, keep the file mapped (starts faster, more RAM)",
    "off": "Don't repack (least RAM, slower on CPU)",
}
CONTEXT_CHOICES = (2048, 4096, 8192, 16384, 32768, 65536, 131072)


def token_state() -> bool:
    """Whether huggingface_hub has a token (environment or its token file)."""
    from huggingface_hub import get_token

    return bool(get_token())


def save_token(token: str) -> str:
    """Validate and store the token with huggingface_hub (its own token file, not settings.json)."""
    from huggingface_hub import HfApi, login

    from app.core.models import endpoint

    try:
        # Checked against the endpoint in use now (a mirror counts), since login()
        # only knows the endpoint huggingface_hub read at import.
        HfApi(endpoint=endpoint()).whoami(token=token)
        login(token=token, add_to_git_credential=False, skip_if_logged_in=False)
    except Exception as exc:
        raise CamelidError(
            "The Hugging Face token could not be saved: the Hub did not accept it or could not be reached.",
            "Check the token at https://huggingface.co/settings/tokens and your connection, then try again.",
        ) from exc
    return "saved"


def remove_token() -> str:
    from huggingface_hub import logout

    try:
        logout()
    except Exception as exc:  # logout raises when nothing is stored; that is the wanted state
        if token_state():
            raise CamelidError("The Hugging Face token could not be removed.",
                               "If it comes from the HF_TOKEN environment variable, unset it there.") from exc
    return "removed"


class SettingsDialog(QDialog):
    """Edits a Settings object; `saved` carries the keys whose value changed."""

    saved = Signal(list)

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(640)
        self.settings = settings
        self._controls: dict[str, QWidget] = {}
        self._token_job = None

        layout = QVBoxLayout(self)
        layout.setContentsMargins(22, 20, 22, 16)
        layout.setSpacing(14)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        form.setHorizontalSpacing(18)
        form.setVerticalSpacing(10)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        layout.addLayout(form)

        # Models folder: a path with a Browse button.
        self.models_dir = QLineEdit(settings["models_dir"])
        self.models_dir.setPlaceholderText(str(paths.data_dir() / "models"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.setSpacing(8)
        row.addWidget(self.models_dir, 1)
        row.addWidget(browse)
        form.addRow("Models folder", row)
        self._controls["models_dir"] = self.models_dir

        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setSpecialValueText("Automatic (leaves a core free on small machines)")
        self.threads.setValue(settings["threads"])
        form.addRow("CPU threads", self.threads)
        self._controls["threads"] = self.threads

        self.gpu_auto = QCheckBox("As many as fit (recommended)")
        self.gpu_layers = QSpinBox()
        self.gpu_layers.setRange(0, 999)
        layers = settings["gpu_layers"]
        self.gpu_auto.setChecked(layers is None)
        self.gpu_layers.setValue(layers or 0)
        self.gpu_layers.setEnabled(layers is not None)
        self.gpu_auto.toggled.connect(lambda auto: self.gpu_layers.setEnabled(not auto))
        row = QHBoxLayout()
        row.setSpacing(8)
        row.addWidget(self.gpu_auto)
        row.addWidget(self.gpu_layers)
        row.addStretch(1)
        form.addRow("GPU layers", row)

        self.context = QComboBox()
        for n in CONTEXT_CHOICES:
            self.context.addItem(f"{n:,} tokens", n)
        current = settings["context_length"]
        if current not in CONTEXT_CHOICES:
            self.context.addItem(f"{current:,} tokens", current)
        self.context.setCurrentIndex(self.context.findData(current))
        form.addRow("Context length", self.context)
        self._controls["context_length"] = self.context

        self.flash = QCheckBox("Use flash attention where supported")
        self.flash.setChecked(settings["flash_attention"])
        form.addRow("Flash attention", self.flash)
        self._controls["flash_attention"] = self.flash

        for key, label in (("kv_cache_type", "KV cache type"), ("cpu_repack", "CPU weights"), ("theme", "Theme"),
                           ("use_case", "Recommend for"), ("sampling_preset", "Sampling preset")):
            combo = QComboBox()
            for choice in BY_KEY[key].choices or ():
                combo.addItem(CHOICE_LABELS.get(choice, choice), choice)
            combo.setCurrentIndex(max(0, combo.findData(settings[key])))
            combo.setToolTip(BY_KEY[key].help)
            form.addRow(label, combo)
            self._controls[key] = combo

        self.daily_check = QCheckBox("Check the Hub for new models once a day")
        self.daily_check.setChecked(settings["catalog_daily_check"])
        self.daily_check.setToolTip(BY_KEY["catalog_daily_check"].help)
        form.addRow("New models", self.daily_check)
        self._controls["catalog_daily_check"] = self.daily_check
        self.offline = QCheckBox("Work offline (no checks for new models)")
        self.offline.setChecked(settings["offline"])
        self.offline.setToolTip(BY_KEY["offline"].help)
        self.offline.toggled.connect(lambda off: self.daily_check.setEnabled(not off))
        self.daily_check.setEnabled(not settings["offline"])
        form.addRow("Network", self.offline)
        self._controls["offline"] = self.offline

        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("hf_… (only needed for gated models such as Llama)")
        self.remove_token_button = QPushButton("Remove")
        self.remove_token_button.clicked.connect(self._remove_token)
        row = QHBoxLayout()
        row.setSpacing(8)
        row.addWidget(self.token, 1)
        row.addWidget(self.remove_token_button)
        form.addRow("Hugging Face token", row)
        self.token_status = QLabel("")
        self.token_status.setProperty("subtle", True)
        form.addRow("", self.token_status)

        self.problem = Notice("error")
        layout.addWidget(self.problem)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

        run_job(token_state, result=self._show_token_state)

    # ------------------------------------------------------------------
    def _show_token_state(self, present: bool) -> None:
        self.token_status.setText("A token is saved (stored by huggingface_hub, not in Camelid's settings)."
                                  if present else "No token saved.")
        self.remove_token_button.setEnabled(present)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Models folder", self.models_dir.text()
                                                  or str(paths.models_dir()))
        if folder:
            self.models_dir.setText(folder)

    def _remove_token(self) -> None:
        self.remove_token_button.setEnabled(False)
        self._token_job = run_job(remove_token, result=lambda _r: self._show_token_state(False),
                                  error=self.problem.show_text)

    def values(self) -> dict[str, Any]:
        """The values the controls show, keyed like the settings."""
        return {
            "models_dir": self.models_dir.text().strip(),
            "threads": self.threads.value(),
            "gpu_layers": None if self.gpu_auto.isChecked() else self.gpu_layers.value(),
            "context_length": self.context.currentData(),
            "flash_attention": self.flash.isChecked(),
            "catalog_daily_check": self.daily_check.isChecked(),
            "offline": self.offline.isChecked(),
            **{key: self._controls[key].currentData()
               for key in ("kv_cache_type", "cpu_repack", "theme", "use_case", "sampling_preset")},
        }

    def save(self) -> None:
        """Validate every value, save the file, then store the token (off the GUI thread) if one was typed."""
        values = self.values()
        if values["kv_cache_type"] == "q4_0" and not values["flash_attention"]:
            self.problem.show_text("A q4_0 KV cache needs flash attention: turn flash attention on, "
                                   "or choose f16 or q8_0.")
            return
        problem = models_dir_problem(values["models_dir"])
        if problem:
            self.problem.show_text(problem)
            return
        before = self.settings.to_dict()
        try:
            for key, value in values.items():
                self.settings.set(key, value)
            self.settings.save()
        except SettingsError as exc:
            self.problem.show_text(str(exc))
            return
        except OSError as exc:
            self.problem.show_text(f"The settings could not be written ({exc.strerror}). "
                                   "Check that the settings folder is writable.")
            return
        changed = [k for k, v in self.settings.to_dict().items() if before.get(k) != v]
        self.saved.emit(changed)
        token = self.token.text().strip()
        if not token:
            self.accept()
            return
        self.buttons.setEnabled(False)
        self.token_status.setText("Checking the token with the Hub…")
        self._token_job = run_job(save_token, token, result=self._token_saved, error=self._token_failed)

    def _token_saved(self, _result: str) -> None:
        self.token.clear()
        self.buttons.setEnabled(True)
        self._show_token_state(True)
        self.accept()

    def _token_failed(self, message: str) -> None:
        self.buttons.setEnabled(True)
        self.token_status.setText("")
        self.problem.show_text(message + " Your other settings were saved.")
