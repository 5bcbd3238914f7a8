"""Package-level rules: paths, the Qt-free core, the CLI front door."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import __version__, paths

REPO = Path(__file__).resolve().parent.parent
QT_MODULES = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "superqt", "qtpy")


def test_camelid_home_overrides_every_path(camelid_home: Path) -> None:
    for location in (paths.data_dir(), paths.models_dir(), paths.chats_db_path(), paths.settings_path(),
                     paths.logs_dir(), paths.cache_dir(), paths.downloads_dir()):
        assert camelid_home in location.parents or location == camelid_home, location


def test_models_dir_can_move_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, camelid_home: Path) -> None:
    monkeypatch.setenv("CAMELID_MODELS_DIR", str(tmp_path / "big-disk"))
    assert paths.models_dir() == tmp_path / "big-disk"
    assert paths.chats_db_path().parent == camelid_home


def test_platform_dirs_without_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAMELID_HOME")
    assert "Camelid" in str(paths.data_dir())
    assert paths.models_dir() == paths.data_dir() / "models"


def test_resources_are_found() -> None:
    assert (paths.resources_dir() / "hardware.json").is_file()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_qt() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(_imports(path) & set(QT_MODULES))
        for path in (REPO / "app" / "core").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_all_of_core_loads_no_qt() -> None:
    modules = sorted(p.stem for p in (REPO / "app" / "core").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('app.core.' + m)\n"
        f"print([m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r}])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def camelid(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ}, timeout=120)


def test_version() -> None:
    out = camelid("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"camelid {__version__}"


def test_hw_json_describes_this_machine() -> None:
    out = camelid("hw", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    import psutil

    assert data["ram"]["total_bytes"] == psutil.virtual_memory().total
    assert data["cpu"]["cores_logical"] == psutil.cpu_count()
    assert data["backend"]["compiled"][0] == "CPU"
    assert data["simulated"] is None


def test_hw_readable_for_a_simulated_rtx_4090() -> None:
    out = camelid("hw", "--preset", "rtx-4090")
    assert out.returncode == 0
    assert "NVIDIA GeForce RTX 4090: 24.0 GiB VRAM" in out.stdout
    assert "23.5 GiB" in out.stdout  # the budget: 24 GiB minus the 512 MiB reserve


def test_hw_error_is_a_sentence_not_a_traceback() -> None:
    out = camelid("hw", "--preset", "nope")
    assert out.returncode == 2
    assert "There is no hardware preset called 'nope'" in out.stderr
    assert "Traceback" not in out.stderr
    out = camelid("hw", "--preset", "nope", "--json")
    assert json.loads(out.stdout)["error"]["code"] == "hardware_file"


def test_starter_installs_once(starter_model: Path, camelid_home: Path) -> None:
    env = {**os.environ, "CAMELID_HOME": str(camelid_home)}
    first = subprocess.run([sys.executable, "-m", "app", "starter", "--install-from", str(starter_model), "--json"],
                           capture_output=True, text=True, cwd=REPO, env=env, check=True)
    data = json.loads(first.stdout)
    assert data["installed_now"] and data["bytes"] == starter_model.stat().st_size
    assert Path(data["path"]).parent == camelid_home / "models"
    second = subprocess.run([sys.executable, "-m", "app", "starter", "--install-from", str(starter_model), "--json"],
                            capture_output=True, text=True, cwd=REPO, env=env, check=True)
    assert json.loads(second.stdout)["installed_now"] is False
