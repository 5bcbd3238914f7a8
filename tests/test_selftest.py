"""`camelid --self-test`: the check the frozen app runs after every build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _self_test(home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAMELID_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, "-m", "app", "--self-test"], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def test_self_test_loads_generates_and_starts_the_gui(starter_model: Path, camelid_home: Path) -> None:
    (camelid_home / "models").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(starter_model, camelid_home / "models" / starter_model.name)
    settings_before = sorted(p.name for p in camelid_home.iterdir())
    out = _self_test(camelid_home)
    assert out.returncode == 0, out.stdout + out.stderr
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("Camelid ") and "self-test OK" in line
    assert "SmolLM2-135M-Instruct.Q4_1.gguf loaded on CPU" in line and "GUI started offscreen" in line
    assert "API server answered" in line
    # It works in a temporary home: the user's folder gains nothing.
    assert sorted(p.name for p in camelid_home.iterdir()) == settings_before


def test_self_test_without_the_model_fails_with_one_line(camelid_home: Path) -> None:
    out = _self_test(camelid_home)
    assert out.returncode == 1
    assert "self-test FAILED while finding the starter model" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
