"""Every on-disk location Camelid uses, in one place.

`CAMELID_HOME` puts everything (data, models, chats, settings, logs, cache)
under one folder; tests point it at a temporary directory. Otherwise the
platform's conventional folders are used (platformdirs).
`CAMELID_MODELS_DIR` moves only the models folder (large files often live on
another disk).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from platformdirs import PlatformDirs

APP_NAME = "Camelid"
STARTER_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _home() -> Path | None:
    value = os.environ.get("CAMELID_HOME")
    return Path(value).expanduser() if value else None


def _dirs() -> PlatformDirs:
    return PlatformDirs(APP_NAME, appauthor=False, ensure_exists=False)


def data_dir() -> Path:
    """Folder for Camelid's own data (models live under it by default)."""
    home = _home()
    return home if home else Path(_dirs().user_data_dir)


def models_dir() -> Path:
    """Folder where downloaded models are stored.

    CAMELID_MODELS_DIR wins, then the `models_dir` setting, then the default.
    """
    value = os.environ.get("CAMELID_MODELS_DIR") or _models_dir_setting()
    if value:
        return Path(value).expanduser()
    return data_dir() / "models"


def _models_dir_setting() -> str | None:
    # Read directly rather than through app.core.settings: paths is the lowest
    # layer and must not import the core.
    try:
        value = json.loads(settings_path().read_text(encoding="utf-8")).get("models_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value.strip() else None


def chats_db_path() -> Path:
    """SQLite file holding conversations."""
    return data_dir() / "chats.sqlite3"


def user_catalog_path() -> Path:
    """JSON file with the models a catalog refresh found on the Hub (merged with the shipped catalog)."""
    return data_dir() / "catalog_user.json"


def config_dir() -> Path:
    home = _home()
    return home if home else Path(_dirs().user_config_dir)


def settings_path() -> Path:
    """JSON file with the user's settings."""
    return config_dir() / "settings.json"


def logs_dir() -> Path:
    home = _home()
    return home / "logs" if home else Path(_dirs().user_log_dir)


def cache_dir() -> Path:
    """Disposable data (metadata caches); safe to delete."""
    home = _home()
    return home / "cache" if home else Path(_dirs().user_cache_dir)


def downloads_dir() -> Path:
    """Partial downloads (.part files and their sidecars) before verification."""
    return models_dir() / ".downloads"


def resources_dir() -> Path:
    """Read-only resources (catalog, presets, icons) shipped with the app."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def starter_model_path() -> Path:
    """Where the starter model lives once installed in the models folder."""
    return models_dir() / STARTER_MODEL_FILE


def bundled_starter_model() -> Path | None:
    """The starter model shipped inside a frozen app, if this is one."""
    candidate = resources_dir() / "models" / STARTER_MODEL_FILE
    return candidate if candidate.is_file() else None


def ensure_dirs() -> None:
    """Create the writable folders; called by entry points, never at import."""
    for path in (data_dir(), models_dir(), config_dir(), logs_dir(), cache_dir()):
        path.mkdir(parents=True, exist_ok=True)
