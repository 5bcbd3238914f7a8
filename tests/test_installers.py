"""Packaging pieces that can be checked without building: .desktop, icons, library relinking."""

from __future__ import annotations

import configparser
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_desktop_file_is_valid() -> None:
    path = REPO / "installers" / "linux" / "camelid.desktop"
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive in desktop entries
    parser.read_string(path.read_text(encoding="utf-8"))
    entry = parser["Desktop Entry"]
    for key in ("Type", "Name", "Exec", "Icon", "Categories", "Comment"):
        assert entry.get(key), key
    assert entry["Type"] == "Application" and entry["Terminal"] == "false"
    assert entry["Categories"].endswith(";") and entry["Keywords"].endswith(";")
    # The Exec and Icon names must match what the spec and the build script produce.
    assert entry["Exec"].split()[0] == "camelid"
    assert 'name="camelid"' in (REPO / "installers" / "camelid.spec").read_text()
    assert f"{entry['Icon']}.png" in (REPO / "installers" / "linux" / "build.sh").read_text()
    if shutil.which("desktop-file-validate"):
        result = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_icons_are_made_from_the_svg(tmp_path: Path) -> None:
    out = tmp_path / "icons"
    subprocess.run([sys.executable, str(REPO / "installers" / "make_icons.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    assert Image.open(out / "camelid-256.png").size == (256, 256)
    ico = Image.open(out / "camelid.ico")
    assert {(16, 16), (32, 32), (48, 48), (256, 256)} <= set(ico.info["sizes"])
    icns = Image.open(out / "camelid.icns")
    assert icns.size == (1024, 1024)
    # Not a blank square: the artwork has transparent corners and opaque middle.
    png = Image.open(out / "camelid-256.png").convert("RGBA")
    assert png.getpixel((0, 0))[3] == 0 and png.getpixel((128, 128))[3] == 255


def test_relink_turns_identical_versioned_copies_into_links(tmp_path: Path) -> None:
    relink = _load(REPO / "installers" / "relink_libs.py").relink
    payload = b"\x7fELF" + b"x" * 4096
    for name in ("libllama.so", "libllama.so.0", "libllama.so.0.5.0"):
        (tmp_path / name).write_bytes(payload)
    (tmp_path / "libggml.so").write_bytes(b"one")
    (tmp_path / "libggml.so.0").write_bytes(b"two")  # different content: must stay a file
    saved = relink(tmp_path)
    assert saved == 2 * len(payload)
    assert (tmp_path / "libllama.so").is_symlink() and (tmp_path / "libllama.so").read_bytes() == payload
    assert (tmp_path / "libllama.so.0").resolve().name == "libllama.so.0.5.0"
    assert not (tmp_path / "libllama.so.0.5.0").is_symlink()
    assert not (tmp_path / "libggml.so").is_symlink() and not (tmp_path / "libggml.so.0").is_symlink()

