"""Every on-disk location Camelid uses, in one place.

`CAMELID_HOME` puts everything (data, models, chats, settings, logs, cache)
under one folder; tests point it at a temporary directory. Otherwise the
platform's conventional folders are used (platformdirs).
`CAMELID_MODELS_DIR` moves only the models folder (large files often live on
another disk).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from platformdirs import PlatformDirs

from app.jsonfile import load_json

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
        try:
            return Path(value).expanduser()
        except RuntimeError:  # "~someone" for a user that does not exist: taken literally
            return Path(value)
    return data_dir() / "models"


def _models_dir_setting() -> str | None:
    # Read directly rather than through app.core.settings: paths is the lowest
    # layer and must not import the core. Every command comes here, so a damaged
    # file (reported by `Settings`) must only mean "no setting", never an error.
    try:
        data = load_json(settings_path())
    except (OSError, ValueError):
        return None
    value = data.get("models_dir") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value.strip() or "\0" in value or len(value) > 4096:
        return None
    return value


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


def ensure_dirs() -> list[str]:
    """Create the writable folders; called by entry points, never at import.

    Never raises: read-only storage still allows read-only use (listing models,
    planning, chatting without saving), so each folder that cannot be made is a
    sentence in the list returned, for the caller to show.
    """
    problems = []
    for path in dict.fromkeys((data_dir(), models_dir(), config_dir(), logs_dir(), cache_dir())):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problems.append(f"The folder {path} could not be created ({exc.strerror or exc}): what Camelid "
                            "would keep there is not saved. Make it writable, or set CAMELID_HOME to a "
                            "folder you can write to.")
    return problems
