"""Turn duplicate llama.cpp libraries in a built bundle back into symlinks.

Wheels cannot hold symlinks, so llama-cpp-python installs libllama.so,
libllama.so.0 and libllama.so.0.5.0 as three identical files, and PyInstaller
copies all three. This keeps the fully versioned file and makes the shorter
names relative links to it, saving two thirds of the libraries' size.
Linux and macOS only (Windows DLLs carry no versioned names).
Usage: python installers/relink_libs.py BUNDLE_LLAMA_LIB_DIR
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import defaultdict
from pathlib import Path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def relink(lib_dir: Path) -> int:
    """Replace identical versioned copies by links; returns the bytes saved."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in lib_dir.iterdir():
        match = re.match(r"(lib.+?\.(?:so|dylib))(\.[\d.]+)?$", path.name)
        if match and path.is_file() and not path.is_symlink():
            groups[match.group(1)].append(path)
    saved = 0
    for files in groups.values():
        keep = max(files, key=lambda p: len(p.name))
        digest = _digest(keep)
        for other in files:
            if other == keep or _digest(other) != digest:
                continue
            saved += other.stat().st_size
            other.unlink()
            other.symlink_to(keep.name)
    return saved


def main() -> int:
    lib_dir = Path(sys.argv[1])
    saved = relink(lib_dir)
    print(f"relinked duplicate libraries in {lib_dir}: {saved / 2**20:.1f} MiB saved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
