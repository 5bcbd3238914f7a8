"""What the whole window shares: settings, the hardware profile, the loaded model.

Views read from it and listen to its signals instead of talking to each
other. It holds core objects only; the work on them runs through workers.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal

from app.core.machine import HardwareProfile
from app.core.settings import Settings


class AppState(QObject):
    """Shared state of one window. Lives on the GUI thread."""

    profile_changed = Signal(object)  # HardwareProfile
    #: The loaded model's description (dict with name, path, verdict...) or None after unload.
    model_changed = Signal(object)
    settings_changed = Signal(list)  # keys that changed
    #: The models on disk changed (download done, delete, import, Refresh): every model list re-reads.
    library_changed = Signal()
    #: A sentence for the status bar (e.g. "Downloading Qwen2.5-7B: 43%").
    status_message = Signal(str)

    def __init__(self, settings: Settings | None = None, profile: HardwareProfile | None = None,
                 *, demo: bool = False) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.profile = profile
        self.model: dict[str, Any] | None = None
        #: Demo state (screenshots): views show sample content and start no I/O.
        self.demo = demo
        self._engine_host: Any = None
        self._downloads: Any = None

    def engine_host(self) -> Any:
        """The window's EngineHost (chat engine + conversation store), created on first use."""
        if self._engine_host is None:
            from app.ui.engine_host import EngineHost

            self._engine_host = EngineHost(parent=self)
        return self._engine_host

    def downloads(self) -> Any:
        """The window's download queue (ui/downloads.py), created on first use."""
        if self._downloads is None:
            from app.core.models import judge_remote_fit
            from app.ui.downloads import Downloads

            self._downloads = Downloads(judge=judge_remote_fit(self.profile), parent=self)
            # Wherever a download was started (Models page, wizard), a finished one is in the library now.
            self._downloads.finished.connect(lambda _entry: self.library_changed.emit())
        return self._downloads

    def shutdown(self) -> None:
        """Stop the engine and store threads (window closing)."""
        if self._downloads is not None:
            self._downloads.shutdown()
        if self._engine_host is not None:
            self._engine_host.shutdown()
            self._engine_host = None

    def set_profile(self, profile: HardwareProfile) -> None:
        self.profile = profile
        if self._downloads is not None:
            # The queue was made before the machine was measured (the Models page asks for it at once):
            # judge fits on the machine now known, not by detecting it again for every file.
            from app.core.models import judge_remote_fit

            self._downloads.judge = judge_remote_fit(profile)
        self.profile_changed.emit(profile)

    def set_model(self, model: dict[str, Any] | None) -> None:
        self.model = model
        self.model_changed.emit(model)

    def backend_label(self) -> str:
        """"CUDA", "Metal", "CPU"...: the backend the loaded model (or this build) runs on."""
        if self.model and self.model.get("backend"):
            return str(self.model["backend"])
        if self.profile is None:
            return "…"
        gpu = self.profile.backend.gpu_backends
        return gpu[0] if gpu and self.profile.backend.gpu_offload else "CPU"
