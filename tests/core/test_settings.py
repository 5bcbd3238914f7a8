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


# --- F8: a hostile settings.json never breaks a command, and is never silently overwritten ---------------------------

def _write(text: str | bytes) -> Path:
    path = paths.settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("key, raw", [
    ("threads", "Infinity"), ("threads", "-Infinity"), ("threads", "NaN"), ("threads", "1e400"),
    ("threads", "4.5"), ("threads", "true"), ("threads", "[4]"), ("threads", "99999999999999999999"),
    ("context_length", '{"a": 1}'), ("gpu_layers", '"lots"'), ("flash_attention", "2"),
    ("models_dir", '["x"]'), ("models_dir", '"a\\u0000b"'), ("models_dir", '"' + "x" * 5000 + '"'),
    ("theme", "17"), ("kv_cache_type", "null"),
])
def test_a_bad_value_is_the_default_and_one_sentence_naming_the_key(key: str, raw: str) -> None:
    _write(f'{{"{key}": {raw}, "sampling_preset": "creative"}}')
    settings = Settings()
    setting = next(s for s in SETTINGS if s.key == key)
    assert settings[key] == setting.default
    (problem,) = settings.problems
    assert f"The setting {key} " in problem and f"camelid settings {key} VALUE" in problem
    assert settings["sampling_preset"] == "creative"  # the good values are kept


def test_whole_numbers_from_json_floats_are_taken() -> None:
    _write('{"threads": 4.0, "context_length": 16384}')
    settings = Settings()
    assert settings["threads"] == 4 and settings["context_length"] == 16384 and not settings.problems


DAMAGED_FILES = {
    "deep arrays": "[" * 100_000,
    "deep objects": '{"a":' * 100_000,
    "too large": '{"theme": "dark", "pad": "' + "x" * (2 << 20) + '"}',
    "not UTF-8": b'{"theme": "\xff\xfe dark"}',
    "garbage": bytes(range(256)) * 4,
    "not an object": "[1, 2, 3]",
    "huge integer": '{"threads": ' + "9" * 5000 + "}",
    "truncated": '{"theme": "dark", "thr',
}


@pytest.mark.parametrize("name", sorted(DAMAGED_FILES))
def test_a_damaged_file_means_defaults_and_is_moved_aside_before_a_save(name: str) -> None:
    path = _write(DAMAGED_FILES[name])
    original = path.read_bytes()
    settings = Settings()
    assert settings.to_dict() == {s.key: s.default for s in SETTINGS}
    (problem,) = settings.problems
    assert str(path) in problem and "cannot be used" in problem and len(problem) < 600
    settings.set("theme", "dark")
    kept = settings.save()
    assert kept is not None and kept.name.startswith("settings.json.damaged-")
    assert kept.read_bytes() == original  # the user's file, byte for byte
    assert json.loads(path.read_text())["theme"] == "dark"
    assert Settings().problems == []
    assert settings.save() is None  # once replaced, later saves keep no more copies
    assert len(list(path.parent.glob("settings.json.damaged-*"))) == 1


def test_a_refused_value_is_kept_in_a_copy_unless_it_was_set_again() -> None:
    path = _write('{"threads": Infinity, "theme": "purple"}')
    settings = Settings()
    settings.set("threads", "2")
    kept = settings.save()  # theme's value is dropped: the file is kept first
    assert kept is not None and "purple" in kept.read_text()
    path.write_text('{"threads": Infinity}')
    settings = Settings()
    settings.set("threads", "2")
    assert settings.save() is None  # the only refused value was replaced by the user: nothing is lost


def test_a_folder_in_place_of_the_file() -> None:
    path = paths.settings_path()
    path.mkdir(parents=True)
    (path / "inside").write_text("x")
    settings = Settings()
    assert settings.problems and "could not be read" in settings.problems[0]
    kept = settings.save()
    assert kept is not None and (kept / "inside").read_text() == "x" and path.is_file()


def test_save_into_an_unwritable_place_is_a_sentence(camelid_home: Path) -> None:
    blocker = camelid_home / "not-a-folder"
    blocker.write_text("a file where the settings folder should be")
    settings = Settings(blocker / "settings.json")
    settings.set("theme", "dark")
    with pytest.raises(SettingsError, match="could not be saved") as err:
        settings.save()
    assert "writable" in str(err.value)


def test_paths_ignore_a_damaged_or_hostile_models_dir_setting(camelid_home: Path) -> None:
    for text in ("[" * 100_000, '{"models_dir": Infinity}', '{"models_dir": "a\\u0000b"}', "\xff", "[1]"):
        _write(text)
        assert paths.models_dir() == camelid_home / "models"


@pytest.mark.parametrize("name", ["deep arrays", "garbage", "huge integer"])
def test_every_command_survives_a_damaged_file_and_settings_repairs_it(name: str, starter_model: Path) -> None:
    path = _write(DAMAGED_FILES[name])
    original = path.read_bytes()
    run = [sys.executable, "-m", "app"]

    def camelid(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([*run, *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
        assert "Traceback" not in out.stderr + out.stdout, out.stderr
        return out

    shown = camelid("settings")
    assert shown.returncode == 0 and "note: The settings file" in shown.stdout and "threads" in shown.stdout
    assert camelid("plan", str(starter_model)).returncode == 0
    assert camelid("models").returncode == 0
    fixed = camelid("settings", "theme", "dark", "--json")
    report = json.loads(fixed.stdout)
    assert fixed.returncode == 0 and report["settings"]["theme"] == "dark"
    assert Path(report["kept_copy"]).read_bytes() == original
    assert any("kept as" in p for p in report["problems"])
    assert camelid("settings").stdout.count("note:") == 0


@pytest.mark.parametrize("raw", ["Infinity", "1e400", "NaN"])
def test_settings_command_with_a_non_finite_number(raw: str) -> None:
    _write(f'{{"threads": {raw}}}')
    out = subprocess.run([sys.executable, "-m", "app", "settings"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert "note: The setting threads must be a whole number" in out.stdout
