"""The frozen Linux bundle: its size and its cold start, against the same code run from the venv.

Needs `make dist` first (it measures build/dist/Camelid as built).
Run: .venv/bin/python bench/bench_dist.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import machine_line, summary, table, update_section  # noqa: E402

BUNDLE = ROOT / "build" / "dist" / "Camelid"
ROUNDS = 5


def tree_bytes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


STARTER = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def timed(cmd: list[str]) -> float:
    with tempfile.TemporaryDirectory() as home:
        # The venv has no bundled model: give it the same file, installed as `make run` does.
        (Path(home) / "models").mkdir()
        (Path(home) / "models" / STARTER.name).symlink_to(STARTER)
        env = {**os.environ, "CAMELID_HOME": home, "QT_QPA_PLATFORM": "offscreen"}
        started = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=ROOT, timeout=300)
        return time.perf_counter() - started


def main() -> int:
    exe = BUNDLE / "camelid"
    if not exe.is_file():
        print("No bundle at build/dist/Camelid: run `make dist` first.")
        return 1
    total = tree_bytes(BUNDLE)
    model = sum(p.stat().st_size for p in (BUNDLE / "_internal" / "resources" / "models").glob("*.gguf"))
    tarballs = sorted((ROOT / "dist").glob("Camelid-*-linux-*.tar.gz"))
    shot = str(Path(tempfile.gettempdir()) / "camelid-bench-shot.png")
    cases = {
        "`--version`": (["--version"]),
        "first window (`gui --screenshot`, render, exit)": (["gui", "--screenshot", shot, "--page", "hardware"]),
        "`--self-test` (load model, 8 tokens, GUI)": (["--self-test"]),
    }
    rows = []
    for label, args in cases.items():
        frozen, venv = [], []
        for _ in range(ROUNDS):  # alternate so both see the same machine load
            frozen.append(timed([str(exe), *args]))
            venv.append(timed([sys.executable, "-m", "app", *args]))
        f, fs = summary(frozen)
        v, vs = summary(venv)
        rows.append((label, f"{f:.2f} s (±{fs / 2:.2f})", f"{v:.2f} s (±{vs / 2:.2f})", f"{f / v:.2f}"))
    size_rows = [("bundle on disk (build/dist/Camelid)", f"{total / 2**20:.0f} MiB"),
                 ("of which the starter model", f"{model / 2**20:.0f} MiB")]
    if tarballs:
        size_rows.append((f"download ({tarballs[-1].name})", f"{tarballs[-1].stat().st_size / 2**20:.0f} MiB"))
    body = (f"`bench/bench_dist.py` after `make dist`, {ROUNDS} alternating rounds, cold processes. "
            f"{machine_line()}\n\n"
            + table(("what", "size"), size_rows)
            + "\n\n"
            + table(("command", "frozen bundle", "same code from the venv", "ratio"), rows)
            + "\n\nThe bundle is one folder (Qt dislikes one-file); llama.cpp's duplicated "
              "versioned libraries are relinked, unused Qt modules, Pillow and hf_xet are left out.")
    print(body)
    update_section("dist", "Frozen app (Linux bundle)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
