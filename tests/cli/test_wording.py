"""CLI sentences in the user's words (finding 37, CLI parts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from app.core.http_policy import unreachable_reason
from tests.fixtures.loopback_hub import LoopbackHub

REPO = "org/Tiny-GGUF"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sampling_problems_name_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "chat", "--top-p", "2", "--repeat-penalty", "0", "--prompt", "hi")
    assert code == 2
    assert "--top-p must be above 0 and at most 1" in err and "--repeat-penalty must be" in err
    assert "top_p" not in err and "repeat_penalty" not in err and "Invalid sampling settings" not in err


@pytest.mark.parametrize(("argv", "said"), [
    (["chat", "--max-tokens", "0"], "argument --max-tokens: must be at least 1 (got 0)"),
    (["plan", "x.gguf", "--ctx-cap", "0"], "argument --ctx-cap: must be at least 256 (got 0)"),
    (["recommend", "--min-speed", "-3"], "argument --min-speed: must be at least 0 (got -3)"),
    (["recommend", "--min-speed", "nan"], "argument --min-speed: must be at least 0 (got nan)"),
    (["search", "--limit", "many"], "argument --limit: 'many' is not a whole number"),
])
def test_impossible_numbers_are_refused_by_name(argv: list[str], said: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and said in capsys.readouterr().err


def test_an_empty_prompt_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "chat", "--prompt", "  ")
    assert code == 2 and err.startswith("camelid: The prompt is empty.")


def test_presets_ignore_capitals(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "hw", "--preset", "RTX-4090")
    assert code == 0, err
    assert "rtx-4090" in out


def test_unreachable_says_why_in_words() -> None:
    import httpx2

    assert "could not be looked up" in unreachable_reason(
        httpx2.ConnectError("[Errno -2] Name or service not known"))
    assert "refused" in unreachable_reason(httpx2.ConnectError("[Errno 111] Connection refused"))
    assert "in time" in unreachable_reason(httpx2.ConnectTimeout("timed out"))
    assert unreachable_reason(httpx2.ConnectError("")) == "no connection could be made"


def test_unreachable_hub_sentence_has_no_class_name(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for argv in (["search", "qwen"], ["files", "org/Repo-GGUF"]):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and err.startswith("camelid: Could not reach http://127.0.0.1:9:")
        assert "Error)" not in err and "ConnectError" not in err


def test_a_second_download_says_already_downloaded(loopback_hub: LoopbackHub,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    loopback_hub.add_repo(REPO)
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", b"GGUF" + bytes(range(256)) * 400)
    code, out, err = _run(capsys, "download", f"{REPO}:Q4_K_M", "--no-fit-check")
    assert code == 0, err
    assert out.startswith("Saved ") and "verified" in out
    code, out, err = _run(capsys, "download", f"{REPO}:Q4_K_M", "--no-fit-check")
    assert code == 0, err
    assert out.startswith("Already downloaded: ") and "camelid chat Tiny-Q4_K_M" in out


def test_plan_names_the_model_by_its_file(starter_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "plan", str(starter_model))
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"{starter_model.name} (llama, Q4_1, ")
    assert "Smollm2 135M 8k" not in out
