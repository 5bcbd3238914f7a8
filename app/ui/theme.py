"""Light and dark looks: a Fusion palette plus resources/styles/camelid.qss.

"system" follows the desktop's colour scheme (QStyleHints.colorScheme) and
keeps following it when the user switches; "light" and "dark" override it.
"""

from __future__ import annotations

from string import Template

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from app import paths

LIGHT = {
    "window": "#f7f6f3", "sidebar": "#efede8", "card": "#ffffff", "input": "#ffffff",
    "button": "#ffffff", "hover": "#e6e3dc", "border": "#d9d5cc", "text": "#1f1d1a",
    "muted": "#6b665d", "accent": "#c8553d", "accent_hover": "#b04630", "accent_soft": "#f3d9cf",
    "accent_text": "#8a2f1c", "warn_bg": "#fff4d6", "warn_border": "#e8c66a",
    "error_bg": "#fde4e1", "error_border": "#e59a8f", "user_bubble": "#f3e6d3",
}
DARK = {
    "window": "#1e1d1b", "sidebar": "#252421", "card": "#2b2a27", "input": "#2f2e2a",
    "button": "#32312d", "hover": "#3a3833", "border": "#45423c", "text": "#ece9e2",
    "muted": "#a39e93", "accent": "#e07a5f", "accent_hover": "#ea8d74", "accent_soft": "#5a3328",
    "accent_text": "#ffd6c9", "warn_bg": "#3d3420", "warn_border": "#7a6631",
    "error_bg": "#43241f", "error_border": "#8a443a", "user_bubble": "#3a3127",
}

#: Colours of the memory components, shared by every memory bar and legend.
COMPONENT_COLORS = {
    "weights": "#4e79a7", "kv_cache": "#f28e2b", "compute": "#59a14f", "overhead": "#9c755f",
    "in_use": "#9e9e9e", "reserve": "#bab0ac", "free": "#76b7b2",
}


def is_dark(choice: str) -> bool:
    """Whether `choice` (system | light | dark) means dark right now."""
    if choice == "dark":
        return True
    if choice == "light":
        return False
    hints = QGuiApplication.styleHints()
    return hints.colorScheme() == Qt.ColorScheme.Dark


def colors(dark: bool) -> dict[str, str]:
    return DARK if dark else LIGHT


def _palette(c: dict[str, str]) -> QPalette:
    pal = QPalette()
    role = QPalette.ColorRole
    for r, key in ((role.Window, "window"), (role.Base, "input"), (role.AlternateBase, "sidebar"),
                   (role.Button, "button"), (role.Text, "text"), (role.WindowText, "text"),
                   (role.ButtonText, "text"), (role.ToolTipBase, "card"), (role.ToolTipText, "text"),
                   (role.Highlight, "accent"), (role.PlaceholderText, "muted"), (role.Mid, "border"),
                   (role.Link, "accent")):
        pal.setColor(r, QColor(c[key]))
    pal.setColor(role.HighlightedText, QColor("#ffffff"))
    pal.setColor(QPalette.ColorGroup.Disabled, role.Text, QColor(c["muted"]))
    pal.setColor(QPalette.ColorGroup.Disabled, role.ButtonText, QColor(c["muted"]))
    return pal


def stylesheet(dark: bool) -> str:
    template = (paths.resources_dir() / "styles" / "camelid.qss").read_text(encoding="utf-8")
    # Qt's url() wants forward slashes on every platform.
    icons = (paths.resources_dir() / "icons").as_posix()
    return Template(template).safe_substitute(colors(dark), icons=icons, arrow="dark" if dark else "light")


def apply_theme(app: QApplication, choice: str) -> bool:
    """Apply `choice` (system | light | dark) to the whole app; returns whether it is dark."""
    dark = is_dark(choice)
    app.setStyle("Fusion")  # the same look on every platform, so the QSS reads the same
    app.setPalette(_palette(colors(dark)))
    app.setStyleSheet(stylesheet(dark))
    app.setProperty("camelid_dark", dark)
    app.setProperty("camelid_theme_choice", choice)
    return dark


def follow_system(app: QApplication) -> None:
    """Re-apply the theme when the desktop switches light/dark and the user chose "system"."""
    def changed(_scheme: Qt.ColorScheme) -> None:
        if app.property("camelid_theme_choice") == "system":
            apply_theme(app, "system")

    QGuiApplication.styleHints().colorSchemeChanged.connect(changed)


def current_dark() -> bool:
    app = QApplication.instance()
    return bool(app.property("camelid_dark")) if app else False
