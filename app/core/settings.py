"""User settings, declared once as data and persisted as JSON.

Each setting is a `Setting` (key, type, default, choices, help). `Settings`
loads the file leniently and never raises: an unknown key is kept, a bad value
falls back to the default and is reported as a sentence naming the key, and a
damaged file (not JSON, too large or too deep, unreadable) means defaults, said
so. It saves atomically, so a crash mid-write never leaves a broken file, and
never silently overwrites what it could not use: the old file is first moved
aside as `settings.json.damaged-<date>`, and `save()` says where. The Hugging Face token is not stored here: it lives in
huggingface_hub's own token file, where the `hf` CLI also finds it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import paths
from app.core.errors import CamelidError
from app.jsonfile import JSONFileError, load_json

#: Longest text value taken from the file (a folder path is the longest real one).
MAX_TEXT = 4096


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
    maximum: int | None = None
    #: None is allowed and means "decide automatically".
    optional: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("models_dir", str, "", "Folder for downloaded models (empty: the default folder)."),
    Setting("threads", int, 0, "CPU threads for the model (0: automatic: the physical cores, leaving one free "
            "while replying on machines with 2-4 cores, and for the prompt too on 2 cores). Fewer threads can "
            "be faster while other apps keep the CPU busy.",
            minimum=0, maximum=4096),
    Setting("gpu_layers", int, None, "Layers to put on the GPU (empty: as many as fit).",
            minimum=0, maximum=100_000, optional=True),
    Setting("context_length", int, 8192, "Longest context Camelid plans for (tokens).", minimum=256,
            maximum=1 << 24),
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
    Setting("model_folders", str, "",
            "Other folders whose GGUF files are listed and used where they are, never copied or deleted "
            f"(several separated by {os.pathsep!r})."),
    Setting("load_last_model", bool, True,
            "Load the last model when the app starts (or on the first message)."),
    Setting("last_model", str, "", "The model loaded last (a path; empty: none yet)."),
    Setting("rpc_workers", str, "",
            "Other machines running `camelid worker` whose memory Camelid may use, as HOST:PORT separated by "
            "commas (empty: this machine only)."),
    Setting("embedding_model", str, "",
            "Embedding model for document search and /v1/embeddings (a library name or .gguf path; empty: "
            "documents are searched by words only until one is chosen)."),
)
BY_KEY = {s.key: s for s in SETTINGS}


def models_dir_problem(value: str) -> str | None:
    """Why ``value`` cannot be the models folder, as a sentence; None when it can (empty: the default).

    A folder that does not exist yet is fine when it can be created, i.e. its nearest existing
    parent is a folder Camelid may write to.
    """
    if not value.strip():
        return None
    folder = Path(value).expanduser()
    if not folder.is_absolute():
        return f"{value} is not a full path. Choose a folder with the Browse button, or type a path from the root."
    if folder.exists():
        if not folder.is_dir():
            return f"{folder} is a file, not a folder. Choose a folder for the models."
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"Camelid may not write into {folder}. Choose a folder you own."
        return None
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"{folder} does not exist and cannot be created here ({parent} is not writable). Choose another folder."
    return None


def validate(setting: Setting, value: Any) -> Any:
    """The value coerced to the setting's type, or SettingsError with a sentence."""
    key = setting.key
    if value is None:
        if setting.optional:
            return None
        raise SettingsError(f"The setting {key} needs a value.", f"{setting.help}")
    expected = setting.type
    if expected is bool:
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            value = value.lower() in ("true", "yes", "on", "1")
        if not isinstance(value, bool):
            raise SettingsError(f"The setting {key} must be true or false, not {_shown(value)}.", setting.help)
    elif expected is int:
        value = _whole_number(setting, value)
        if setting.minimum is not None and value < setting.minimum:
            raise SettingsError(f"The setting {key} must be at least {setting.minimum}.", setting.help)
        if setting.maximum is not None and value > setting.maximum:
            raise SettingsError(f"The setting {key} must be at most {setting.maximum}.", setting.help)
    else:
        if not isinstance(value, str):
            raise SettingsError(f"The setting {key} must be text, not {_shown(value)}.", setting.help)
        if "\0" in value or len(value) > MAX_TEXT:
            raise SettingsError(f"The setting {key} must be text of at most {MAX_TEXT} characters, "
                                "without NUL bytes.", setting.help)
    if setting.choices and value not in setting.choices:
        raise SettingsError(f"The setting {key} must be one of {', '.join(map(str, setting.choices))}.",
                            setting.help)
    return value


def _whole_number(setting: Setting, value: Any) -> int:
    # JSON gives floats (4.0, 1e400, Infinity, NaN) and lists as readily as ints; only
    # a whole, finite number or its digits will do.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and len(value.strip()) <= 20:
        with contextlib.suppress(ValueError):
            value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"The setting {setting.key} must be a whole number, not {_shown(value)}.",
                            setting.help)
    return value


def _shown(value: Any) -> str:
    """A value as a message may quote it: short, one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Settings:
    """The settings file as a typed mapping. Not thread-safe: owned by one thread."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.settings_path()
        self.values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
        #: Sentences about values in the file that were ignored.
        self.problems: list[str] = []
        self._extra: dict[str, Any] = {}
        #: Why the file as a whole could not be used (it is moved aside before the next save).
        self._damage: str | None = None
        #: Keys whose value in the file was refused (the file is kept as a copy unless each is set anew).
        self._refused: set[str] = set()
        self._load()

    def _load(self) -> None:
        try:
            data = load_json(self.path)
        except (FileNotFoundError, NotADirectoryError):  # no file (a file in place of its folder: save says so)
            return
        except JSONFileError as exc:
            self._damaged(exc.reason)
            return
        except OSError as exc:
            self._damaged(f"it could not be read: {exc.strerror or exc}")
            return
        if not isinstance(data, dict):
            self._damaged("it is not a JSON object")
            return
        for key, value in data.items():
            setting = BY_KEY.get(key)
            if setting is None:
                self._extra[key] = value  # written by a newer Camelid: keep it
                continue
            try:
                self.values[key] = validate(setting, value)
            except SettingsError as exc:
                self._refused.add(key)
                default = "auto" if setting.default is None else repr(setting.default)
                self.problems.append(f"{exc.message} The default ({default}) is used until you set it "
                                     f"with `camelid settings {key} VALUE`.")

    def _damaged(self, reason: str) -> None:
        self._damage = reason
        self.problems.append(
            f"The settings file {self.path} cannot be used ({reason}), so the defaults are used. "
            "Change a setting (`camelid settings KEY VALUE`, or Settings in the app) to write a fresh file; "
            "the damaged one is then kept beside it as a copy.")

    def __getitem__(self, key: str) -> Any:
        return self.values[BY_KEY[key].key]

    def set(self, key: str, value: Any) -> None:
        setting = BY_KEY.get(key)
        if setting is None:
            raise SettingsError(f"There is no setting called {key!r}.",
                                f"Known settings: {', '.join(BY_KEY)}.")
        self.values[key] = validate(setting, value)
        self._refused.discard(key)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def save(self) -> Path | None:
        """Write atomically (temp file + rename) so the file is never half-written.

        A file that was damaged, or held values that were refused and not set
        again, is first moved aside; its new path is returned (None otherwise).
        Raises SettingsError when the folder cannot be written.
        """
        folder = self.path.parent
        data = {**self._extra, **self.values}
        kept: Path | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if (self._damage is not None or self._refused) and os.path.lexists(self.path):
                kept = _free_name(self.path, "damaged")
                os.replace(self.path, kept)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".settings-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=2, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            where = f" (the old file is kept as {kept})" if kept else ""
            raise SettingsError(
                f"The settings could not be saved to {self.path}: {exc.strerror or exc}{where}.",
                f"Make {folder} writable (or set CAMELID_HOME to a folder you can write to) and try again.") from exc
        self._damage = None
        self._refused.clear()
        return kept


def _free_name(path: Path, label: str) -> Path:
    """`<name>.<label>-<date>` beside `path`, with a counter if that is taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.{label}-{stamp}")
    n = 2
    while os.path.lexists(candidate):
        candidate = path.with_name(f"{path.name}.{label}-{stamp}-{n}")
        n += 1
    return candidate
