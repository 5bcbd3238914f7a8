"""`camelid gui --screenshot PATH --page NAME`: one page rendered offscreen with demo state.

Demo state is a simulated machine (an RTX 4090 desktop), a sample
conversation and sample models, shown without touching any store, so
screenshots look the same on every machine. CAMELID_HOME points at a
throwaway folder meanwhile, so the user's settings and chats stay untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PAGES = ("chat", "documents", "models", "hardware", "server", "machines", "wizard")
DEMO_PRESET = "rtx-4090"
#: The window Camelid opens on a 1920x1080 screen (main_window.default_size).
SIZE = (1280, 800)


def render(path: Path, page: str = "hardware", *, theme_choice: str = "light",
           size: tuple[int, int] = SIZE) -> Path:
    """Render `page` with demo state and save it as a PNG at `path` (the main window at `size`)."""
    if page not in PAGES:
        raise ValueError(f"page must be one of {', '.join(PAGES)}")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    # Demo data goes to a private folder so the user's chats and settings stay untouched.
    if not os.environ.get("CAMELID_SCREENSHOT_KEEP_HOME"):
        os.environ["CAMELID_HOME"] = tempfile.mkdtemp(prefix="camelid-screenshot-")

    from PySide6.QtWidgets import QApplication

    from app.core.machine import preset_profile
    from app.core.settings import Settings
    from app.ui import demo
    from app.ui.main_window import build_app, create_window, route_qt_messages
    from app.ui.state import AppState

    route_qt_messages()  # the offscreen plugin's notes go to the log, not the terminal
    app = build_app()
    settings = Settings()
    settings.set("theme", theme_choice)
    state = AppState(settings, preset_profile(DEMO_PRESET), demo=True)
    window = create_window(state)
    window.resize(*size)
    target = window
    if page == "wizard":
        window.show()
        # The recommendation step: the most informative one (picks, bars, verdicts, why).
        target = demo.open_wizard(window)
    else:
        # Shown and laid out first, so the sample content is measured at the page's real width
        # (a message wrapped at a narrow width would keep that height).
        window.show_page(page.capitalize())
        window.show()
        for _ in range(3):
            QApplication.processEvents()
        demo.prepare(window, page)
    for _ in range(5):
        QApplication.processEvents()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not target.grab().save(str(path), "PNG"):
        raise OSError(f"Could not write {path}")
    window.close()
    app.processEvents()
    return path
