"""The first-run wizard's core decisions: when it shows, the context choices, where the starter is."""

from __future__ import annotations

from pathlib import Path

from app import paths
from app.core.models import first_run
from app.core.models.library import LibraryModel
from app.core.settings import Settings


def test_should_show_wizard_follows_the_setting_and_never_in_demo() -> None:
    settings = Settings()
    assert settings["first_run_done"] is False
    assert first_run.should_show_wizard(settings)
    assert not first_run.should_show_wizard(settings, demo=True)
    settings.set("first_run_done", True)
    assert not first_run.should_show_wizard(settings)


def test_context_choices_map_the_setting_to_the_nearest() -> None:
    assert [c.n_ctx for c in first_run.CONTEXT_CHOICES] == [4096, 8192, 32768]
    assert first_run.context_choice_for(8192).key == "normal"
    assert first_run.context_choice_for(2048).key == "short"
    assert first_run.context_choice_for(20000).key == "long"


def _model(path: Path) -> LibraryModel:
    return LibraryModel(name=path.stem, path=path, files=(path,), size_bytes=path.stat().st_size,
                        source="hf-cache")


def test_find_starter_prefers_the_models_folder_then_the_library(tmp_path: Path) -> None:
    elsewhere = tmp_path / "hf" / paths.STARTER_MODEL_FILE
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"GGUF")
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF")
    assert first_run.find_starter() is None
    assert first_run.find_starter([_model(other)]) is None
    assert first_run.find_starter([_model(other), _model(elsewhere)]) == elsewhere

    installed = paths.starter_model_path()
    installed.parent.mkdir(parents=True, exist_ok=True)
    installed.write_bytes(b"GGUF")
    assert first_run.find_starter([_model(elsewhere)]) == installed
    assert first_run.locate_starter() == installed


def test_locate_starter_is_none_on_an_empty_machine(tmp_path: Path, monkeypatch) -> None:
    # Nothing in this user's Hugging Face cache or LM Studio folders either.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert first_run.locate_starter() is None
