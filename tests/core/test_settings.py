"""Settings: declared once, validated, saved atomically, honoured by paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app import paths
from app.core.settings import SETTINGS, Settings, SettingsError
from tests.fixtures import REPO_ROOT


def test_defaults_when_no_file() -> None:
    settings = Settings()
    assert settings.to_dict() == {s.key: s.default for s in SETTINGS}
    assert settings.problems == []


def test_round_trip_and_coercion() -> None:
    settings = Settings()
    settings.set("context_length", "16384")
    settings.set("flash_attention", "off")
    settings.set("gpu_layers", None)
    settings.save()
    again = Settings()
    assert again["context_length"] == 16384 and again["flash_attention"] is False
    assert again["gpu_layers"] is None


@pytest.mark.parametrize("key, value, fragment", [
    ("kv_cache_type", "q2", "must be one of f16, q8_0, q4_0"),
    ("context_length", 10, "at least 256"),
    ("threads", "many", "whole number"),
    ("theme", None, "needs a value"),
    ("nope", 1, "no setting called"),
])
def test_bad_values_are_refused_with_a_sentence(key: str, value: object, fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        Settings().set(key, value)


def test_damaged_file_falls_back_to_defaults_and_says_so() -> None:
    path = paths.settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"theme": "purple", "threads": 4, "from_the_future": 1}')
    settings = Settings()
    assert settings["theme"] == "system" and settings["threads"] == 4
    assert any("theme must be one of" in p for p in settings.problems)
    settings.save()
    assert json.loads(path.read_text())["from_the_future"] == 1  # unknown keys survive a save
    path.write_text("{broken")
    assert Settings().problems and Settings()["threads"] == 0


def test_models_dir_setting_moves_the_models_folder(tmp_path: Path) -> None:
    settings = Settings()
    settings.set("models_dir", str(tmp_path / "elsewhere"))
    settings.save()
    assert paths.models_dir() == tmp_path / "elsewhere"


def test_settings_cli(camelid_home: Path) -> None:
    repo = REPO_ROOT
    run = [sys.executable, "-m", "app", "settings"]
    out = subprocess.run([*run, "kv_cache_type", "q8_0", "--json"], capture_output=True, text=True, cwd=repo)
    assert out.returncode == 0 and json.loads(out.stdout)["settings"]["kv_cache_type"] == "q8_0"
    bad = subprocess.run([*run, "kv_cache_type", "q3"], capture_output=True, text=True, cwd=repo)
    assert bad.returncode == 2 and "must be one of" in bad.stderr and "Traceback" not in bad.stderr
