"""User settings, declared once as data and persisted as JSON.

Each setting is a `Setting` (key, type, default, choices, help). `Settings`
loads the file leniently (an unknown key is kept, a bad value falls back to
the default and is reported) and saves atomically, so a crash mid-write never
leaves a broken file. The Hugging Face token is not stored here: it lives in
huggingface_hub's own token file, where the `hf` CLI also finds it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import paths
from app.core.errors import CamelidError


class SettingsError(CamelidError):
    code = "settings"


@dataclass(frozen=True)
class Setting:
    key: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: int | None = None
    #: None is allowed and means "decide automatically".
    optional: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("models_dir", str, "", "Folder for downloaded models (empty: the default folder)."),
    Setting("threads", int, 0, "CPU threads for generation (0: physical cores; Apple: performance cores).",
            minimum=0),
    Setting("gpu_layers", int, None, "Layers to put on the GPU (empty: as many as fit).",
            minimum=0, optional=True),
    Setting("context_length", int, 8192, "Longest context Camelid plans for (tokens).", minimum=256),
    Setting("flash_attention", bool, True, "Use flash attention where the backend supports it."),
    Setting("kv_cache_type", str, "f16", "KV cache precision (q8_0 halves it, q4_0 needs flash attention).",
            choices=("f16", "q8_0", "q4_0")),
    Setting("cpu_repack", str, "repack",
            "How CPU layers hold their weights: repack (llama.cpp's faster CPU layout, file read into RAM "
            "once), repack_mmap (same, file also mapped: starts faster but keeps a second copy of the "
            "repacked matrices in RAM) or off (file mapped as is: least RAM, slower CPU kernels).",
            choices=("repack", "repack_mmap", "off")),
    Setting("theme", str, "system", "Light or dark look.", choices=("system", "light", "dark")),
    Setting("use_case", str, "chat", "What the recommender optimises for.",
            choices=("chat", "rag", "reasoning", "code", "json")),
    Setting("sampling_preset", str, "balanced", "Default sampling preset for new chats.",
            choices=("precise", "balanced", "creative")),
    Setting("first_run_done", bool, False, "The first-run wizard has been completed."),
    Setting("offline", bool, False,
            "Work offline: Camelid does not contact the Hugging Face Hub to check for new models."),
    Setting("catalog_daily_check", bool, True,
            "Check the Hub for new models from the watched labs once a day (never when offline)."),
)
BY_KEY = {s.key: s for s in SETTINGS}


def validate(setting: Setting, value: Any) -> Any:
    """The value coerced to the setting's type, or SettingsError with a sentence."""
    if value is None:
        if setting.optional:
            return None
        raise SettingsError(f"The setting {setting.key} needs a value.", f"{setting.help}")
    expected = setting.type
    if expected is bool:
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            value = value.lower() in ("true", "yes", "on", "1")
        if not isinstance(value, bool):
            raise SettingsError(f"The setting {setting.key} must be true or false, not {value!r}.", setting.help)
    elif expected is int:
        if isinstance(value, bool):
            raise SettingsError(f"The setting {setting.key} must be a whole number.", setting.help)
        try:
            value = int(value)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"The setting {setting.key} must be a whole number, not {value!r}.",
                                setting.help) from exc
        if setting.minimum is not None and value < setting.minimum:
            raise SettingsError(f"The setting {setting.key} must be at least {setting.minimum}.", setting.help)
    else:
        value = str(value)
    if setting.choices and value not in setting.choices:
        raise SettingsError(f"The setting {setting.key} must be one of {', '.join(map(str, setting.choices))}.",
                            setting.help)
    return value


class Settings:
    """The settings file as a typed mapping. Not thread-safe: owned by one thread."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.settings_path()
        self.values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
        #: Sentences about values in the file that were ignored.
        self.problems: list[str] = []
        self._extra: dict[str, Any] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.problems.append(f"The settings file {self.path} could not be read ({exc}); defaults are used.")
            return
        if not isinstance(data, dict):
            self.problems.append(f"The settings file {self.path} is not a JSON object; defaults are used.")
            return
        for key, value in data.items():
            setting = BY_KEY.get(key)
            if setting is None:
                self._extra[key] = value  # written by a newer Camelid: keep it
                continue
            try:
                self.values[key] = validate(setting, value)
            except SettingsError as exc:
                self.problems.append(f"{exc.message} The default ({setting.default!r}) is used.")

    def __getitem__(self, key: str) -> Any:
        return self.values[BY_KEY[key].key]

    def set(self, key: str, value: Any) -> None:
        setting = BY_KEY.get(key)
        if setting is None:
            raise SettingsError(f"There is no setting called {key!r}.",
                                f"Known settings: {', '.join(BY_KEY)}.")
        self.values[key] = validate(setting, value)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def save(self) -> None:
        """Write atomically (temp file + rename) so the file is never half-written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {**self._extra, **self.values}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".settings-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
